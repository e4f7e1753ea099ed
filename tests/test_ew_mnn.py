"""Our MNN runner, ew_mnn (android/runners/mnn/ew_mnn.cpp, run by android/run_ew_mnn.sh): one process
per case, the model loaded once, each prompt evaluated whole as the host adapter does, greedy
decoding with the host's choices rule (runtimes/_decode.py); a JSON schema is decoded free.

- The script's record stream and its one sentence for a runner that dies, under sh, mksh and
  busybox, against a stand-in ew_mnn (seconds).
- The real runner (`android/build.sh --abi host --only mnn`, linked against the MNN wheel of the
  mnn toolchain env) on tiny-llama (2 random layers, exported once here in about 10 s): choices,
  an adversarial question whose free answer leaves the choices, free text, a JSON schema (free, and
  noted), each equal to the host `mnn` runtime's answers; --reuse-kv keeps the prefix.
- Through the loopback phone (tests/fakeadbd): the same requests and a whole `incremental` case
  equal to `--device host`; a runner that crashes mid-case and one whose shared library is
  missing: one sentence naming the engine and the request; rows stay and `--resume` finishes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner_cases as cases
from device_runner import engines

ROOT = cases.ROOT
SCRIPT = ROOT / "android" / "run_ew_mnn.sh"
CRASH_LOG = "MNN: oops"
FAKE_EW_MNN = cases.fake_runner(
    "ew_mnn", "prompt_tokens=120 reused_tokens=0 evaluated_tokens=120 generated_tokens=3 load_ms=250 prefill_ms=600 "
    "ttft_ms=605 decode_ms=40 sampling_ms=1.5 total_ms=650 full_grammar_passes=1 finish=stop", CRASH_LOG,
    call='"$* LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"', wall_ms=650)


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"llm_model": "llm.mnn"}')
    return folder


def _script(shell: str, bin_dir: Path, model: Path, case: Path, **env: str):
    return cases.run_script(SCRIPT, shell, bin_dir, model, case, "--ctx", "4096", **env)


@pytest.mark.parametrize("shell", list(cases.SHELLS))
def test_script_passes_records_and_names_the_request_a_crash_stopped(tmp_path: Path, shell: str) -> None:
    cases.need_shell(shell)
    bin_dir = cases.install_fake(tmp_path / "bin", "ew_mnn", FAKE_EW_MNN)
    model = _model_folder(tmp_path / "model dir")
    case = cases.write_case(tmp_path / "case 'quoted'", cases.CHOICES_CASE)
    parsed = cases.check_records(_script(shell, bin_dir, model, case), "ew_mnn")
    text, reason, t = engines.ew_llama_completion(parsed.records[0], "ew_mnn")
    assert (text, reason) == (" 47", "stop")
    assert t.ttft_ms == 605 and t.prefill_tps == 200 and t.decode_tps == 50 and t.peak_rss_mb == 300.0
    assert t.prompt_tokens == t.prompt_tokens_evaluated == 120 and t.generated_tokens == 3
    call = (bin_dir / "calls.txt").read_text()
    assert f"--model {model} --case {case} --threads 2 LD_LIBRARY_PATH={bin_dir}:{bin_dir}/../lib" in call
    assert "--ctx" not in call  # MNN's cache grows with the prompt
    # It dies in the second request: the first request's record, then one sentence, no EW_DONE.
    cases.check_crash(_script(shell, bin_dir, model, case, CRASH_AT="0001"), "ew_mnn", CRASH_LOG)
    # No binary, no model folder: sentences.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _script(shell, empty, model, case)
    assert out.returncode == 3 and f"EW_ERROR no ew_mnn in {empty} (android/build.sh --only mnn" in out.stdout
    out = _script(shell, bin_dir, empty, case)
    assert out.returncode == 3 and f"no config.json in model folder {empty}" in out.stdout


# ---- the real runner ---------------------------------------------------------------------------

HOST_BIN = ROOT / "android" / "build" / "host" / "bin"
EW_MNN = HOST_BIN / "ew_mnn"


def _env_reason() -> str | None:
    from export import env as export_env

    if not export_env.env_ready("mnn"):
        return "the mnn toolchain env (MNN's wheel) is absent: make export MODEL=tiny-llama FORMAT=mnn"
    if not EW_MNN.is_file() or not (HOST_BIN.parent / "lib").is_dir():
        return "no host ew_mnn: make android-host-mnn (android/build.sh --abi host --only mnn)"
    return None


@pytest.fixture(scope="module")
def tiny_mnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama (2 random layers, 384-token vocabulary, int8) as an MNN folder: the one under
    artifacts/ when it is there, else exported once (`make export MODEL=tiny-llama FORMAT=mnn`)."""
    reason = _env_reason()
    if reason:
        pytest.skip(reason)
    ready = ROOT / "artifacts" / "tiny-llama" / "mnn"
    if (ready / "config.json").is_file() and (ready / "llm.mnn").is_file():
        return ready
    from eval.errors import HarnessError
    from export.__main__ import main as export_main

    out = tmp_path_factory.mktemp("artifacts")
    try:
        if export_main(["--model", "tiny-llama", "--format", "mnn", "--out", str(out)]) != 0:
            pytest.skip("the tiny-llama MNN export failed (see its output); run make export MODEL=tiny-llama FORMAT=mnn")
    except HarnessError as exc:
        pytest.skip(f"no tiny-llama MNN artifact and it could not be exported here: {exc}")
    return out / "tiny-llama" / "mnn"


@pytest.fixture(scope="module")
def host_mnn(tiny_mnn: Path) -> Iterator:
    """The host `mnn` runtime (runtimes/mnn.py) in the mnn toolchain env, as --device host runs it."""
    from device_runner.run import open_runtime

    rt = open_runtime("mnn", n_threads=2)
    rt.load(str(tiny_mnn))
    yield rt
    rt.close()


PREFIX = "Answer the question.\nQ: What is the capital of France?\nA:"
CHOICES = (" 7", " 12", " none", " 1")  # " 1" is a choice and a prefix of " 12": stop competes with going on
SCHEMA = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
          "additionalProperties": False}


def _requests() -> list:
    from runtimes import GenerationSettings, Request

    return [
        Request(prompt=PREFIX, choices=CHOICES, cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=8)),
        Request(prompt=PREFIX, cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=6)),
        Request(prompt=PREFIX + " Paris.\nQ: And the lights?\nA:", choices=(" on", " off", " dim"),
                cache_prefix=PREFIX, settings=GenerationSettings(max_tokens=8)),
        Request(prompt="Lumières: é ü\nA:", choices=(" ön", " off", " é"), settings=GenerationSettings(max_tokens=8)),
        Request(prompt=PREFIX + " Paris.\nAs JSON:", json_schema=SCHEMA, cache_prefix=PREFIX,
                settings=GenerationSettings(max_tokens=12)),
    ]


def _case_folder(requests: list, folder: Path) -> Path:
    from device_runner.phone_runtime import RUNNERS, _constraint_file

    folder.mkdir()
    lines = []
    for i, r in enumerate(requests):
        (folder / f"{i:04d}.prompt").write_text(r.prompt)
        name, text = _constraint_file(r, RUNNERS["mnn"])
        if text is not None:
            (folder / name).write_text(text)
        lines.append(f"{i:04d}\t{r.settings.max_tokens}\t0.0\t0\t{name}\t-\n")
    (folder / "requests.tsv").write_text("".join(lines))
    return folder


def test_ew_mnn_case_folder_equals_the_host_runtime(tiny_mnn: Path, host_mnn, tmp_path: Path) -> None:
    """ew_mnn run by its script on this machine on the case folder PhoneRuntime makes: every
    answer without a schema equals the host runtime's; the schema request is decoded free, and
    said so; with --reuse-kv a shared prefix is not evaluated again."""
    requests = _requests()
    case = _case_folder(requests, tmp_path / "case")
    out = subprocess.run(["sh", str(SCRIPT), "--bin", str(HOST_BIN), "--model", str(tiny_mnn), "--case", str(case),
                          "--threads", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    parsed = engines.parse_case_output(out.stdout)
    assert "ew_mnn: JSON-schema requests decoded free (no schema masks on the phone)" in parsed.notes
    ours = [engines.ew_llama_completion(r, "ew_mnn") for r in parsed.records]
    theirs = host_mnn.generate(requests)
    plain = slice(0, 4)  # the schema request (the last) is masked on the host only
    assert [(t, f) for t, f, _ in ours[plain]] == [(c.text, c.finish_reason) for c in theirs[plain]]
    assert [t.prompt_tokens for _, _, t in ours] == [c.timings.prompt_tokens for c in theirs]
    assert [t.generated_tokens for _, _, t in ours[plain]] == [c.timings.generated_tokens for c in theirs[plain]]
    assert all(t.prompt_tokens_evaluated == t.prompt_tokens for _, _, t in ours)  # whole prompts, as the host
    free, structured = ours[1][0], ours[4][0]
    assert not any(c.startswith(free) or free.startswith(c) for c in CHOICES), free  # adversarial
    assert ours[0][0] in CHOICES and ours[2][0] in (" on", " off", " dim") and ours[3][0] in (" ön", " off", " é")
    assert structured and ours[4][1] in ("stop", "length")
    # --reuse-kv: the same case with MNN's KV cache kept; the prefix is not evaluated again.
    again = subprocess.run([str(EW_MNN), "--model", str(tiny_mnn), "--case", str(case), "--reuse-kv"],
                           capture_output=True, text=True, timeout=120, env={
                               **os.environ, "LD_LIBRARY_PATH": str(HOST_BIN.parent / "lib")})
    assert again.returncode == 0, again.stdout + again.stderr
    reused = [engines.ew_llama_completion(r, "ew_mnn") for r in engines.parse_case_output(again.stdout).records]
    assert reused[1][2].prompt_tokens_evaluated == 1 and reused[2][2].prompt_tokens_evaluated < ours[2][2].prompt_tokens - 10
    assert reused[0][0] in CHOICES and reused[2][0] in (" on", " off", " dim")


def test_ew_mnn_refuses_what_it_cannot_read(tiny_mnn: Path, tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    (case / "0000.prompt").write_text("Q:")
    (case / "g.gbnf").write_text('root ::= "a"')
    (case / "requests.tsv").write_text("0000\t4\t0.0\t0\tg.gbnf\t-\n")
    env = {**os.environ, "LD_LIBRARY_PATH": str(HOST_BIN.parent / "lib")}
    out = subprocess.run([str(EW_MNN), "--model", str(tiny_mnn), "--case", str(case)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 4 and "EW_ERROR request 0000: g.gbnf is neither a .choices nor a .schema.json" in out.stdout
    assert "device supports" not in out.stdout and "device supports" in out.stderr  # MNN's printf: stderr
    out = subprocess.run([str(EW_MNN), "--model", str(tmp_path), "--case", str(case)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 3 and f"EW_ERROR no config.json in the model folder {tmp_path}" in out.stdout


# ---- through the loopback phone --------------------------------------------------------------

pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from fakeadbd import FakeAdbd, unavailable_reason  # noqa: E402

import test_device_runner as phone_tests  # noqa: E402

needs_fakeadbd = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")
key = phone_tests.key  # the workstation's adb key (module fixture)
_rows, _trust = phone_tests._rows, phone_tests._trust


def _main(dev: FakeAdbd, key: Path, out: Path, *extra: str, runner_bin: Path = HOST_BIN) -> int:
    return cases.phone_cli(dev, key, out, runner_bin, "--model", "tiny-llama", "--runtime", "mnn", *extra)


@pytest.fixture(scope="module")
def mnn_phone(tmp_path_factory: pytest.TempPathFactory, key: Path, tiny_mnn: Path) -> Iterator[FakeAdbd]:
    """A loopback phone with the system libraries the host-built ew_mnn and MNN's engine need."""
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason() or "")
    with FakeAdbd(root=tmp_path_factory.mktemp("mnnphone") / "device") as dev:
        _trust(dev, key)
        dev.sandbox.install_host_libraries(EW_MNN)
        yield dev


def test_requests_on_the_phone_equal_the_host(mnn_phone: FakeAdbd, key: Path, host_mnn, tiny_mnn: Path) -> None:
    """The same requests through PhoneRuntime (pushed with MNN's engine library, run by ew_mnn on
    the loopback phone, parsed) against the host runtime's answers; rows record how it decoded."""
    from device_runner.facts import device_facts
    from device_runner.phone import Phone, PhoneOptions
    from device_runner.phone_runtime import PhoneRuntime

    requests = _requests()
    p = Phone(mnn_phone.serial, PhoneOptions(transport_options={"key": key}, runner_bin=HOST_BIN))
    p.connect()
    try:
        facts = device_facts(p.t)
        facts["name"] = mnn_phone.serial
        rt = PhoneRuntime(p, facts, tiny_mnn, 2048, 2, "mnn")
        rt.load()
        phone = rt.generate(requests)
        details = rt.info().details
        engine = next((HOST_BIN.parent / "lib").glob("_mnncengine*.so"))
        assert mnn_phone.host_path(f"{rt.remote_bin}/{engine.name}").is_file()
        notes = rt.row_extra()["measurement"]["uncontrolled"]
    finally:
        p.close()
    assert details["decoding"].startswith("greedy-constrained") and details["schema_decoding"] == "free"
    assert "grammar_fast_path" not in details
    assert any("JSON-schema requests decoded free" in n for n in notes), notes
    host = host_mnn.generate(requests)
    assert [(c.text, c.finish_reason) for c in phone[:4]] == [(c.text, c.finish_reason) for c in host[:4]]
    assert [c.timings.prompt_tokens for c in phone] == [c.timings.prompt_tokens for c in host]
    assert phone[0].timings.peak_rss_mb and phone[0].timings.load_ms and phone[0].timings.ttft_ms


def test_chat_messages_render_as_the_host_does(mnn_phone: FakeAdbd, key: Path, tiny_mnn: Path, tmp_path: Path) -> None:
    """Chat messages (what an instruct model's strategies send): the phone path renders the export's
    own template (llm_config.json's jinja) as the host adapter does: the same prompt tokens, the same answer."""
    from device_runner.facts import device_facts
    from device_runner.phone import Phone, PhoneOptions
    from device_runner.phone_runtime import PhoneRuntime
    from device_runner.run import open_runtime
    from runtimes import GenerationSettings, Request

    folder = tmp_path / "chat-mnn"
    shutil.copytree(tiny_mnn, folder)
    config = json.loads((folder / "llm_config.json").read_text())
    config["jinja"]["chat_template"] = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
                                        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    (folder / "llm_config.json").write_text(json.dumps(config))
    requests = [Request(messages=({"role": "system", "content": "Answer with a number."},
                                  {"role": "user", "content": "The TV volume?"}),
                        choices=(" 12", " 15", " none"), settings=GenerationSettings(max_tokens=8))]
    p = Phone(mnn_phone.serial, PhoneOptions(transport_options={"key": key}, runner_bin=HOST_BIN))
    p.connect()
    try:
        facts = device_facts(p.t)
        facts["name"] = mnn_phone.serial
        rt = PhoneRuntime(p, facts, folder, 2048, 2, "mnn")
        rt.load()
        [phone] = rt.generate(requests)
    finally:
        p.close()
    host_rt = open_runtime("mnn", n_threads=2)
    try:
        host_rt.load(str(folder))
        [host] = host_rt.generate(requests)
        bare = host_rt.count_tokens("The TV volume?")
    finally:
        host_rt.close()
    assert (phone.text, phone.finish_reason) == (host.text, host.finish_reason) and phone.text in (" 12", " 15", " none")
    assert phone.timings.prompt_tokens == host.timings.prompt_tokens > bare + 10  # the template's text is in


def test_incremental_case_on_the_phone_equals_the_host(mnn_phone: FakeAdbd, key: Path, tiny_mnn: Path,
                                                      tmp_path: Path) -> None:
    """A whole `incremental` case (one user, one session: multiple-choice questions) through the
    loopback phone and with --device host: the same answers, routines, score and token counts."""
    common = ["--strategy", "incremental", "--users", "0", "--threads", "2", "--artifact", str(tiny_mnn),
              "--sample-users", "1", "--sample-sessions", "1"]
    phone_out, host_out = tmp_path / "phone", tmp_path / "host"
    assert _main(mnn_phone, key, phone_out, *common) == 0
    from device_runner.__main__ import main

    assert main(["--device", "host", "--data", "sample", "--out", str(host_out), "--no-progress", "--model", "tiny-llama",
                 "--runtime", "mnn", *common]) == 0
    [on_phone], [on_host] = _rows(phone_out), _rows(host_out)
    assert on_phone["prompt_sha256"] == on_host["prompt_sha256"] and on_phone["parse_errors"] == []
    assert on_phone["runtime_details"]["binary_sha256"] and on_phone["runtime_details"]["runner"] == "android/run_ew_mnn.sh"
    tp, th = on_phone["timings"], on_host["timings"]
    assert tp["requests"] == th["requests"] == on_phone["prompt_notes"]["questions"] > 0
    assert tp["prompt_tokens"] == th["prompt_tokens"] and tp["generated_tokens"] == th["generated_tokens"]
    assert tp["prompt_tokens_evaluated"] == th["prompt_tokens_evaluated"] == tp["prompt_tokens"]
    assert on_phone["output"] == on_host["output"]
    assert on_phone["routines"] == on_host["routines"] and on_phone["score"] == on_host["score"]
    print(f"\nincremental on tiny-llama (MNN), {tp['requests']} questions: phone {on_phone['wall_s']:.2f} s, "
          f"host {on_host['wall_s']:.2f} s")


# ---- failures ---------------------------------------------------------------------------------

@needs_fakeadbd
def test_crash_mid_case_is_one_sentence_and_resume_finishes(tmp_path: Path, key: Path, capsys) -> None:
    """User 1's ew_mnn dies in its second request: one sentence naming MNN's runner and the
    request; user 0's row stays; --resume runs user 1 only (a stand-in runner, no MNN needed)."""
    tiny_mnn = _model_folder(tmp_path / "mnn")
    args = ["--strategy", "incremental", "--users", "0-1", "--artifact", str(tiny_mnn)]
    err = cases.crash_then_resume(tmp_path, key, capsys, "ew_mnn", lambda dev, out, runner_bin, *extra:
                                  _main(dev, key, out, *args, *extra, runner_bin=runner_bin))
    assert "MNN's on-device runner (ew_mnn) failed" in err, err
    assert "ew_mnn was killed by signal 11 while running request 0001" in err, err


@needs_fakeadbd
@pytest.mark.skipif(not EW_MNN.is_file(), reason="no host ew_mnn: make android-host-mnn")
def test_missing_shared_library_is_one_sentence(tmp_path: Path, key: Path, capsys) -> None:
    """The host-built ew_mnn copied alone (no lib/ beside its folder, so MNN's engine is not
    pushed): one sentence naming the runner, the missing library and where it stopped."""
    tiny_mnn = _model_folder(tmp_path / "mnn")
    bin_dir = cases.alone(EW_MNN, tmp_path / "alone" / "bin")
    with cases.phone_lacking(tmp_path / "phone", key, EW_MNN, "_mnncengine*.so") as dev:
        assert _main(dev, key, tmp_path / "out", "--strategy", "incremental", "--users", "0", "--artifact",
                     str(tiny_mnn), runner_bin=bin_dir) == 2
    err = capsys.readouterr().err
    assert "on-device runner (ew_mnn) failed" in err and "a shared library is missing" in err, err
    assert "_mnncengine" in err and "before its first request" in err, err
