"""Our ExecuTorch runner, ew_et (android/runners/executorch, run by android/run_ew_et.sh): one
process per case, the .pte and its KV cache kept across requests, choices by the host's prefix
rule, prompts tokenized on the host (device_runner/et_tokens.py).

- The script's record stream and its one sentence for a runner that dies, under sh, mksh and
  busybox, against a stand-in ew_et (seconds).
- Through the loopback phone (tests/fakeadbd) with the host-built runner and a tiny float32 .pte
  (tiny-llama, exported once per session, or artifacts/tiny-llama/executorch when it is there; and
  tiny-gemma3, marked slow):
  choices requests, one of them adversarial (the free answer leaves the choices), free text, chat
  messages and a JSON schema (decoded free on the phone: rows say so), each equal to the host
  `executorch` runtime's answer to the same request, with the same prompt tokens and the same
  KV-cache reuse; and a whole `incremental` case through the command line, phone against host.
- A runner that crashes mid-case, and the real ew_et without its ExecuTorch libraries: one
  sentence naming the engine and the request; the finished rows stay and `--resume` finishes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner_cases as cases
from device_runner import engines

ROOT = cases.ROOT
SCRIPT = ROOT / "android" / "run_ew_et.sh"
CRASH_LOG = "executorch: oops"
FAKE_EW_ET = cases.fake_runner("ew_et", cases.STAT + " constraint=choices finish=stop", CRASH_LOG)


def _case(folder: Path) -> Path:
    files = {}
    for rid in ("0000", "0001"):
        files[f"{rid}.prompt"] = "Q: the volume?\nA:"
        files[f"{rid}.tokens"] = "1 2 3"
    return cases.write_case(folder, {**files, "g1.choices": cases.CHOICES_CASE["g1.choices"],
                                     "requests.tsv": cases.CHOICES_CASE["requests.tsv"]})


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.pte").write_bytes(b"\0" * 64)
    (folder / "ew_et.vocab").write_text("ew_et-vocab 1 0\n:\n")
    return folder


def _script(shell: str, bin_dir: Path, model: Path, case: Path, **env: str):
    return cases.run_script(SCRIPT, shell, bin_dir, model, case, **env)


@pytest.mark.parametrize("shell", list(cases.SHELLS))
def test_script_passes_records_and_names_the_request_a_crash_stopped(tmp_path: Path, shell: str) -> None:
    cases.need_shell(shell)
    bin_dir = cases.install_fake(tmp_path / "bin", "ew_et", FAKE_EW_ET)
    model = _model_folder(tmp_path / "model 'dir'")
    case = _case(tmp_path / "case 'quoted'")
    parsed = cases.check_records(_script(shell, bin_dir, model, case), "ew_et")
    text, reason, t = engines.ew_llama_completion(parsed.records[0], "ew_et")
    assert (text, reason) == (" 47", "stop") and parsed.records[0].stats["constraint"] == "choices"
    assert t.ttft_ms == 105 and t.prefill_tps == 200 and t.decode_tps == 50 and t.peak_rss_mb == 300.0
    assert f"--model {model}/model.pte --case {case} --vocab {model}/ew_et.vocab --threads 2" in \
        (bin_dir / "calls.txt").read_text()
    cases.check_crash(_script(shell, bin_dir, model, case, CRASH_AT="0001"), "ew_et", CRASH_LOG)
    (model / "ew_et.vocab").unlink()
    out = _script(shell, bin_dir, model, case)
    assert out.returncode == 3 and "EW_ERROR no ew_et.vocab in" in out.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _script(shell, empty, model, case)
    assert out.returncode == 3 and f"EW_ERROR no ew_et in {empty}" in out.stdout


# ---- through the loopback phone --------------------------------------------------------------

pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from fakeadbd import FakeAdbd, unavailable_reason  # noqa: E402

import test_device_runner as phone_tests  # noqa: E402

HOST_BIN = phone_tests.HOST_BIN
key = phone_tests.key  # the workstation's adb key (module fixture)
_rows, _trust = phone_tests._rows, phone_tests._trust


def _executorch_env_reason() -> str | None:
    from export import env as export_env

    if not export_env.env_ready("executorch"):
        return ("no executorch toolchain env (`make export MODEL=tiny-llama FORMAT=executorch` creates it; "
                "ew_et links its wheel and the host tokenizes there)")
    if not (HOST_BIN / "ew_et").is_file():
        return "no host ew_et: `make android-host` (android/build.sh --abi host --only executorch)"
    return unavailable_reason()


needs_ew_et = pytest.mark.skipif(_executorch_env_reason() is not None, reason=_executorch_env_reason() or "")


def _install_system_libs(dev: FakeAdbd, binary: Path) -> None:
    """The C/C++ runtime `binary` needs, at the same paths in the chroot; not ExecuTorch's own
    libraries, which device_runner pushes beside the binary (android/build/host/lib)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if not path.startswith("/") or "executorch" in Path(path).name:
            continue
        target = dev.sandbox.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(Path(path).resolve(), target)


_EXPORTS: dict[str, Path] = {}


def _export(model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`model` as a float32 .pte (exact parity with its checkpoint): the repo's export if made,
    else exported once per session here (tiny-llama about 90 s on 2 cores, tiny-gemma3 about 4 min)."""
    from export.manifest import verify

    made = ROOT / "artifacts" / model / "executorch"
    if (made / "model.pte").is_file() and verify(made) == []:
        return made
    if model not in _EXPORTS:
        from export.__main__ import main

        out = tmp_path_factory.mktemp(f"pte-{model}")
        assert main(["--model", model, "--format", "executorch", "--out", str(out)]) == 0
        _EXPORTS[model] = out / model / "executorch"
    return _EXPORTS[model]


@pytest.fixture(scope="module")
def tiny_pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export("tiny-llama", tmp_path_factory)


@pytest.fixture(scope="module")
def et_phone(tmp_path_factory: pytest.TempPathFactory, key: Path) -> Iterator[FakeAdbd]:
    with FakeAdbd(root=tmp_path_factory.mktemp("etphone") / "device") as dev:
        _trust(dev, key)
        _install_system_libs(dev, HOST_BIN / "ew_et")
        yield dev


@needs_ew_et
@pytest.mark.parametrize("model", ["tiny-llama", pytest.param("tiny-gemma3", marks=pytest.mark.slow)])
def test_requests_on_the_phone_equal_the_host_executorch_runtime(et_phone: FakeAdbd, key: Path, model: str,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Choices (one adversarial: the free answer is none of them), free text, chat messages and a
    JSON schema through PhoneRuntime (pushed, run by ew_et on the loopback phone, parsed), against
    the host runtime's answers to the same requests: the same texts, prompt tokens and reuse.
    tiny-gemma3: a sliding window of 16 and a prefill chunk of 15 (its ring cache, masked
    attention and _reusable's restrictions)."""
    from device_runner.facts import device_facts
    from device_runner.phone import Phone, PhoneOptions
    from device_runner.phone_runtime import PhoneRuntime
    from device_runner.run import open_runtime
    from runtimes import GenerationSettings, Request

    prompt = "The TV volume is" + (" quite loud in the evening, when the family watches the news" if model != "tiny-llama"
                                   else "")  # past Gemma's window of 16
    schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
              "additionalProperties": False}
    requests = [
        Request(prompt=prompt, settings=GenerationSettings(max_tokens=4)),  # the free answer
        Request(prompt=prompt, choices=(" 12", " 15", " none", " 1"), settings=GenerationSettings(max_tokens=8)),
        Request(prompt=prompt + " set to", choices=(" 7", " 70", " seventy"), settings=GenerationSettings(max_tokens=8)),
        Request(prompt="When it rains", choices=(" on", " off"), settings=GenerationSettings(max_tokens=4)),
        Request(messages=({"role": "user", "content": "lights on"},), settings=GenerationSettings(max_tokens=4)),
        Request(prompt="Lights:", json_schema=schema, settings=GenerationSettings(max_tokens=12)),
        Request(prompt="Lights:", settings=GenerationSettings(max_tokens=12)),  # what the schema request decodes
    ]
    p = Phone(et_phone.serial, PhoneOptions(transport_options={"key": key}, runner_bin=HOST_BIN))
    p.connect()
    try:
        facts = device_facts(p.t)
        facts["name"] = et_phone.serial
        pte = _export(model, tmp_path_factory)
        rt = PhoneRuntime(p, facts, pte, 2048, 2, "executorch")
        rt.load()
        phone = rt.generate(requests)
        details = rt.info().details
    finally:
        p.close()
    assert details["schema_decoding"] == "free" and details["decoding"].startswith("greedy-constrained")
    host_rt = open_runtime("executorch", n_threads=2)
    try:
        host_rt.load(str(pte))
        host = host_rt.generate(requests)
    finally:
        host_rt.close()
    free, volume, adversarial, rain, chat, structured, unstructured = phone
    assert free.text not in (" 12", " 15", " none", " 1")  # free decoding leaves the choices: they overrule it
    assert volume.text in (" 12", " 15", " none", " 1") and volume.finish_reason == "stop"
    assert adversarial.text in (" 7", " 70", " seventy") and rain.text in (" on", " off")
    assert structured.text == unstructured.text  # the phone decodes a schema request free
    assert volume.timings.prompt_tokens_evaluated < volume.timings.prompt_tokens  # the cache stayed
    assert volume.timings.peak_rss_mb and volume.timings.ttft_ms and volume.timings.load_ms is not None
    for index, (ours, theirs) in enumerate(zip(phone, host)):
        if index == 5:  # the host constrains the schema request (llguidance); the phone cannot
            continue
        assert (ours.text, ours.finish_reason) == (theirs.text, theirs.finish_reason), index
        assert ours.timings.prompt_tokens == theirs.timings.prompt_tokens, index
        assert ours.timings.prompt_tokens_evaluated == theirs.timings.prompt_tokens_evaluated, index
        assert ours.timings.generated_tokens == theirs.timings.generated_tokens, index


@needs_ew_et
def test_incremental_case_on_the_phone_equals_the_host(et_phone: FakeAdbd, key: Path, tiny_pte: Path,
                                                      tmp_path: Path) -> None:
    """A whole `incremental` case (one user, two sessions of multiple-choice questions) through the
    command line, on the loopback phone and with --device host: the same prompts, answers, prompt
    tokens and tokens evaluated (the phone's runner counts and tokenizes as the host runtime does)."""
    from device_runner.__main__ import main

    common = ["--data", "sample", "--sample-users", "1", "--sample-sessions", "2", "--users", "0", "--no-progress",
              "--strategy", "incremental", "--runtime", "executorch", "--model", "tiny-llama", "--artifact",
              str(tiny_pte), "--threads", "2"]
    phone_out, host_out = tmp_path / "phone", tmp_path / "host"
    assert main(["--device", et_phone.serial, "--adb-key", str(key), "--runner-bin", str(HOST_BIN),
                 "--out", str(phone_out), *common]) == 0
    assert main(["--device", "host", "--out", str(host_out), *common]) == 0
    [on_phone], [on_host] = _rows(phone_out), _rows(host_out)
    assert on_phone["runtime_details"]["schema_decoding"] == "free" and on_phone["runtime_details"]["binary_sha256"]
    assert on_phone["prompt_sha256"] == on_host["prompt_sha256"]
    assert on_phone["output"] == on_host["output"] and on_phone["routines"] == on_host["routines"]
    tp, th = on_phone["timings"], on_host["timings"]
    assert tp["requests"] == th["requests"] > 0
    assert tp["prompt_tokens"] == th["prompt_tokens"]
    assert tp["prompt_tokens_evaluated"] == th["prompt_tokens_evaluated"] < tp["prompt_tokens"]
    print(f"\nincremental, {tp['requests']} questions: phone {on_phone['wall_s']:.1f} s, host {on_host['wall_s']:.1f} s")


# ---- failures ---------------------------------------------------------------------------------

def _cli(dev: FakeAdbd, key: Path, out: Path, bin_dir: Path, pte: Path, *extra: str) -> int:
    return cases.phone_cli(dev, key, out, bin_dir, "--runtime", "executorch", "--model", "tiny-llama", "--artifact",
                           str(pte), "--strategy", "incremental", "--threads", "2", *extra, sessions=2)


@needs_ew_et
def test_crash_mid_case_is_one_sentence_and_resume_finishes(tmp_path: Path, key: Path, tiny_pte: Path, capsys) -> None:
    """User 1's ew_et (a stand-in) dies in its second request: one sentence naming ExecuTorch's
    runner and the request; user 0's row stays; --resume runs user 1 only."""
    err = cases.crash_then_resume(tmp_path, key, capsys, "ew_et", lambda dev, out, runner_bin, *extra:
                                  _cli(dev, key, out, runner_bin, tiny_pte, "--users", "0-1", *extra))
    assert "ExecuTorch's on-device runner (ew_et) failed" in err, err
    assert "ew_et was killed by signal 11 while running request 0001" in err, err


@needs_ew_et
def test_missing_executorch_library_is_one_sentence(tmp_path: Path, key: Path, tiny_pte: Path, capsys) -> None:
    """The real ew_et pushed without ExecuTorch's libraries (a bin folder with no ../lib)."""
    bin_dir = cases.alone(HOST_BIN / "ew_et", tmp_path / "nolib" / "bin")
    with FakeAdbd(root=tmp_path / "phone") as dev:
        _trust(dev, key)
        _install_system_libs(dev, HOST_BIN / "ew_et")
        assert _cli(dev, key, tmp_path / "out", bin_dir, tiny_pte, "--users", "0") == 2
    err = capsys.readouterr().err
    assert "on-device runner (ew_et) failed" in err and "a shared library is missing" in err, err
    assert "libexecutorch" in err and "before its first request" in err, err
