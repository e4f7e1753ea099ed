"""android/run_executorch.sh, run_mnn.sh and run_onnxruntime.sh: their output contract on Linux
against stand-in runner binaries (shell scripts that print what llama_main, llm_demo and
model_benchmark print, per their documentation), parsed by device_runner/engines.py; and the
phone path (device_runner/phone_runtime.py) for those runtimes through tests/fakeadbd: push the
artifact folder and the runner, run, parse; the sentences for a missing binary, a missing
artifact and a constrained request."""

from __future__ import annotations

import os
import subprocess
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_runner import engines

ROOT = Path(__file__).resolve().parents[1]

# llama_main (ExecuTorch's llama runner, gflags): echoes the prompt, streams the text, then its
# stats as `PyTorchObserver {json}`; ET_LOG lines go to stderr.
FAKE_LLAMA_MAIN = r"""#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
prompt=
while [ $# -gt 0 ]; do
  case "$1" in --prompt) prompt=$2; shift ;; esac; shift
done
echo "I 00:00:00.010 executorch:main.cpp:80] Resetting threadpool" >&2
sleep 0.2
printf '%s' "$prompt"
printf ' 47\n'
echo 'PyTorchObserver {"prompt_tokens":10,"generated_tokens":3,"model_load_start_ms":1000,"model_load_end_ms":1200,"inference_start_ms":1300,"prompt_eval_end_ms":1350,"first_token_ms":1360,"inference_end_ms":1400,"aggregate_sampling_time_ms":2,"SCALING_FACTOR_UNITS_PER_SECOND":1000}'
"""

# MNN's llm_demo CONFIG PROMPT_FILE MAX_TOKENS: prints the config path, AUTOTIME of the load, the
# prompt file, the streamed text, then its counters between #### lines.
FAKE_LLM_DEMO = r"""#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
cat "$1" >> "$(dirname "$0")/configs.txt"
echo "config path is $1"
echo "main, 121, cost time: 250.000000 ms"
echo "Prepare for tuning opt Begin"
echo "Prepare for tuning opt End"
echo "prompt file is $2"
sleep 0.2
printf ' 47'
printf '\n#################################\n'
echo "prompt tokens num = 10"
echo "decode tokens num = 2"
echo " vision time = 0.00 s"
echo "prefill time = 0.05 s"
echo " decode time = 0.04 s"
echo " sample time = 0.00 s"
echo "prefill speed = 200.00 tok/s"
echo " decode speed = 50.00 tok/s"
echo "##################################"
"""

# onnxruntime-genai's benchmark/c model_benchmark: its report (no generated text).
FAKE_MODEL_BENCHMARK = r"""#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
sleep 0.2
printf 'Batch size: 1, prompt tokens: 10, tokens to generate: 8\n'
printf 'Prompt processing (time to first token):\n\tavg (us):       50000.00\n\tavg (tokens/s): 200.00\n'
printf '\tp50 (us):       50000.00\n\tstddev (us):    0.00\n\tn:              1 * 10 token(s)\n'
printf 'Token generation:\n\tavg (us):       20000.00\n\tavg (tokens/s): 50.00\n\tn:              7 * 1 token(s)\n'
printf 'Token sampling:\n\tavg (us):       100.00\n'
printf 'E2E generation (entire generation loop):\n\tavg (ms):       190.00\n'
printf 'Peak working set size (bytes): 104857600\n'
"""

RUNNERS = {  # runtime -> (script, binary, stand-in, artifact files)
    "executorch": ("run_executorch.sh", "llama_main", FAKE_LLAMA_MAIN, {"model.pte": b"PTE", "tokenizer.json": b"{}"}),
    "mnn": ("run_mnn.sh", "llm_demo", FAKE_LLM_DEMO,
            {"config.json": b'{\n  "llm_model": "llm.mnn",\n  "llm_weight": "llm.mnn.weight"\n}\n',
             "llm.mnn": b"MNN", "llm.mnn.weight": b"W" * 1000}),
    "onnxruntime": ("run_onnxruntime.sh", "model_benchmark", FAKE_MODEL_BENCHMARK,
                    {"genai_config.json": b'{"model": {"context_length": 2048}}', "model.onnx": b"ONNX"}),
}
SHELLS = {"sh": ["sh"], "mksh": ["mksh"], "busybox": ["busybox", "sh"]}


def fake_bin(folder: Path, runtime: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _, binary, text, _ = RUNNERS[runtime]
    (folder / binary).write_text(text)
    os.chmod(folder / binary, 0o755)
    return folder


def fake_artifact(folder: Path, runtime: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in RUNNERS[runtime][3].items():
        (folder / name).write_bytes(data)
    return folder


def _case(folder: Path, grammar: str = "-") -> Path:
    folder.mkdir(parents=True)
    (folder / "0000.prompt").write_text("Q: the volume? A:")
    (folder / "0001.prompt").write_text("Q: the light? A:")
    (folder / "requests.tsv").write_text(f"0000\t8\t0.0\t0\t{grammar}\t-\t18\n0001\t8\t0.7\t0\t-\t-\t18\n")
    return folder


def _run_script(runtime: str, shell: str, bin_dir: Path, model: Path, case: Path) -> subprocess.CompletedProcess:
    argv = SHELLS[shell]
    return subprocess.run([*argv, str(ROOT / "android" / RUNNERS[runtime][0]), "--bin", str(bin_dir), "--model",
                           str(model), "--case", str(case), "--threads", "2"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", list(SHELLS))
@pytest.mark.parametrize("runtime", list(RUNNERS))
def test_script_output_contract_on_linux(tmp_path: Path, runtime: str, shell: str) -> None:
    if subprocess.run(["which", SHELLS[shell][0]], capture_output=True).returncode != 0:
        pytest.skip(f"no {SHELLS[shell][0]}")
    bin_dir = fake_bin(tmp_path / "bin", runtime)
    model = fake_artifact(tmp_path / "model dir", runtime)
    case = _case(tmp_path / "case 'quoted'")
    out = _run_script(runtime, shell, bin_dir, model, case)
    assert out.returncode == 0, out.stdout + out.stderr
    parsed = engines.parse_case_output(out.stdout)
    assert parsed.done and parsed.errors == []
    assert [(r.kind, r.id) for r in parsed.records] == [("request", "0000"), ("request", "0001")]
    assert all(r.rc == 0 and r.rss_kb and r.rss_kb > 0 for r in parsed.records)  # VmHWM polled from /proc
    calls = (bin_dir / "calls.txt").read_text().splitlines()
    assert len(calls) == 2
    text, reason, t = engines.engine_completion(runtime, parsed.records[0], "Q: the volume? A:", 8)
    if runtime == "executorch":
        assert (text, reason) == (" 47", "stop")
        assert t.load_ms == 200 and t.ttft_ms == 60 and t.prefill_tps == 200 and t.decode_tps == 50
        assert t.generated_tokens == 3 and t.peak_rss_mb > 0
        assert "--seq_len 18" in calls[0] and "--temperature 0.0" in calls[0] and "--cpu_threads 2" in calls[0]
        assert "--prompt Q: the volume? A:" in calls[0] and str(model / "model.pte") in calls[0]
    elif runtime == "mnn":
        assert (text, reason) == (" 47", "stop")
        assert t.load_ms == 250 and t.ttft_ms == 50 and t.prefill_tps == 200 and t.decode_tps == 50
        assert t.prompt_tokens == 10 and t.generated_tokens == 3
        assert calls[0].endswith(" 8")  # llm_demo CONFIG PROMPT_FILE MAX_TOKENS
        configs = (bin_dir / "configs.txt").read_text()
        assert f'"base_dir": "{model}/"' in configs and '"thread_num": 2' in configs
        assert '"sampler_type": "greedy"' in configs and '"temperature": 0.7' in configs  # per request
        assert '"llm_model": "llm.mnn"' in configs  # the artifact's own keys stay
    else:
        assert (text, reason) == ("", "length")  # model_benchmark prints no text; it generates all 8
        assert t.ttft_ms == 50 and t.prefill_tps == 200 and t.decode_tps == 50 and t.peak_rss_mb == 100.0
        assert "-g 8 -r 1 -w 0" in calls[0] and "--prompt_file" in calls[0]
        assert any("no generated text" in n for n in parsed.notes)
    if parsed.records[0].wall_ms is not None:  # date with %N (not busybox's): the script's wall clock
        assert t.total_ms == parsed.records[0].wall_ms and 150 <= t.total_ms < 30000
    else:
        assert t.total_ms == {"executorch": 100, "mnn": 90, "onnxruntime": 190}[runtime]  # the engine's own


@pytest.mark.parametrize("runtime", list(RUNNERS))
def test_script_refuses_a_grammar_and_names_a_missing_binary(tmp_path: Path, runtime: str) -> None:
    bin_dir = fake_bin(tmp_path / "bin", runtime)
    model = fake_artifact(tmp_path / "model", runtime)
    out = _run_script(runtime, "sh", bin_dir, model, _case(tmp_path / "case", grammar="g1.gbnf"))
    assert out.returncode == 4
    [error] = engines.parse_case_output(out.stdout).errors
    assert "constrained decoding" in error and "run_llamacpp.sh" in error
    assert not (bin_dir / "calls.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run_script(runtime, "sh", empty, model, _case(tmp_path / "case2"))
    assert out.returncode == 3
    assert f"no {RUNNERS[runtime][1]} in {empty}" in out.stdout and "android/build.sh" in out.stdout


def test_executorch_text_strips_echo_and_logs() -> None:
    out = "Hello I 00:00:01.000 x\nI 00:00:01.500 executorch:runner.cpp:1] log\n world\nPyTorchObserver {}\n"
    assert engines.executorch_text(out, "Hello\n") == " I 00:00:01.000 x\n world"
    assert engines.mnn_text("config path is c\nprompt file is p\nabc\n#################################\nx") == "abc"


# ---- phones: through tests/fakeadbd ---------------------------------------------------------

from fakeadbd import FakeAdbd, unavailable_reason  # noqa: E402

needs_fakeadbd = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")
    from device_runner.adb import load_signer

    path = tmp_path_factory.mktemp("home") / ".android" / "adbkey"
    load_signer(path)
    return path


@pytest.fixture
def phone(tmp_path: Path, key: Path) -> Iterator[FakeAdbd]:
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason() or "")
    with FakeAdbd(root=tmp_path / "device") as dev:
        dev.keystore.add(Path(f"{key}.pub").read_text())
        yield dev


def _main(dev: FakeAdbd, key: Path, out: Path, *extra: str) -> int:
    from device_runner.__main__ import main

    return main(["--device", dev.serial, "--adb-key", str(key), "--data", "sample", "--sample-users", "1",
                 "--sample-sessions", "3", "--out", str(out), "--no-progress", *extra])


@needs_fakeadbd
def test_missing_binary_missing_artifact_and_refusal_are_sentences(phone: FakeAdbd, key: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # artifacts/ is looked up here
    assert _main(phone, key, tmp_path / "o1", "--strategy", "incremental", "--runtime", "mnn") == 2
    err = capsys.readouterr().err
    assert "No mnn artifact for model 'gemma-3-270m'" in err and "make export MODEL=gemma-3-270m FORMAT=mnn" in err
    fake_artifact(tmp_path / "artifacts" / "gemma-3-270m" / "executorch", "executorch")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(phone, key, tmp_path / "o2", "--strategy", "incremental", "--runtime", "executorch",
                 "--runner-bin", str(empty)) == 2
    err = capsys.readouterr().err
    assert f"No ew_et (ExecuTorch's runner for --runtime executorch) for arm64-v8a in {empty}" in err
    assert "android/build.sh --abi arm64-v8a --only executorch" in err
    # Every phone row now applies choices itself; the refusal, on a row that could not (the stock runners'):
    from dataclasses import replace

    from device_runner import phone_runtime

    monkeypatch.setitem(phone_runtime.RUNNERS, "executorch",
                        replace(phone_runtime.RUNNERS["executorch"], constrained=False, host_tokens=False))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ew_et").write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls.txt"\n')
    (bin_dir / "ew_et").chmod(0o755)
    assert _main(phone, key, tmp_path / "o3", "--strategy", "incremental", "--runtime", "executorch",
                 "--runner-bin", str(bin_dir)) == 2
    err = capsys.readouterr().err
    assert "needs constrained decoding" in err and "--runtime llamacpp" in err and "--device host" in err
    assert not (bin_dir / "calls.txt").exists()
    assert not phone.host_path("/data/local/tmp/edgewise/models").exists()  # nothing large was pushed


@pytest.mark.skipif(shutil.which("mksh") is None, reason="needs mksh (Android's shell)")
@pytest.mark.parametrize("script", ["common.sh"])
def test_wall_time_survives_mksh_32_bit_arithmetic(script):
    """Milliseconds since the epoch overflow mksh's 32-bit integers; the scripts must not use them."""
    text = (ROOT / "android" / script).read_text()
    functions = "\n".join(
        text[text.index(f"{name}() {{"): text.index("\n}\n", text.index(f"{name}() {{")) + 3]
        for name in ("now_ms", "wall_ms")
    )
    done = subprocess.run(["mksh", "-c", functions + '\na=$(now_ms); sleep 0.2; b=$(now_ms); wall_ms "$a" "$b"'],
                          capture_output=True, text=True, timeout=30)
    value = int(done.stdout.split()[-1])
    assert done.stdout.startswith("EW_WALL_MS") and 150 <= value < 5000, done.stdout
