"""The services a host can OPEN: shell (legacy and v2), exec, and sync (file transfer).

`find_service(name, daemon)` maps a service string to a function that runs it on a Stream.

- `shell:CMD`: stdout and stderr merged, raw bytes, no exit status (legacy).
- `shell,v2,raw:CMD` / `shell,v2,pty:CMD` (any option list before ':'): shell protocol v2
  packets, stdout/stderr apart, exit status last. No pseudo-terminal is ever made: "pty" is
  served like "raw". An empty command runs `sh` reading commands from stdin.
- `exec:CMD`: raw bytes; stderr merged into stdout, as real adbd does.
- `sync:`: STAT, STA2, LST2, LIST, LIS2, SEND, RECV, QUIT, as in AOSP's file_sync_service.cpp.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING
from pathlib import Path

from .connection import Stream, StreamClosed
from .protocol import (SHELL_CLOSE_STDIN, SHELL_EXIT, SHELL_HEADER, SHELL_STDERR, SHELL_STDIN,
                       SHELL_STDOUT, SYNC_DATA_MAX, SYNC_DENT_V1, SYNC_DENT_V2, SYNC_PATH_MAX,
                       SYNC_REQUEST, SYNC_STAT_V1, SYNC_STAT_V2, shell_packet)
from .sandbox import DeviceSandbox

if TYPE_CHECKING:
    from .server import FakeAdbd


def find_service(name: str, daemon: FakeAdbd) -> Callable[[Stream], None] | None:
    """The function serving `name`, or None (the host then gets CLSE, as for unknown services)."""
    if name.startswith("shell:") or name.startswith("shell,"):
        options, _, command = name[len("shell"):].partition(":")
        v2 = "v2" in options.split(",")
        return functools.partial(run_shell, daemon=daemon, command=command, v2=v2)
    if name.startswith("exec:"):
        return functools.partial(run_shell, daemon=daemon, command=name[len("exec:"):], v2=False)
    if name.startswith("sync:"):
        return functools.partial(run_sync, sandbox=daemon.sandbox)
    return None


# ---- shell and exec ----

def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and everything it started (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _shell_packets(stream: Stream) -> Iterator[tuple[int, bytes]]:
    """Shell-v2 packets from the host, across WRTE boundaries; ends when the stream closes."""
    while True:
        try:
            packet_id, length = SHELL_HEADER.unpack(stream.read_exact(SHELL_HEADER.size))
            yield packet_id, stream.read_exact(length)
        except StreamClosed:
            return


def _feed_stdin(stream: Stream, proc: subprocess.Popen[bytes], v2: bool) -> None:
    """Host -> command's stdin. The stream closing (host CLSE, dropped connection) kills it."""
    stdin = proc.stdin
    assert stdin is not None

    def deliver(data: bytes) -> None:
        nonlocal stdin
        if stdin is None:
            return
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            stdin = None  # the command stopped reading; keep acknowledging the host

    if v2:
        for packet_id, data in _shell_packets(stream):
            if packet_id == SHELL_STDIN:
                deliver(data)
            elif packet_id == SHELL_CLOSE_STDIN and stdin is not None:
                try:
                    stdin.close()
                except OSError:
                    pass
                stdin = None
            # SHELL_WINDOW_SIZE_CHANGE: there is no terminal to resize.
    else:
        while chunk := stream.read_chunk():
            deliver(chunk)
    _kill(proc)
    if stdin is not None:
        try:
            stdin.close()
        except OSError:
            pass


def _pump(pipe: IO[bytes], stream: Stream, packet_id: int | None, proc: subprocess.Popen[bytes]) -> None:
    """Command output -> host, as raw bytes (packet_id None) or shell-v2 packets."""
    try:
        while chunk := pipe.read1(SYNC_DATA_MAX):
            stream.write(chunk if packet_id is None else shell_packet(packet_id, chunk))
    except StreamClosed:
        _kill(proc)
    finally:
        pipe.close()


def run_shell(stream: Stream, *, daemon: FakeAdbd, command: str, v2: bool) -> None:
    """Run `sh -c command` in the sandbox, wired to the stream; see the module docstring."""
    proc = daemon.sandbox.spawn(command or None, merge_stderr=not v2)
    daemon._track_process(proc)
    outputs = [(proc.stdout, SHELL_STDOUT if v2 else None)]
    if v2:
        outputs.append((proc.stderr, SHELL_STDERR))
    pumps = [threading.Thread(target=_pump, args=(pipe, stream, packet_id, proc), daemon=True,
                              name=f"{threading.current_thread().name}-out{packet_id or 1}")
             for pipe, packet_id in outputs]
    feeder = threading.Thread(target=_feed_stdin, args=(stream, proc, v2), daemon=True,
                              name=f"{threading.current_thread().name}-stdin")
    for thread in [*pumps, feeder]:
        thread.start()
    try:
        daemon._shell_started(stream, command)
        for pump in pumps:
            pump.join()
        status = proc.wait()
        if v2 and not stream.closed:
            code = status if status >= 0 else 128 - status  # killed by signal N: 128 + N
            stream.write(shell_packet(SHELL_EXIT, bytes([code & 0xFF])))
    finally:
        stream.close()  # wakes the stdin feeder
        feeder.join()
        for pump in pumps:
            pump.join()
        proc.wait()


# ---- sync ----

class _SyncFail(Exception):
    """A sync request failed; the message goes to the host in a FAIL reply."""


def _fail(stream: Stream, message: str) -> None:
    raw = message.encode()
    stream.write(SYNC_REQUEST.pack(b"FAIL", len(raw)) + raw)


def run_sync(stream: Stream, *, sandbox: DeviceSandbox) -> None:
    """Serve sync requests until QUIT, a failed request, or the stream closing."""
    handlers: dict[bytes, Callable[[Stream, DeviceSandbox, str], bool]] = {
        b"STAT": _stat_v1, b"STA2": _stat_v2, b"LST2": _lstat_v2, b"LIST": _list_v1,
        b"LIS2": _list_v2, b"SEND": _send, b"RECV": _recv,
    }
    while True:
        try:
            request, length = SYNC_REQUEST.unpack(stream.read_exact(SYNC_REQUEST.size))
        except StreamClosed:
            return
        if request == b"QUIT":
            return
        if length > SYNC_PATH_MAX:
            _fail(stream, "path too long")
            return
        path = stream.read_exact(length).decode("utf-8", "surrogateescape")
        handler = handlers.get(request)
        if handler is None:
            _fail(stream, f"unknown command {request!r}")
            return
        if not handler(stream, sandbox, path):
            return  # adbd ends the sync session after a failure


def _lstat(sandbox: DeviceSandbox, path: str, follow: bool) -> tuple[int, os.stat_result | None]:
    """(0, stat) or (errno, None) for a device path."""
    try:
        return 0, os.stat(sandbox.host(path, follow_last=follow), follow_symlinks=follow)
    except OSError as exc:
        return exc.errno or errno.EIO, None


def _stat_v1(stream: Stream, sandbox: DeviceSandbox, path: str) -> bool:
    """STAT: lstat() as mode, size, mtime (u32 each); all zero when the path is missing."""
    _, st = _lstat(sandbox, path, follow=False)
    fields = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF) if st else (0, 0, 0)
    stream.write(SYNC_STAT_V1.pack(b"STAT", *fields))
    return True


def _v2_fields(st: os.stat_result | None) -> tuple[int, ...]:
    if st is None:
        return (0,) * 10
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            int(st.st_atime), int(st.st_mtime), int(st.st_ctime))


def _stat_v2(stream: Stream, sandbox: DeviceSandbox, path: str, *, request: bytes = b"STA2",
             follow: bool = True) -> bool:
    """STA2 (stat) / LST2 (lstat): the full stat, or the errno in `error`."""
    error, st = _lstat(sandbox, path, follow=follow)
    stream.write(SYNC_STAT_V2.pack(request, error, *_v2_fields(st)))
    return True


def _lstat_v2(stream: Stream, sandbox: DeviceSandbox, path: str) -> bool:
    return _stat_v2(stream, sandbox, path, request=b"LST2", follow=False)


def _list(stream: Stream, sandbox: DeviceSandbox, path: str, v2: bool) -> bool:
    """LIST/LIS2: one DENT/DNT2 per entry (with '.' and '..', as readdir gives), then DONE."""
    out = bytearray()
    try:
        canonical = sandbox.resolve(path)
        folder = sandbox.root / canonical.lstrip("/")
        names = [".", ".."] + sorted(os.listdir(folder))
    except OSError:
        names = []  # adbd answers an unreadable folder with just DONE
    for name in names:
        if name == ".." and canonical != "/":
            target = folder.parent
        else:
            target = folder if name in (".", "..") else folder / name
        error, st = 0, None
        try:
            st = os.lstat(target)
        except OSError as exc:
            error = exc.errno or errno.EIO
            if not v2:
                continue
        raw = os.fsencode(name)
        if v2:
            out += SYNC_DENT_V2.pack(b"DNT2", error, *_v2_fields(st), len(raw)) + raw
        else:
            out += SYNC_DENT_V1.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF,
                                     int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw
    done = SYNC_DENT_V2.pack(b"DONE", *(0,) * 12) if v2 else SYNC_DENT_V1.pack(b"DONE", 0, 0, 0, 0)
    stream.write(bytes(out) + done)
    return True


def _list_v1(stream: Stream, sandbox: DeviceSandbox, path: str) -> bool:
    return _list(stream, sandbox, path, v2=False)


def _list_v2(stream: Stream, sandbox: DeviceSandbox, path: str) -> bool:
    return _list(stream, sandbox, path, v2=True)


def _create(sandbox: DeviceSandbox, path: str) -> tuple[Path, IO[bytes]]:
    """Open a device path for writing as adbd does: replace the old file, make parent folders."""
    if path.endswith("/"):  # open(2) refuses to create "name/" as a file
        raise _SyncFail(f"couldn't create file: {os.strerror(errno.EISDIR)}")
    try:
        canonical = sandbox.resolve(path, follow_last=False)
    except OSError as exc:
        raise _SyncFail(f"couldn't create file: {exc.strerror}") from None
    host = sandbox.root / canonical.lstrip("/")
    parent_missing = not host.parent.is_dir()
    denied = sandbox.write_denied(canonical)
    if denied is not None:
        what = "secure_mkdirs() failed" if parent_missing else "couldn't create file"
        raise _SyncFail(f"{what}: {os.strerror(denied)}")
    try:
        if host.is_symlink() or host.is_file():
            host.unlink()
        missing = [p for p in [host.parent, *host.parent.parents] if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(mode=0o775)
            sandbox.chown_for_shell(folder)
    except OSError as exc:
        raise _SyncFail(f"secure_mkdirs() failed: {exc.strerror}") from None
    try:
        return host, open(host, "wb")
    except OSError as exc:
        raise _SyncFail(f"couldn't create file: {exc.strerror}") from None


def _send(stream: Stream, sandbox: DeviceSandbox, spec: str) -> bool:
    """SEND "path,mode", DATA chunks (<= 64 KiB), DONE(mtime) -> OKAY or FAIL(message).

    On failure adbd replies FAIL at once, then reads and discards DATA until DONE, and a
    half-written file is removed (also when the connection drops mid-push).
    """
    path, comma, mode_text = spec.rpartition(",")
    if not comma or not mode_text.isdigit():
        _fail(stream, "missing , in ID_SEND_V1" if not comma else "bad mode")
        return False
    mode = int(mode_text)
    failure: str | None = None
    host: Path | None = None
    out: IO[bytes] | None = None
    link_target = bytearray()
    if not stat.S_ISLNK(mode):
        try:
            host, out = _create(sandbox, path)
        except _SyncFail as exc:
            failure = str(exc)
            _fail(stream, failure)
    finished = False
    try:
        while True:
            request, size = SYNC_REQUEST.unpack(stream.read_exact(SYNC_REQUEST.size))
            if request == b"DONE":
                mtime = size
                break
            if request != b"DATA" or size > SYNC_DATA_MAX:
                reason = "invalid data message" if request != b"DATA" else \
                    f"DATA chunk of {size} bytes exceeds the {SYNC_DATA_MAX}-byte maximum"
                if failure is None:
                    _fail(stream, reason)
                return False
            data = stream.read_exact(size)
            if out is not None:
                try:
                    out.write(data)
                except OSError as exc:
                    failure = f"write failed: {exc.strerror}"
                    _fail(stream, failure)
                    out.close()
                    out = None
            elif stat.S_ISLNK(mode):
                link_target += data
        if failure is not None:
            return False
        if stat.S_ISLNK(mode):
            host = _make_link(sandbox, path, link_target.rstrip(b"\0"))
        else:
            assert out is not None and host is not None
            out.close()
            out = None
            # adbd copies the owner's permission bits to group and others.
            perms = mode & 0o777
            perms |= (perms >> 3) & 0o070
            perms |= (perms >> 3) & 0o007
            os.chmod(host, perms)
            sandbox.chown_for_shell(host)
        os.utime(host, (mtime, mtime), follow_symlinks=False)
        stream.write(SYNC_REQUEST.pack(b"OKAY", 0))
        finished = True
        return True
    except _SyncFail as exc:
        _fail(stream, str(exc))
        return False
    finally:
        if out is not None:
            out.close()
        if not finished and host is not None and not stat.S_ISLNK(mode):
            host.unlink(missing_ok=True)


def _make_link(sandbox: DeviceSandbox, path: str, target: bytes) -> Path:
    canonical = sandbox.resolve(path, follow_last=False)
    denied = sandbox.write_denied(canonical)
    if denied is not None:
        raise _SyncFail(f"symlink failed: {os.strerror(denied)}")
    host = sandbox.root / canonical.lstrip("/")
    try:
        host.parent.mkdir(parents=True, exist_ok=True)
        if host.is_symlink() or host.exists():
            host.unlink()
        os.symlink(os.fsdecode(target), host)
    except OSError as exc:
        raise _SyncFail(f"symlink failed: {exc.strerror}") from None
    return host


def _recv(stream: Stream, sandbox: DeviceSandbox, path: str) -> bool:
    """RECV path -> DATA chunks of <= 64 KiB, then DONE; or FAIL("open failed: ...")."""
    try:
        source = open(sandbox.host(path), "rb")
    except OSError as exc:
        _fail(stream, f"open failed: {exc.strerror}")
        return False
    out = bytearray()
    with source:
        while True:
            try:
                chunk = source.read(SYNC_DATA_MAX)
            except OSError as exc:
                stream.write(bytes(out))
                _fail(stream, f"read failed: {exc.strerror}")
                return False
            if not chunk:
                break
            out += SYNC_REQUEST.pack(b"DATA", len(chunk)) + chunk
            if len(out) >= stream.max_payload:  # batch packets into full WRTEs
                stream.write(bytes(out))
                out.clear()
    stream.write(bytes(out) + SYNC_REQUEST.pack(b"DONE", 0))
    return True
