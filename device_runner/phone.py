"""One phone over ADB: connect, shell, push with a sha256 skip, reconnect on a dropped link.

The engine that runs on it is device_runner/phone_runtime.py; running the benchmark on one or
several phones is device_runner/devices.py.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

from .adb import PROJECT_DIR, AdbError, LinkLost, Transport, open_transport, q
from .facts import device_state
from .provenance import file_sha256


class DeviceStopped(HarnessError):
    """This phone cannot go on (link lost for good, a runner failure); the others continue."""


@dataclass(frozen=True)
class PhoneOptions:
    transport: str = "adb-shell"
    repeat: int = 1  # measured repetitions per case; timings are their median
    warmup: int = 0  # unmeasured runs before them
    thermal_limit_c: float | None = None  # wait before each case until below this
    thermal_zone: str = "battery"  # "battery" (dumpsys battery) or a thermal zone's type
    thermal_timeout_s: float = 600.0  # then run anyway, and record that
    thermal_poll_s: float = 5.0
    cooldown_s: float = 0.0  # pause after each case
    affinity: str | None = None  # taskset hex mask, e.g. "f0" for the big cores
    runner_bin: Path | None = None  # host folder with the runner binaries (default android/build/<abi>/bin)
    stage_dir: str = PROJECT_DIR
    reconnect_tries: int = 3
    case_timeout_s: float = 3600.0
    transport_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.warmup < 0:
            raise HarnessError(f"--repeat {self.repeat} must be >= 1 and --warmup {self.warmup} >= 0.")
        hex_digits = "0123456789abcdefABCDEF"
        if self.affinity is not None and not all(c in hex_digits for c in self.affinity.removeprefix("0x")):
            raise HarnessError(f"--affinity {self.affinity!r} is not a hex CPU mask like f0.")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Phone:
    """One connected phone: shell, staging with sha256 skip, reconnects."""

    def __init__(self, serial: str, options: PhoneOptions) -> None:
        self.serial = serial
        self.options = options
        self.transport: Transport | None = None
        self.reconnects = 0

    def connect(self) -> None:
        self.transport = open_transport(self.serial, self.options.transport, **self.options.transport_options)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def t(self) -> Transport:
        assert self.transport is not None
        return self.transport

    def reconnect(self, why: str) -> None:
        for attempt in range(1, self.options.reconnect_tries + 1):
            time.sleep(min(0.5 * 2 ** (attempt - 1), 10))
            say(f"{self.serial}: {why}; reconnecting ({attempt}/{self.options.reconnect_tries})")
            try:
                self.t.close()
                self.t.connect()
                self.reconnects += 1
                return
            except AdbError as exc:
                why = str(exc)
        raise DeviceStopped(f"{self.serial}: lost the connection and could not reconnect after "
                            f"{self.options.reconnect_tries} tries ({why}). Its finished rows are saved; check the "
                            "cable / Wi-Fi and rerun with --resume.")

    def retrying(self, action: Any, *args: Any) -> Any:
        """Run action(*args); on a dropped link reconnect and run it again (bounded)."""
        while True:
            try:
                return action(*args)
            except LinkLost as exc:
                if self.reconnects >= self.options.reconnect_tries * 4:
                    raise DeviceStopped(f"{self.serial}: the connection keeps dropping ({exc}); stopped this "
                                        "device. Rerun with --resume.") from None
                self.reconnect(str(exc))

    def check_writable(self, folder: str) -> None:
        result = self.t.shell(f"mkdir -p {q(folder)} && touch {q(folder)}/.ew_w && rm -f {q(folder)}/.ew_w", 30)
        if result.rc != 0:
            raise AdbError(f"{self.serial}: cannot write {folder} ({result.out.strip()}): without root, adb may write "
                           "only under /data/local/tmp and /sdcard. Keep the default staging folder, or run "
                           "`adb root` on a userdebug build first.")

    def stage(self, local: Path, remote: str, executable: bool = False) -> bool:
        """Push `local` to `remote` unless the phone already has the same bytes; True if pushed."""
        digest = file_sha256(local)
        have = self.t.shell(f"sha256sum {q(remote)} 2>/dev/null", 600)
        if have.rc == 0 and have.out.split()[:1] == [digest]:
            return False
        folder = remote.rsplit("/", 1)[0]
        self.check_writable(folder)
        size = local.stat().st_size
        if size > 16 << 20:
            say(f"{self.serial}: pushing {local.name} ({size / 2**20:.0f} MiB)")
        self.t.push(local, remote + ".part", timeout=max(120.0, size / (1 << 20)))
        mode = "755" if executable else "644"
        self.t.run(f"chmod {mode} {q(remote)}.part && mv -f {q(remote)}.part {q(remote)}", 60, "finishing a push")
        check = self.t.shell(f"sha256sum {q(remote)}", 600)
        if check.out.split()[:1] != [digest]:
            raise LinkLost(f"{self.serial}: {remote} arrived corrupted (sha256 mismatch); pushing again")
        return True

    def state(self) -> dict[str, Any]:
        return self.retrying(device_state, self.t)
