"""Our llama.cpp runner, ew_llama (android/runners/llamacpp/ew_llama.cpp, run by
android/run_ew_llama.sh): one process per case, the KV cache kept across requests, greedy decoding
under GBNF grammars with the argmax fast path.

- The script's record stream and its one sentence for a runner that dies, under sh, mksh and
  busybox, against a stand-in ew_llama (seconds).
- Through the loopback phone (tests/fakeadbd) with the host-built runner and the default GGUF:
  constrained requests of both kinds (choices, a JSON schema), an adversarial question whose
  unconstrained answer leaves the choices, and a whole `incremental` case, each equal to
  `--device host`'s answers (greedy; a differing answer must sit on a near tie of the host's
  logits, tests/ties.py).
- A runner that crashes mid-case and one whose shared library is missing: one sentence naming
  the engine and the request; the finished rows stay and `--resume` finishes the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner_cases as cases
from device_runner import engines

SCRIPT = cases.ROOT / "android" / "run_ew_llama.sh"
CRASH_LOG = "ggml_abort: oops"
FAKE_EW_LLAMA = cases.fake_runner("ew_llama", cases.STAT + " full_grammar_passes=1 finish=stop", CRASH_LOG)


def _case(folder: Path) -> Path:
    return cases.write_case(folder, {"p1.txt": "Instructions.\n", **cases.PROMPTS, "g1.gbnf": 'root ::= " 47" | " none"\n',
                                     "requests.tsv": "0000\t8\t0.0\t0\tg1.gbnf\tp1.txt\n0001\t8\t0.0\t0\t-\tp1.txt\n"})


def _script(shell: str, bin_dir: Path, case: Path, **env: str):
    return cases.run_script(SCRIPT, shell, bin_dir, SCRIPT, case, **env)


@pytest.mark.parametrize("shell", list(cases.SHELLS))
def test_script_passes_records_and_names_the_request_a_crash_stopped(tmp_path: Path, shell: str) -> None:
    cases.need_shell(shell)
    bin_dir = cases.install_fake(tmp_path / "bin", "ew_llama", FAKE_EW_LLAMA)
    case = _case(tmp_path / "case 'quoted'")
    parsed = cases.check_records(_script(shell, bin_dir, case), "ew_llama")
    text, reason, t = engines.ew_llama_completion(parsed.records[0])
    assert (text, reason) == (" 47", "stop")
    assert t.load_ms == 250 and t.ttft_ms == 105 and t.prefill_tps == 200 and t.decode_tps == 50
    assert t.prompt_tokens == 120 and t.prompt_tokens_evaluated == 20 and t.generated_tokens == 3
    assert t.peak_rss_mb == 300.0 and t.total_ms == 150 and t.sampling_ms == 1.5
    assert "--ctx 4096 --threads 2" in (bin_dir / "calls.txt").read_text()
    # It dies in the second request: the first request's record, then one sentence, no EW_DONE.
    cases.check_crash(_script(shell, bin_dir, case, CRASH_AT="0001"), "ew_llama", CRASH_LOG)
    # No binary: a sentence.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _script(shell, empty, case)
    assert out.returncode == 3 and f"EW_ERROR no ew_llama in {empty}" in out.stdout


def test_ew_stat_that_is_not_key_value_is_a_damaged_stream() -> None:
    from eval.errors import HarnessError

    with pytest.raises(HarnessError, match="line 2: EW_STAT item 'garbage' is not key=value"):
        engines.parse_case_output("EW_BEGIN request 0000\nEW_STAT garbage\nEW_RC 0\nEW_END request 0000\n")
    record = engines.parse_case_output("EW_BEGIN request 0000\nEW_STAT prompt_tokens=3\nEW_RC 0\n"
                                       "EW_END request 0000\n").records[0]
    with pytest.raises(ValueError, match="lacks or garbles 'evaluated_tokens'"):
        engines.ew_llama_completion(record)


# ---- through the loopback phone --------------------------------------------------------------

pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from fakeadbd import FakeAdbd, unavailable_reason  # noqa: E402

import test_device_runner as phone_tests  # noqa: E402
from ties import TIE_LOGITS, Ties  # noqa: E402

needs_fakeadbd = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")
HOST_BIN = phone_tests.HOST_BIN
key = phone_tests.key  # the workstation's adb key (module fixture)
_model, _rows, _run, _trust = phone_tests._model, phone_tests._rows, phone_tests._run, phone_tests._trust


@pytest.fixture(scope="module")
def ew_phone(tmp_path_factory: pytest.TempPathFactory, key: Path) -> Iterator[FakeAdbd]:
    """A loopback phone with the host-built ew_llama's libraries (the GGUF is pushed once)."""
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason() or "")
    if not (HOST_BIN / "ew_llama").is_file() or _model() is None:
        pytest.skip("needs `make android-host` (ew_llama) and the default GGUF")
    with FakeAdbd(root=tmp_path_factory.mktemp("ewphone") / "device") as dev:
        _trust(dev, key)
        dev.sandbox.install_host_libraries(HOST_BIN / "ew_llama")
        yield dev


@pytest.fixture(scope="module")
def host_llama() -> Iterator:
    pytest.importorskip("llama_cpp", reason="make install-llamacpp")
    from runtimes.llamacpp import LlamaCppRuntime

    rt = LlamaCppRuntime(n_threads=2, n_ctx=2048)
    rt.load(str(_model()))
    yield rt
    rt.close()


def _first_difference_is_a_tie(ties: Ties, prompt: str, ours: str, theirs: str) -> float:
    gap = ties.gap(prompt, ours, theirs)
    assert gap <= TIE_LOGITS, f"{ours!r} and {theirs!r} part where the model is not tied (logit gap {gap:.3f})"
    return gap


@pytest.mark.model
def test_constrained_requests_on_the_phone_equal_the_host(ew_phone: FakeAdbd, key: Path, host_llama) -> None:
    """Choices, a JSON schema and free text through PhoneRuntime (pushed, run by ew_llama on the
    loopback phone, parsed), against the host runtime's answers to the same requests.  The
    question is adversarial: free decoding answers it with a city, outside the choices, so the
    grammar has to overrule the argmax (the fast path's fallback)."""
    from device_runner.facts import device_facts
    from device_runner.phone import Phone, PhoneOptions
    from device_runner.phone_runtime import PhoneRuntime
    from runtimes import GenerationSettings, Request

    prefix = "Answer the question.\nQ: What is the capital of France?\nA:"
    choices = (" 7", " 12", " none")
    schema = {"type": "object", "properties": {"count": {"type": "integer", "enum": [1, 2, 3]},
                                               "name": {"type": "string", "enum": ["Paris", "Rome"]}},
              "required": ["count", "name"], "additionalProperties": False}
    requests = [
        Request(prompt=prefix, choices=choices, cache_prefix=prefix, settings=GenerationSettings(max_tokens=8)),
        Request(prompt=prefix, cache_prefix=prefix, settings=GenerationSettings(max_tokens=4)),
        Request(prompt=prefix + " Paris.\nAs JSON:", json_schema=schema, cache_prefix=prefix,
                settings=GenerationSettings(max_tokens=40)),
    ]
    p = Phone(ew_phone.serial, PhoneOptions(transport_options={"key": key}, runner_bin=HOST_BIN))
    p.connect()
    try:
        facts = device_facts(p.t)
        facts["name"] = ew_phone.serial
        rt = PhoneRuntime(p, facts, _model(), 2048, 2, "llamacpp")
        rt.load()
        phone = rt.generate(requests)
        assert rt.info().details["decoding"] == "gbnf"
    finally:
        p.close()
    host = host_llama.generate(requests)
    constrained, free, structured = phone
    assert free.text.strip() not in {c.strip() for c in choices}, free.text  # free decoding leaves the choices
    assert constrained.text in choices and constrained.finish_reason == "stop"
    value = json.loads(structured.text)
    assert value["count"] in (1, 2, 3) and value["name"] in ("Paris", "Rome") and set(value) == {"count", "name"}
    # The KV cache stayed: the second and third requests evaluated only what follows the prefix.
    assert free.timings.prompt_tokens_evaluated < free.timings.prompt_tokens
    assert structured.timings.prompt_tokens_evaluated < structured.timings.prompt_tokens - 10
    assert constrained.timings.peak_rss_mb and constrained.timings.load_ms and constrained.timings.ttft_ms
    for request, ours, theirs in zip(requests, phone, host):
        assert ours.timings.prompt_tokens == theirs.timings.prompt_tokens  # the same tokenization
        if ours.text != theirs.text:
            _first_difference_is_a_tie(Ties(_model()), request.prompt, ours.text, theirs.text)


@pytest.mark.model
def test_incremental_case_on_the_phone_equals_the_host(ew_phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    """A whole `incremental` case (one user, one session: about ten multiple-choice questions
    sharing cache_prefix) through the loopback phone and with --device host: the same answers and
    routines (a differing answer must be a near tie), the same prompt tokens, and the phone
    evaluated only the tokens after each shared prefix, as the host does."""
    pytest.importorskip("llama_cpp", reason="make install-llamacpp")
    from eval.dataset import load_folder
    from prompts.strategies import Budget, get_strategy
    from runtimes.base import GenerationSettings

    common = ["--strategy", "incremental", "--users", "0", "--threads", "2", "--context", "2048",
              "--sample-users", "1", "--sample-sessions", "1"]
    phone_out, host_out = tmp_path / "phone", tmp_path / "host"
    assert _run(ew_phone, key, phone_out, *common) == 0
    from device_runner.__main__ import main

    assert main(["--device", "host", "--data", "sample", "--out", str(host_out), "--no-progress", *common]) == 0
    [on_phone], [on_host] = _rows(phone_out), _rows(host_out)
    assert on_phone["prompt_sha256"] == on_host["prompt_sha256"] and on_phone["parse_errors"] == []
    assert on_phone["runtime_details"]["binary_sha256"] and on_phone["runtime_details"]["decoding"] == "gbnf"
    tp, th = on_phone["timings"], on_host["timings"]
    assert tp["requests"] == th["requests"] == on_phone["prompt_notes"]["questions"] > 0
    assert tp["prompt_tokens"] == th["prompt_tokens"]
    assert tp["prompt_tokens_evaluated"] == th["prompt_tokens_evaluated"] < tp["prompt_tokens"] / 2
    ours, theirs = on_phone["output"].splitlines(), on_host["output"].splitlines()
    users = load_folder(phone_out / "sample-data")
    plan = get_strategy("incremental").plan(users[0], len(users[0].routines), Budget(2048), GenerationSettings())
    differ = Ties(_model()).check(plan, ours, theirs)
    print(f"\nincremental, {tp['requests']} questions: phone {on_phone['wall_s']:.1f} s, host {on_host['wall_s']:.1f} s; "
          f"answers that differ (host's logit gap): {differ}")
    if not differ:
        assert on_phone["routines"] == on_host["routines"] and on_phone["score"] == on_host["score"]


# ---- failures ---------------------------------------------------------------------------------

@needs_fakeadbd
def test_crash_mid_case_is_one_sentence_and_resume_finishes(tmp_path: Path, key: Path, capsys) -> None:
    """User 1's ew_llama dies in its second request: one sentence naming llama.cpp's runner and
    the request; user 0's row stays; --resume runs user 1 only."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 1000)
    args = ["--strategy", "hybrid", "--users", "0-1", "--gguf", str(gguf)]
    err = cases.crash_then_resume(tmp_path, key, capsys, "ew_llama", lambda dev, out, runner_bin, *extra:
                                  cases.phone_cli(dev, key, out, runner_bin, *extra, *args))
    assert "llama.cpp" in err and "on-device runner (ew_llama) failed" in err, err
    assert "ew_llama was killed by signal 11 while running request 0001" in err, err


@needs_fakeadbd
@pytest.mark.skipif(not (HOST_BIN / "ew_llama").is_file(), reason="no host ew_llama: `make android-host`")
def test_missing_shared_library_is_one_sentence(tmp_path: Path, key: Path, capsys) -> None:
    """The host-built ew_llama on a phone that lacks libstdc++ (its other libraries there)."""
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 1000)
    with cases.phone_lacking(tmp_path / "phone", key, HOST_BIN / "ew_llama", "libstdc++.so*") as dev:
        assert _run(dev, key, tmp_path / "out", "--strategy", "hybrid", "--users", "0", "--gguf", str(gguf)) == 2
    err = capsys.readouterr().err
    assert "on-device runner (ew_llama) failed" in err and "a shared library is missing" in err, err
    assert "libstdc++" in err and "before its first request" in err, err
