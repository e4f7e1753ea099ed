"""arm64 without a phone: the static aarch64 llama.cpp runners (`make android-arm64`: android/build.sh
--toolchain zig, no NDK) checked as ELF files, and our runner ew_llama run by the loopback phone's
arm64 mode (tests/fakeadbd, FakeAdbd(arch="arm64")) through qemu-user: a whole `incremental` case,
whose answers and routines must equal those of the x86-64 loopback phone (the same ew_llama built
for this machine) for the same requests (greedy decoding); `--device host` beside them.

qemu emulates the aarch64 code on this machine, so the timings here are emulation's, not a phone's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeadbd import FakeAdbd, unavailable_reason
from fakeadbd.sandbox import elf_header

pytestmark = [pytest.mark.arm64,
              pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")]
pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from device_runner.__main__ import main  # noqa: E402
from device_runner.adb import AdbShellTransport  # noqa: E402
from device_runner.facts import device_facts  # noqa: E402
from eval.dataset import load_folder  # noqa: E402
from prompts.strategies import Budget, get_strategy  # noqa: E402
from runtimes.base import GenerationSettings  # noqa: E402
import test_device_runner as x86_phone_tests  # noqa: E402
from ties import Ties  # noqa: E402

# The x86 loopback-phone tests' adb key fixture and phone-case helpers.
key = x86_phone_tests.key
_model, _rows, _run, _trust = x86_phone_tests._model, x86_phone_tests._rows, x86_phone_tests._run, x86_phone_tests._trust

ROOT = Path(__file__).resolve().parents[1]
HOST_BIN = x86_phone_tests.HOST_BIN  # android/build/host/bin: the x86-64 loopback phone's runner
ARM64_BIN = ROOT / "android" / "build" / "arm64-v8a-static" / "bin"
RUNNER = ARM64_BIN / "ew_llama"
needs_arm64_runner = pytest.mark.skipif(
    not RUNNER.is_file(), reason="no static aarch64 ew_llama: `make android-arm64` "
    "(android/build.sh --abi arm64-v8a --toolchain zig --out android/build/arm64-v8a-static)")

EM_AARCH64 = 183
PT_INTERP = 3


@needs_arm64_runner
def test_static_runner_is_aarch64_and_needs_no_loader() -> None:
    for binary in (RUNNER, ARM64_BIN / "llama-completion", ARM64_BIN / "llama-bench"):
        elf = elf_header(binary)
        assert elf is not None, f"{binary} is not an ELF file"
        assert elf["class"] == 64 and elf["little_endian"], elf
        assert elf["e_machine"] == EM_AARCH64, f"{binary.name}: e_machine {elf['e_machine']}, not aarch64"
        assert elf["e_type"] in (2, 3), elf  # ET_EXEC, or ET_DYN for a static PIE
        assert PT_INTERP not in elf["program_headers"], f"{binary.name} names a dynamic loader (PT_INTERP)"
    flags = (ARM64_BIN.parent / "llamacpp.flags").read_text()
    assert "aarch64-linux-musl" in flags and "static" in flags, flags


# ---- the arm64 loopback phone ----------------------------------------------------------------

@pytest.fixture(scope="module")
def arm64_phone(tmp_path_factory: pytest.TempPathFactory, key: Path, aarch64_binfmt: str) -> Iterator[FakeAdbd]:
    with FakeAdbd(root=tmp_path_factory.mktemp("arm64phone") / "device", arch="arm64") as dev:
        _trust(dev, key)
        yield dev


@needs_arm64_runner
def test_arm64_phone_says_aarch64_and_runs_the_static_runner(arm64_phone: FakeAdbd, key: Path) -> None:
    t = AdbShellTransport(arm64_phone.serial, key=key)
    t.connect()
    try:
        facts = device_facts(t)
        assert facts["abi"] == "arm64-v8a" and facts["cpu_cores"] == 8
        assert t.shell("uname -m").out == "aarch64\n" and t.shell("arch").out == "aarch64\n"
        assert "CPU architecture: 8" in t.shell("cat /proc/cpuinfo").out
        stock = ARM64_BIN / "llama-completion"
        t.push(stock, "/data/local/tmp/llama-completion")
        t.shell("chmod 755 /data/local/tmp/llama-completion")
        version = t.shell("/data/local/tmp/llama-completion --version 2>&1")  # aarch64 code, via qemu
        assert version.rc == 0 and "version:" in version.out, version.out
        assert "for Linux aarch64" in version.out, version.out  # llama.cpp's build target
        t.push(RUNNER, "/data/local/tmp/ew_llama")
        t.shell("chmod 755 /data/local/tmp/ew_llama")
        ours = t.shell("/data/local/tmp/ew_llama --version 2>&1")
        assert ours.rc == 0 and "NEON = 1" in ours.out, ours.out  # ggml's aarch64 CPU features
    finally:
        t.close()


@pytest.mark.model
@needs_arm64_runner
@pytest.mark.skipif(_model() is None, reason="the default GGUF is not downloaded (make bench once)")
@pytest.mark.skipif(not (HOST_BIN / "ew_llama").is_file(),
                    reason="no host ew_llama for the x86-64 loopback phone: `make android-host`")
def test_incremental_case_on_arm64_phone_equals_x86_phone(arm64_phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    """User 0 of a one-session sample, strategy `incremental` (multiple-choice answers under a
    grammar, greedy), three ways: on the arm64 loopback phone with the static aarch64 runner
    (qemu), on the x86-64 loopback phone with the host-built ew_llama, and with --device host
    (llama-cpp-python).  The two phones run the same program on the same files
    (android/run_ew_llama.sh, one process, the same GBNF), so only the CPU
    differs, and with it the order in which the matrix kernels (NEON on arm64, AVX2 here) add
    up: logits equal to a few thousandths.  Answers must be equal, except where the model is
    tied between two choices: measured (CI, session 4), question 2 of this case (the TV
    brightness) was answered ' 58' on x86-64 and ' 60' on arm64, and the host's logits after
    "set to " were 25.244 for '5' and 25.241 for '6', a 0.003 tie.  So each answer that differs
    must sit on such a tie (the host's logits of the two answers' first differing tokens within
    TIE_LOGITS), and at most two may differ; an arm64 build that computes wrong logits differs
    on questions the model is sure of and fails.

    The host is compared the same way: it evaluates the same prompts along another path
    (llama-cpp-python's KV cache reuse, other batch splits), and breaks ties its own way.

    One session is the smallest case (one user, two shared prefixes, about 10 questions);
    qemu takes a minute or two on it (one ew_llama process), the host seconds."""
    pytest.importorskip("llama_cpp", reason="make install-llamacpp")
    common = ["--strategy", "incremental", "--users", "0", "--threads", "2", "--context", "2048",
              "--sample-users", "1", "--sample-sessions", "1"]
    arm, x86, host = tmp_path / "arm64", tmp_path / "x86", tmp_path / "host"
    assert _run(arm64_phone, key, arm, *common, "--runner-bin", str(ARM64_BIN)) == 0
    with FakeAdbd(root=tmp_path / "x86phone") as x86_phone:
        _trust(x86_phone, key)
        x86_phone.sandbox.install_host_libraries(HOST_BIN / "ew_llama")
        assert _run(x86_phone, key, x86, *common, "--runner-bin", str(HOST_BIN)) == 0
    assert main(["--device", "host", "--data", "sample", "--out", str(host), "--no-progress", *common]) == 0
    [on_arm], [on_x86], [on_host] = _rows(arm), _rows(x86), _rows(host)
    # It was the aarch64 binary that ran (pushed by sha256), emulated, on the phone that says arm64.
    assert on_arm["device"]["abi"] == "arm64-v8a" and on_arm["device"]["kind"] == "android"
    assert on_arm["runtime_details"]["binary_sha256"] == hashlib.sha256(RUNNER.read_bytes()).hexdigest()
    assert on_arm["parse_errors"] == [] and on_arm["prompt_notes"]["questions"] > 0
    assert on_arm["prompt_sha256"] == on_x86["prompt_sha256"] == on_host["prompt_sha256"]  # the same requests
    answers = {name: row["output"].splitlines() for name, row in (("arm64", on_arm), ("x86", on_x86),
                                                                   ("host", on_host))}
    users = load_folder(arm / "sample-data")
    plan = get_strategy("incremental").plan(users[0], len(users[0].routines), Budget(2048), GenerationSettings())
    assert plan.prompt_sha256 == on_arm["prompt_sha256"]  # the requests the phones answered
    ties = Ties(_model())
    differ_host = ties.check(plan, answers["arm64"], answers["host"])
    print(f"\narm64 case under qemu emulation (not a phone's time): {on_arm['wall_s']:.1f} s; x86-64 loopback "
          f"phone: {on_x86['wall_s']:.1f} s; --device host: {on_host['wall_s']:.1f} s; "
          f"{on_arm['prompt_notes']['questions']} questions; answers that differ from the host's, with the "
          f"host's logit gap: {differ_host}")
    differ_x86 = ties.check(plan, answers["arm64"], answers["x86"])
    print(f"answers that differ between the arm64 and x86-64 phones: {differ_x86}")
    assert len(differ_x86) <= 2, f"arm64: {answers['arm64']}\nx86-64: {answers['x86']}"
    if not differ_x86:
        assert on_arm["routines"] == on_x86["routines"] and on_arm["score"] == on_x86["score"]
