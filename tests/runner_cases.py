"""What the tests of our four on-device runners share (tests/test_ew_llama.py, test_ew_ort.py,
test_ew_et.py, test_ew_mnn.py): a stand-in runner binary (a shell script printing the records of
every request in its case), a case folder, android/run_ew_*.sh run under sh, mksh and busybox with
the checks of its record stream and of the one sentence for a runner that dies, and, through the
loopback phone (tests/fakeadbd), the command line, a stand-in that crashes mid-case, and a phone
that lacks one of the real runner's libraries.  Each test file keeps what is its runner's own."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from device_runner import engines

ROOT = Path(__file__).resolve().parents[1]
SHELLS = {"sh": ["sh"], "mksh": ["mksh"], "busybox": ["busybox", "sh"]}

# The stand-in's EW_STAT numbers that every runner prints (a runner's own keys follow).
STAT = ("prompt_tokens=120 reused_tokens=100 evaluated_tokens=20 generated_tokens=3 load_ms=250 prefill_ms=100 "
        "ttft_ms=105 decode_ms=40 sampling_ms=1.5 total_ms=150")

# A stand-in runner NAME: the records of every request in the case; CRASH_AT=ID dies by SIGSEGV there,
# after CRASH_LOG on stderr.  It appends CALL (its arguments, by default) to calls.txt beside itself.
_FAKE_RUNNER = r"""#!/bin/sh
echo @CALL@ >> "$(dirname "$0")/calls.txt"
case_dir=
while [ $# -gt 0 ]; do
  case "$1" in --case) case_dir=$2; shift ;; esac; shift
done
echo "EW_NOTE @NAME@: 2 threads"
while IFS="$(printf '\t')" read -r id rest; do
  [ -n "$id" ] || continue
  echo "EW_NEXT request $id"
  if [ "$id" = "${CRASH_AT:-}" ]; then echo "@CRASH_LOG@" >&2; kill -SEGV $$; fi
  echo "EW_BEGIN request $id"
  echo "EW_STAT @STAT@"
  printf 'EW_RC 0\nEW_RSS_KB 307200\nEW_WALL_MS @WALL_MS@\nEW_TEXT IDQ3\nEW_END request %s\n' "$id"
done < "$case_dir/requests.tsv"
"""


def fake_runner(name: str, stat: str, crash_log: str, *, call: str = '"$@"', wall_ms: int = 150) -> str:
    """The stand-in's script (see _FAKE_RUNNER)."""
    return (_FAKE_RUNNER.replace("@CALL@", call).replace("@NAME@", name).replace("@CRASH_LOG@", crash_log)
            .replace("@STAT@", stat).replace("@WALL_MS@", str(wall_ms)))


def install_fake(folder: Path, name: str, script: str) -> Path:
    """`script` as the executable `folder`/`name`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(script)
    (folder / name).chmod(0o755)
    return folder


# Two questions; the first constrained to g1's choices (in the "plain" format: one per line).
PROMPTS = {"0000.prompt": "Instructions.\nQ: the volume?\nA:", "0001.prompt": "Instructions.\nQ: the light?\nA:"}
CHOICES_CASE = {**PROMPTS, "g1.choices": " 47\n none",
                "requests.tsv": "0000\t8\t0.0\t0\tg1.choices\t-\n0001\t8\t0.0\t0\t-\t-\n"}


def write_case(folder: Path, files: dict[str, str]) -> Path:
    """A case folder (device_runner/phone_runtime.py's layout): requests.tsv and the files it names."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def need_shell(shell: str) -> None:
    if shutil.which(SHELLS[shell][0]) is None:
        pytest.skip(f"no {SHELLS[shell][0]}")


def run_script(script: Path, shell: str, bin_dir: Path, model: Path, case: Path, *extra: str,
               unset: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    """android/run_ew_*.sh under `shell` with --threads 2 (and `extra`), its environment plus `env`
    less the variables `unset` names."""
    return subprocess.run([*SHELLS[shell], str(script), "--bin", str(bin_dir), "--model", str(model),
                           "--case", str(case), "--threads", "2", *extra], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in {**os.environ, **env}.items() if k not in unset})


def check_records(out: subprocess.CompletedProcess, name: str) -> Any:
    """The stand-in `name` ran the case through: its note, both requests' records and EW_DONE."""
    assert out.returncode == 0, out.stdout + out.stderr
    parsed = engines.parse_case_output(out.stdout)
    assert parsed.done and parsed.errors == [] and parsed.notes == [f"{name}: 2 threads"]
    assert [(r.kind, r.id) for r in parsed.records] == [("request", "0000"), ("request", "0001")]
    return parsed


def check_crash(out: subprocess.CompletedProcess, name: str, crash_log: str) -> None:
    """It died in the second request: the first request's record, then one sentence naming the
    runner, the signal, the request and its last log line; no EW_DONE, exit 5."""
    assert out.returncode == 5
    parsed = engines.parse_case_output(out.stdout)
    assert not parsed.done and [r.id for r in parsed.records] == ["0000"]
    [error] = parsed.errors
    assert error.startswith(f"{name} was killed by signal 11 while running request 0001"), error
    assert crash_log in error


# ---- through the loopback phone (import these only after pytest.importorskip("adb_shell")) ----

def phone_cli(dev: Any, key: Path, out: Path, runner_bin: Path, *extra: str, sessions: int = 3) -> int:
    """`python -m device_runner` on the loopback phone: 2 sample users, `sessions` sessions each."""
    import test_device_runner as phone_tests

    return phone_tests.main(["--device", dev.serial, "--adb-key", str(key), "--data", "sample", "--sample-users", "2",
                             "--sample-sessions", str(sessions), "--out", str(out), "--no-progress", "--runner-bin",
                             str(runner_bin), *extra])


def crash_then_resume(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture, name: str,
                      cli: Callable[..., int]) -> str:
    """A stand-in `name` (test_device_runner.STUB) that dies in user 1's second request, run by
    cli(dev, out, runner_bin, *extra): exit 2 and user 0's row only; then `--resume` (appended to
    extra) runs user 1 only.  Returns the first run's stderr (the sentence)."""
    import test_device_runner as phone_tests
    from fakeadbd import FakeAdbd

    bin_dir = install_fake(tmp_path / "stubbin", name, phone_tests.STUB)  # crashes when /data/local/tmp/stub-crash exists
    out = tmp_path / "out"
    with FakeAdbd(root=tmp_path / "phone") as dev:
        phone_tests._trust(dev, key)
        dev.sandbox.write_file("/data/local/tmp/stub-crash", "1\n")
        assert cli(dev, out, bin_dir) == 2
        err = capsys.readouterr().err
        assert [r["user"] for r in phone_tests._rows(out)] == [0]
        dev.host_path("/data/local/tmp/stub-crash").unlink()
        assert cli(dev, out, bin_dir, "--resume") == 0
    assert sorted(r["user"] for r in phone_tests._rows(out)) == [0, 1]
    return err


def alone(binary: Path, bin_dir: Path) -> Path:
    """A copy of the host-built `binary` in `bin_dir`, with no lib/ beside that folder (so its
    engine's libraries are not pushed with it); returns the folder."""
    bin_dir.mkdir(parents=True)
    shutil.copy2(binary, bin_dir / binary.name)
    return bin_dir


@contextmanager
def phone_lacking(root: Path, key: Path, binary: Path, pattern: str) -> Iterator[Any]:
    """A loopback phone with the host libraries `binary` needs, less those whose name matches `pattern`."""
    import test_device_runner as phone_tests
    from fakeadbd import FakeAdbd

    with FakeAdbd(root=root) as dev:
        phone_tests._trust(dev, key)
        dev.sandbox.install_host_libraries(binary)
        for lib in dev.sandbox.root.rglob(pattern):
            lib.unlink()
        yield dev
