"""Our onnxruntime-genai runner, ew_ort (android/runners/onnxruntime/ew_ort.cpp, run by
android/run_ew_ort.sh): one process per case, one generator (its KV cache) kept across requests,
greedy decoding with the host adapter's choices rule and onnxruntime-genai's llguidance for JSON schemas.

- The script's record stream and its one sentence for a runner that dies, under sh, mksh and
  busybox, against a stand-in ew_ort (seconds).
- Through the loopback phone (tests/fakeadbd) with the host-built runner (`android/build.sh --abi host
  --only ortgenai`, against the .venv's onnxruntime-genai wheel) and the tiny random ONNX model
  (tiny-llama, `make export MODEL=tiny-llama FORMAT=onnx`): choices, an adversarial question whose
  free answer leaves the choices, a JSON schema, free text, and a whole `incremental` case, each
  exactly equal to the host `onnxruntime` runtime's answers (same library, same CPU, greedy).
- A runner that crashes mid-case and one whose shared library is missing: one sentence naming
  the engine and the request; the finished rows stay and `--resume` finishes the rest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner_cases as cases
from device_runner import engines

ROOT = cases.ROOT
SCRIPT = ROOT / "android" / "run_ew_ort.sh"
CRASH_LOG = "onnxruntime: oops"
FAKE_EW_ORT = cases.fake_runner("ew_ort", cases.STAT + " choice_scans=1 constraint=choices finish=stop", CRASH_LOG,
                                call='"$* ORT_LIB_PATH=${ORT_LIB_PATH:-}"')


def _fake(folder: Path) -> Path:
    cases.install_fake(folder, "ew_ort", FAKE_EW_ORT)
    (folder / "libonnxruntime.so.1").write_bytes(b"\x7fELF")  # found and named by ORT_LIB_PATH
    return folder


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "genai_config.json").write_text("{}")
    return folder


def _script(shell: str, bin_dir: Path, model: Path, case: Path, **env: str):
    return cases.run_script(SCRIPT, shell, bin_dir, model, case, "--ctx", "4096", unset=("ORT_LIB_PATH",), **env)


@pytest.mark.parametrize("shell", list(cases.SHELLS))
def test_script_passes_records_and_names_the_request_a_crash_stopped(tmp_path: Path, shell: str) -> None:
    cases.need_shell(shell)
    bin_dir = _fake(tmp_path / "bin")
    model = _model_folder(tmp_path / "model")
    case = cases.write_case(tmp_path / "case 'quoted'", cases.CHOICES_CASE)
    parsed = cases.check_records(_script(shell, bin_dir, model, case), "ew_ort")
    text, reason, t = engines.ew_llama_completion(parsed.records[0], "ew_ort")
    assert (text, reason) == (" 47", "stop")
    assert t.ttft_ms == 105 and t.prefill_tps == 200 and t.decode_tps == 50 and t.peak_rss_mb == 300.0
    assert t.prompt_tokens == 120 and t.prompt_tokens_evaluated == 20 and t.generated_tokens == 3
    call = (bin_dir / "calls.txt").read_text()
    assert "--threads 2" in call and "--ctx" not in call  # the model's context_length decides
    assert f"ORT_LIB_PATH={bin_dir}/libonnxruntime.so.1" in call
    # It dies in the second request: the first request's record, then one sentence, no EW_DONE.
    cases.check_crash(_script(shell, bin_dir, model, case, CRASH_AT="0001"), "ew_ort", CRASH_LOG)
    # No binary, no model folder: sentences.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _script(shell, empty, model, case)
    assert out.returncode == 3 and f"EW_ERROR no ew_ort in {empty} (android/build.sh --only ortgenai" in out.stdout
    out = _script(shell, bin_dir, empty, case)
    assert out.returncode == 3 and f"no genai_config.json in model folder {empty}" in out.stdout


def test_a_stat_line_without_its_numbers_names_the_runner() -> None:
    record = engines.parse_case_output("EW_BEGIN request 0000\nEW_STAT prompt_tokens=3\nEW_RC 0\n"
                                       "EW_END request 0000\n").records[0]
    with pytest.raises(ValueError, match="ew_ort's EW_STAT line of request 0000 lacks or garbles 'evaluated_tokens'"):
        engines.ew_llama_completion(record, "ew_ort")


# ---- the real runner ---------------------------------------------------------------------------

HOST_BIN = ROOT / "android" / "build" / "host" / "bin"
EW_ORT = HOST_BIN / "ew_ort"
TINY = ROOT / "artifacts" / "tiny-llama" / "onnx"


def _wheel_reason() -> str | None:
    try:
        import onnxruntime_genai  # noqa: F401
    except ModuleNotFoundError:
        return "the onnxruntime-genai wheel is not installed: make install-onnxruntime"
    if not EW_ORT.is_file():
        return "no host ew_ort: android/build.sh --abi host --only ortgenai (make android-host)"
    return None


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama (2 random layers, 384-token vocabulary) as an onnxruntime-genai folder: the one
    under artifacts/ when it is there, else exported once (`make export MODEL=tiny-llama FORMAT=onnx`)."""
    reason = _wheel_reason()
    if reason:
        pytest.skip(reason)
    if (TINY / "genai_config.json").is_file() and (TINY / "model.onnx").is_file():
        return TINY
    from eval.errors import HarnessError
    from export.__main__ import main as export_main

    out = tmp_path_factory.mktemp("artifacts")
    try:
        if export_main(["--model", "tiny-llama", "--format", "onnx", "--out", str(out)]) != 0:
            pytest.skip("the tiny-llama ONNX export failed (see its output); run make export MODEL=tiny-llama FORMAT=onnx")
    except HarnessError as exc:
        pytest.skip(f"no tiny-llama ONNX artifact and it could not be exported here: {exc}")
    return out / "tiny-llama" / "onnx"


# onnxruntime 1.32 opens a model's external data (model.onnx.data) through /proc/self/fd.  The loopback
# phone has a procfs when it runs as root (CI; tests/fakeadbd/sandbox.py), and then the export's own
# folder is used; without root its /proc is a folder of fixed files, and the model is given as one
# model.onnx with its weights inside, written by the onnx toolchain env's `onnx` package.  The host and
# the phone tests below all use the same folder.
INLINE = """import sys, onnx
onnx.save(onnx.load(sys.argv[1]), sys.argv[2], save_as_external_data=False)
"""


@pytest.fixture(scope="module")
def tiny(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import env as export_env
    from fakeadbd.sandbox import _PROC_MOUNTER

    if _PROC_MOUNTER is not None:
        return tiny_onnx
    if not export_env.env_ready("onnx"):
        pytest.skip("needs the onnx toolchain env (its `onnx` package writes a single-file copy of the model for "
                    "the loopback phone, which has no procfs): make export MODEL=tiny-llama FORMAT=onnx creates it")
    folder = tmp_path_factory.mktemp("tiny-inline") / "onnx"
    shutil.copytree(tiny_onnx, folder, ignore=shutil.ignore_patterns("mobile", "model.onnx.data", "manifest.json"))
    subprocess.run([str(export_env.env_python("onnx")), "-c", INLINE, str(tiny_onnx / "model.onnx"),
                    str(folder / "model.onnx")], check=True, timeout=120)
    return folder


@pytest.fixture(scope="module")
def host_ort(tiny: Path) -> Iterator:
    from runtimes.onnxruntime import OnnxRuntimeGenaiRuntime

    rt = OnnxRuntimeGenaiRuntime(n_threads=2)
    rt.load(str(tiny))
    yield rt
    rt.close()


PREFIX = "Answer the question.\nQ: What is the volume of the TV?\nA:"
CHOICES = (" 12", " 15", " none", " 1")  # " 1" is a choice and a prefix of " 12": stop competes with going on
SCHEMA = {"type": "object", "properties": {"on": {"type": "boolean"},
                                           "level": {"type": "integer", "enum": [10, 20, 30]}},
          "required": ["on", "level"], "additionalProperties": False}


def _requests() -> list:
    from runtimes import GenerationSettings, Request

    return [
        Request(prompt=PREFIX, choices=CHOICES, cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=8)),
        Request(prompt=PREFIX, cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=6)),
        Request(prompt=PREFIX + " 12\nQ: And the lights?\nA:", choices=(" on", " off", " dim"), cache_prefix=PREFIX,
                settings=GenerationSettings(max_tokens=8)),
        Request(prompt=PREFIX + " 12.\nAs JSON:", json_schema=SCHEMA, cache_prefix=PREFIX,
                settings=GenerationSettings(max_tokens=40)),
        Request(prompt=PREFIX, choices=CHOICES, cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=8)),
    ]


def test_ew_ort_case_folder_equals_the_host_runtime(tiny: Path, host_ort, tmp_path: Path) -> None:
    """ew_ort run by its script on this machine on the case folder PhoneRuntime makes: every answer
    equals the host runtime's, the generator's cache is reused after the first request."""
    from device_runner.phone_runtime import RUNNERS, _constraint_file

    requests = _requests()
    case = tmp_path / "case"
    case.mkdir()
    lines = []
    for i, r in enumerate(requests):
        (case / f"{i:04d}.prompt").write_text(r.prompt)
        name, text = _constraint_file(r, RUNNERS["onnxruntime"])
        if text is not None:
            (case / name).write_text(text)
        lines.append(f"{i:04d}\t{r.settings.max_tokens}\t0.0\t0\t{name}\t-\n")
    (case / "requests.tsv").write_text("".join(lines))
    out = subprocess.run(["sh", str(SCRIPT), "--bin", str(HOST_BIN), "--model", str(tiny), "--case", str(case),
                          "--threads", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    parsed = engines.parse_case_output(out.stdout)
    ours = [engines.ew_llama_completion(r, "ew_ort") for r in parsed.records]
    theirs = host_ort.generate(requests)
    assert [(t, f) for t, f, _ in ours] == [(c.text, c.finish_reason) for c in theirs]
    assert [t.prompt_tokens for _, _, t in ours] == [c.timings.prompt_tokens for c in theirs]
    assert [t.generated_tokens for _, _, t in ours] == [c.timings.generated_tokens for c in theirs]
    # The second and third requests continued the kept generator after the shared prefix.
    assert ours[1][2].prompt_tokens_evaluated == theirs[1].timings.prompt_tokens_evaluated < ours[1][2].prompt_tokens
    assert ours[2][2].prompt_tokens_evaluated == theirs[2].timings.prompt_tokens_evaluated < ours[2][2].prompt_tokens - 5


# ---- through the loopback phone --------------------------------------------------------------

pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from fakeadbd import FakeAdbd, unavailable_reason  # noqa: E402

import test_device_runner as phone_tests  # noqa: E402

needs_fakeadbd = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")
key = phone_tests.key  # the workstation's adb key (module fixture)
_rows, _trust = phone_tests._rows, phone_tests._trust


def _main(dev: FakeAdbd, key: Path, out: Path, *extra: str, runner_bin: Path = HOST_BIN) -> int:
    return cases.phone_cli(dev, key, out, runner_bin, "--model", "tiny-llama", "--runtime", "onnxruntime", *extra)


@pytest.fixture(scope="module")
def ort_phone(tmp_path_factory: pytest.TempPathFactory, key: Path, tiny: Path) -> Iterator[FakeAdbd]:
    """A loopback phone with the libraries the host-built ew_ort and libonnxruntime.so.1 need."""
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason() or "")
    with FakeAdbd(root=tmp_path_factory.mktemp("ortphone") / "device") as dev:
        _trust(dev, key)
        dev.sandbox.install_host_libraries(EW_ORT)
        dev.sandbox.install_host_libraries(HOST_BIN.parent / "lib" / "libonnxruntime.so.1")
        yield dev


def test_requests_on_the_phone_equal_the_host(ort_phone: FakeAdbd, key: Path, host_ort, tiny: Path) -> None:
    """Choices (one adversarial: free decoding leaves them), free text and a JSON schema through
    PhoneRuntime (pushed with its libraries, run by ew_ort on the loopback phone, parsed), against
    the host runtime's answers to the same requests."""
    from device_runner.facts import device_facts
    from device_runner.phone import Phone, PhoneOptions
    from device_runner.phone_runtime import PhoneRuntime

    requests = _requests()
    p = Phone(ort_phone.serial, PhoneOptions(transport_options={"key": key}, runner_bin=HOST_BIN))
    p.connect()
    try:
        facts = device_facts(p.t)
        facts["name"] = ort_phone.serial
        rt = PhoneRuntime(p, facts, tiny, 2048, 2, "onnxruntime")
        rt.load()
        phone = rt.generate(requests)
        details = rt.info().details
        assert ort_phone.host_path(f"{rt.remote_bin}/libonnxruntime-genai.so").is_file()
        assert ort_phone.host_path(f"{rt.remote_bin}/libonnxruntime.so.1").is_file()
    finally:
        p.close()
    assert details["decoding"].startswith("greedy-constrained") and "grammar_fast_path" not in details
    host = host_ort.generate(requests)
    constrained, free, lights, structured, again = phone
    # Adversarial: the free answer is none of the choices (nor the start of one), so the rule overrules it.
    assert not any(c.startswith(free.text) or free.text.startswith(c) for c in CHOICES), free.text
    assert constrained.text in CHOICES and constrained.finish_reason == "stop" and again.text == constrained.text
    assert lights.text in (" on", " off", " dim")
    value = json.loads(structured.text)
    assert set(value) == {"on", "level"} and isinstance(value["on"], bool) and value["level"] in (10, 20, 30)
    assert [(c.text, c.finish_reason) for c in phone] == [(c.text, c.finish_reason) for c in host]
    assert [c.timings.prompt_tokens for c in phone] == [c.timings.prompt_tokens for c in host]
    assert free.timings.prompt_tokens_evaluated < free.timings.prompt_tokens  # the kept generator
    assert constrained.timings.peak_rss_mb and constrained.timings.load_ms and constrained.timings.ttft_ms


def test_incremental_case_on_the_phone_equals_the_host(ort_phone: FakeAdbd, key: Path, tiny: Path,
                                                      tmp_path: Path) -> None:
    """A whole `incremental` case (one user, one session: multiple-choice questions sharing
    cache_prefix) through the loopback phone and with --device host: the same answers, routines,
    score and token counts, and both evaluated only what follows each shared prefix."""
    common = ["--strategy", "incremental", "--users", "0", "--threads", "2", "--artifact", str(tiny),
              "--sample-users", "1", "--sample-sessions", "1"]
    phone_out, host_out = tmp_path / "phone", tmp_path / "host"
    assert _main(ort_phone, key, phone_out, *common) == 0
    from device_runner.__main__ import main

    assert main(["--device", "host", "--data", "sample", "--out", str(host_out), "--no-progress", "--model", "tiny-llama",
                 "--runtime", "onnxruntime", *common]) == 0
    [on_phone], [on_host] = _rows(phone_out), _rows(host_out)
    assert on_phone["prompt_sha256"] == on_host["prompt_sha256"] and on_phone["parse_errors"] == []
    assert on_phone["runtime_details"]["binary_sha256"] and on_phone["runtime_details"]["runner"] == "android/run_ew_ort.sh"
    tp, th = on_phone["timings"], on_host["timings"]
    assert tp["requests"] == th["requests"] == on_phone["prompt_notes"]["questions"] > 0
    assert tp["prompt_tokens"] == th["prompt_tokens"] and tp["generated_tokens"] == th["generated_tokens"]
    assert tp["prompt_tokens_evaluated"] == th["prompt_tokens_evaluated"] < tp["prompt_tokens"] / 2
    assert on_phone["output"] == on_host["output"]
    assert on_phone["routines"] == on_host["routines"] and on_phone["score"] == on_host["score"]
    print(f"\nincremental on tiny-llama, {tp['requests']} questions: phone {on_phone['wall_s']:.2f} s, "
          f"host {on_host['wall_s']:.2f} s")


# ---- failures ---------------------------------------------------------------------------------

@needs_fakeadbd
def test_crash_mid_case_is_one_sentence_and_resume_finishes(tmp_path: Path, key: Path, tiny_onnx: Path,
                                                            capsys) -> None:
    """User 1's ew_ort dies in its second request: one sentence naming onnxruntime-genai's runner and
    the request; user 0's row stays; --resume runs user 1 only."""
    args = ["--strategy", "incremental", "--users", "0-1", "--artifact", str(tiny_onnx)]
    err = cases.crash_then_resume(tmp_path, key, capsys, "ew_ort", lambda dev, out, runner_bin, *extra:
                                  _main(dev, key, out, *args, *extra, runner_bin=runner_bin))
    assert "onnxruntime-genai" in err and "on-device runner (ew_ort) failed" in err, err
    assert "ew_ort was killed by signal 11 while running request 0001" in err, err


@needs_fakeadbd
def test_missing_shared_library_is_one_sentence(tmp_path: Path, key: Path, tiny: Path, capsys) -> None:
    """The host-built ew_ort copied alone (no lib/ beside its folder, so libonnxruntime-genai.so is
    not pushed): one sentence naming the runner, the missing library and where it stopped."""
    bin_dir = cases.alone(EW_ORT, tmp_path / "alone" / "bin")
    with cases.phone_lacking(tmp_path / "phone", key, EW_ORT, "libonnxruntime-genai.so") as dev:
        assert _main(dev, key, tmp_path / "out", "--strategy", "incremental", "--users", "0", "--artifact",
                     str(tiny), runner_bin=bin_dir) == 2
    err = capsys.readouterr().err
    assert "on-device runner (ew_ort) failed" in err and "a shared library is missing" in err, err
    assert "libonnxruntime-genai.so" in err and "before its first request" in err, err
