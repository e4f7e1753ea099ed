"""One phone over ADB: connect, shell, push with a sha256 skip, reconnect on a dropped link.

The engine that runs on it is device_runner/phone_runtime.py; running the benchmark on one or
several phones is device_runner/devices.py.
"""

from __future__ import annotations

import posixpath
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

from .adb import PROJECT_DIR, RUN_DIR, AdbError, LinkLost, Transport, open_transport, q
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


PUSH_LINES_FROM = 16 << 20  # pushes from this size print progress and have their free space checked
PROGRESS_EVERY_S = 2.0  # at most one progress line per this many seconds
SPACE_MARGIN, SPACE_MARGIN_MIN = 0.05, 64 << 20  # kept free beyond the bytes pushed: 5%, at least 64 MiB


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 100 * scale else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} bytes"


def _hash_timeout(size: int) -> float:
    return max(600.0, size / (10 << 20))  # a slow phone's sha256sum: 10 MiB/s


@contextmanager
def _notice_if_slow(message: str, after_s: float = 1.5) -> Iterator[None]:
    """Print `message` if the block is still running after `after_s` (hashing gigabytes)."""
    timer = threading.Timer(after_s, say, [message + "..."])
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class PushProgress:
    """progress(bytes_done) for Transport.push: a line on stderr at most every 2 s, and only after
    another 5% or 30 s; finish() prints the average rate."""

    def __init__(self, label: str, total: int, clock: Any = time.monotonic) -> None:
        self.label, self.total, self.clock = label, total, clock
        self.started = self.last_at = clock()
        self.done = self.last_done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = self.clock()
        waited = now - self.last_at
        if waited < PROGRESS_EVERY_S or (done - self.last_done < self.total * 0.05 and waited < 30):
            return
        self.last_at, self.last_done = now, done
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate else float("inf")
        percent = 100 * done / max(self.total, 1)
        say(f"{self.label}: {done / 2**20:.0f} of {self.total / 2**20:.0f} MiB ({percent:.0f}%), "
            f"{rate / 2**20:.1f} MiB/s, {eta:.0f} s left")

    def finish(self) -> float:
        """Print and return the average rate in bytes per second."""
        seconds = max(self.clock() - self.started, 1e-9)
        rate = self.total / seconds
        say(f"{self.label}: pushed {_size(self.total)} in {seconds:.1f} s, {rate / 2**20:.1f} MiB/s")
        return rate


_DF_AVAIL = ("available", "avail", "free")
_DF_UNITS = {"1k-blocks": 1024, "1024-blocks": 1024, "512-blocks": 512, "4k-blocks": 4096}


def parse_df(text: str) -> tuple[int, str] | None:
    """(bytes available, mount point) from `df -k PATH` (toybox, busybox, GNU, old toolbox), or None.

    The row's fields may wrap after a long device name; old toolbox prints sizes like 7.3G and
    no mount column (the first field is the mount point then).
    """
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.lower().startswith("filesystem")), None)
    if at is None:
        return None
    header = lines[at].lower().replace("mounted on", "mounted_on").split()
    column = next((header.index(name) for name in _DF_AVAIL if name in header), None)
    rows = [line for line in lines[at + 1:] if line.strip() and not line.lower().startswith("df:")]
    if column is None or not rows:
        return None
    starts = [i for i, line in enumerate(rows) if not line[0].isspace()] or [0]
    fields = " ".join(rows[starts[-1]:]).split()  # the last row, joined if it wrapped
    if len(fields) <= column:
        return None
    mount = " ".join(fields[header.index("mounted_on"):]) if "mounted_on" in header and \
        len(fields) > header.index("mounted_on") else fields[0]
    value = fields[column]
    unit = next((scale for name, scale in _DF_UNITS.items() if name in header), None)
    if value.isdigit():
        return int(value) * (unit or 1024), mount
    human = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])i?B?", value, re.IGNORECASE)
    if human:
        return int(float(human.group(1)) * 1024 ** ("KMGT".index(human.group(2).upper()) + 1)), mount
    return None


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
        return bool(self.stage_all([(local, remote, executable)]))

    def stage_all(self, items: list[tuple[Path, str, bool]]) -> list[str]:
        """Push each (local, remote, executable) whose bytes the phone lacks; the remotes pushed.

        Every sha256 is compared first, then the phone's free space is checked for all that is
        missing (DeviceStopped, nothing pushed, when short), then the files are pushed.
        """
        todo: list[tuple[Path, str, bool, str]] = []
        for local, remote, executable in items:
            digest = self._local_sha256(local)
            if not self._has_copy(local, remote, digest):
                todo.append((local, remote, executable, digest))
        if not todo:
            return []
        self.check_free_space([(local, remote) for local, remote, _, _ in todo])
        for local, remote, executable, digest in todo:
            self._push(local, remote, executable, digest)
        return [remote for _, remote, _, _ in todo]

    def _local_sha256(self, local: Path) -> str:
        with _notice_if_slow(f"{self.serial}: sha256 of {local.name} ({_size(local.stat().st_size)}) on this "
                             "computer, once (cached by path, size and mtime)"):
            return file_sha256(local)

    def _has_copy(self, local: Path, remote: str, digest: str) -> bool:
        """Whether `remote` holds the same bytes: its size first (no hashing a different file), then sha256."""
        size = local.stat().st_size
        command = (f"[ \"$(stat -c %s {q(remote)} 2>/dev/null || echo {size})\" = {size} ] && "
                   f"sha256sum {q(remote)} 2>/dev/null")
        with _notice_if_slow(f"{self.serial}: comparing the sha256 of {remote} on the phone ({_size(size)})"):
            have = self.t.shell(command, _hash_timeout(size))
        return have.rc == 0 and have.out.split()[:1] == [digest]

    def _push(self, local: Path, remote: str, executable: bool, digest: str) -> None:
        folder = remote.rsplit("/", 1)[0]
        self.check_writable(folder)
        size = local.stat().st_size
        progress = PushProgress(f"{self.serial}: {local.name}", size) if size >= PUSH_LINES_FROM else None
        if progress:
            say(f"{self.serial}: pushing {local.name} ({size / 2**20:.0f} MiB)")
        self.t.push(local, remote + ".part", timeout=max(120.0, size / (1 << 20)), progress=progress)
        if progress:
            progress.finish()
        mode = "755" if executable else "644"
        self.t.run(f"chmod {mode} {q(remote)}.part && mv -f {q(remote)}.part {q(remote)}", 60, "finishing a push")
        with _notice_if_slow(f"{self.serial}: checking the sha256 of {remote} on the phone ({_size(size)})"):
            check = self.t.shell(f"sha256sum {q(remote)}", _hash_timeout(size))
        if check.out.split()[:1] != [digest]:
            raise LinkLost(f"{self.serial}: {remote} arrived corrupted (sha256 mismatch); pushing again")

    def check_free_space(self, pushes: list[tuple[Path, str]]) -> None:
        """DeviceStopped, with what to delete, when the phone lacks room for `pushes` (local, remote).

        Each file goes to REMOTE.part and replaces REMOTE only then, so an old copy still takes its
        room during the push: the new bytes are counted in full, plus a margin.  Small pushes (under
        PUSH_LINES_FROM in all) and folders whose `df` cannot be read are not checked (a note says so).
        """
        total = sum(local.stat().st_size for local, _ in pushes)
        if total < PUSH_LINES_FROM:
            return
        needs: dict[str, list[Any]] = {}  # mount point -> [bytes to push, free bytes, folders]
        spaces: dict[str, tuple[int, str] | None] = {}  # one `df` per folder
        for local, remote in pushes:
            folder = remote.rsplit("/", 1)[0] or "/"
            if folder not in spaces:
                spaces[folder] = self._free_space(folder)
            free = spaces[folder]
            if free is None:
                continue
            entry = needs.setdefault(free[1], [0, free[0], []])
            entry[0] += local.stat().st_size
            entry[2].append(folder)
        for mount, (to_push, free, folders) in needs.items():
            needed = to_push + max(int(to_push * SPACE_MARGIN), SPACE_MARGIN_MIN)
            if needed > free:
                folder = posixpath.commonpath(folders)
                raise DeviceStopped(self._no_space_message(needed, to_push, free, folder, mount))

    def _free_space(self, folder: str) -> tuple[int, str] | None:
        """(bytes available, mount point) of `folder` (or its nearest existing parent), or None."""
        parts = folder.strip("/").split("/")
        candidates = ["/" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)] + ["/"]
        command = f"for d in {' '.join(q(c) for c in candidates)}; do [ -d \"$d\" ] && exec df -k \"$d\"; done"
        result = self.t.shell(command, 30)
        parsed = parse_df(result.out) if result.rc == 0 else None
        if parsed is None:
            say(f"{self.serial}: could not read the free space of {folder} (`df -k` printed "
                f"{result.out.strip()[-200:]!r}); pushing without checking it.")
        return parsed

    def _no_space_message(self, needed: int, to_push: int, free: int, folder: str, mount: str) -> str:
        stage = self.options.stage_dir.rstrip("/")
        biggest = self._biggest_under(stage)
        head = (f"{self.serial}: not enough space on the phone: pushing {_size(to_push)} to {folder} needs "
                f"{_size(needed)} free on {mount} (with a margin; an old copy stays until the new one is complete), "
                f"but {_size(free)} is free; nothing was pushed")
        if not biggest:
            return (f"{head}, and nothing of this project's is stored under {stage}: free space on the phone "
                    "(Settings > Storage), then rerun with --resume.")
        listed = ", ".join(f"{path.removeprefix(stage + '/')} ({_size(size)})" for path, size in biggest[:6])
        chosen, freed = [], 0
        for path, size in biggest:
            if free + freed >= needed:
                break
            chosen.append(path)
            freed += size
        enough = "" if free + freed >= needed else (" (not enough on its own: free more in Settings > Storage "
                                                     "as well)")
        return (f"{head}. The biggest under {stage}: {listed}; delete what you no longer need, e.g. "
                f"`adb -s {self.serial} shell rm -r {' '.join(q(p) for p in chosen)}`{enough}, then rerun with "
                "--resume.")

    def _biggest_under(self, stage: str) -> list[tuple[str, int]]:
        """Files and folders two levels under `stage` (e.g. models/<sha>), biggest first, in bytes."""
        out = self.t.shell(f"du -k -a -d 2 {q(stage)} 2>/dev/null", 120).out
        sizes: dict[str, int] = {}
        for line in out.splitlines():
            kib, _, path = line.partition("\t")
            if kib.strip().isdigit() and path.startswith(stage + "/") and path != RUN_DIR:
                sizes[path] = int(kib) * 1024
        leaves = [(p, n) for p, n in sizes.items() if not any(o.startswith(p + "/") for o in sizes)]
        return sorted(leaves, key=lambda item: -item[1])

    def state(self) -> dict[str, Any]:
        return self.retrying(device_state, self.t)
