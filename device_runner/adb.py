"""Talking to phones over ADB: adb-shell (pure Python, default) or the `adb` binary.

Every remote command goes through `Transport.shell()`, which
- runs it in a subshell followed by an exit-status sentinel (the legacy `shell:` service
  returns no exit status; a missing sentinel means the link dropped before the command ended:
  real adb then exits 0 with no output);
- records the remote shell's pid (the process group adbd gave it) so that on timeout the
  whole group is killed on the phone;
- has a timeout.
Arguments are quoted by the callers with `q()` (shlex.quote): file, model and serial names
never reach the shell unquoted.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import select
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eval.errors import HarnessError, missing_dependency

PROJECT_DIR = "/data/local/tmp/edgewise"
RUN_DIR = f"{PROJECT_DIR}/run"
DEFAULT_TIMEOUT_S = 60.0
q = shlex.quote


class AdbError(HarnessError):
    """A phone problem with a sentence for the user."""


class LinkLost(AdbError):
    """The connection dropped (cable, Wi-Fi, reboot); reconnecting may help."""


class RemoteTimeout(AdbError):
    """A remote command ran past its timeout (its process group was killed)."""


@dataclass(frozen=True)
class ShellResult:
    rc: int
    out: str  # stdout and stderr together (the legacy shell service merges them)


def is_tcp_serial(serial: str) -> bool:
    return re.fullmatch(r"[\w.\-\[\]:]+:\d+", serial) is not None


def split_tcp(serial: str) -> tuple[str, int]:
    host, _, port = serial.rpartition(":")
    return host.strip("[]"), int(port)


def unauthorized_message(serial: str, key: Path) -> str:
    return (f"{serial} did not accept this computer's ADB key ({key}.pub): check the phone's screen for the "
            "'Allow USB debugging?' prompt, tap Allow (tick 'Always allow from this computer'), then rerun. "
            "If no prompt shows, toggle USB debugging off and on (Developer options).")


class Transport(Protocol):
    serial: str

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def shell(self, command: str, timeout: float = DEFAULT_TIMEOUT_S) -> ShellResult: ...

    def push(self, local: Path, remote: str, timeout: float | None = None,
             progress: Callable[[int], None] | None = None) -> None:
        """Copy `local` to `remote`; progress(bytes sent so far) as it goes, where the transport can."""

    def pull(self, remote: str, local: Path, timeout: float | None = None) -> None: ...


class _SentinelShell:
    """The sentinel/pidfile/timeout wrapping shared by both transports (subclasses: `_raw_shell`)."""

    serial: str

    def _raw_shell(self, command: str, timeout: float) -> str:
        raise NotImplementedError

    def shell(self, command: str, timeout: float = DEFAULT_TIMEOUT_S) -> ShellResult:
        token = secrets.token_hex(6)
        sentinel = f"__EW_RC_{token}__="
        pidfile = f"{RUN_DIR}/{token}.pid"
        wrapped = (f"mkdir -p {RUN_DIR} 2>/dev/null; echo $$ > {pidfile} 2>/dev/null; ({command}\n); "
                   f"echo {sentinel}$?; rm -f {pidfile}")
        try:
            out = self._raw_shell(wrapped, timeout)
        except RemoteTimeout:
            self._kill_group(pidfile)
            raise RemoteTimeout(f"{self.serial}: a command ran past its {timeout:.0f} s timeout and was stopped "
                                f"on the phone: {command[:120]!r}") from None
        at = out.rfind(sentinel)
        if at < 0:
            raise LinkLost(f"{self.serial}: the connection dropped before the command finished "
                           "(cable, Wi-Fi or a reboot?).")
        match = re.match(r"(\d+)", out[at + len(sentinel):])
        return ShellResult(int(match.group(1)) if match else 255, out[:at])

    def _kill_group(self, pidfile: str) -> None:
        """TERM, then KILL, the remote process group whose leader wrote `pidfile`."""
        script = (f"p=$(cat {pidfile} 2>/dev/null); [ -n \"$p\" ] || exit 0; kill -TERM -$p 2>/dev/null; "
                  f"sleep 1; kill -KILL -$p 2>/dev/null; rm -f {pidfile}")
        try:
            self._raw_shell(script, 15)
        except AdbError:
            pass  # the link is gone too: adbd kills the command itself when the connection ends

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT_S, what: str = "") -> str:
        """shell() that raises with the output when the exit status is not 0."""
        result = self.shell(command, timeout)
        if result.rc != 0:
            raise AdbError(f"{self.serial}: {what or command[:80]!r} failed (exit {result.rc}): "
                           f"{result.out.strip()[-600:]}")
        return result.out


# ---- adb-shell ---------------------------------------------------------------------------

def require_adb_shell() -> None:
    """A sentence, not a traceback, when the `adb` extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("adb_shell") is None:
        raise missing_dependency("Talking to phones over the default transport (adb-shell)", "adb_shell",
                                 "make install-adb", "or pip install -e '.[adb]'; or use --transport adb")


def _tcp_transport_class() -> type:
    from adb_shell.transport.tcp_transport import TcpTransport

    class FixedTcpTransport(TcpTransport):
        """adb-shell 0.4.4's TcpTransport with its two link bugs fixed (the one place we do it):

        1. bulk_write returned after one send() on a non-blocking socket, dropping the rest of a
           short write; adb-shell then desynchronised on large pushes (upstream issue #205).
           Here: keep sending until every byte is out, waiting with select() up to the timeout.
        2. A peer that closed the connection made recv() return b"", which adb-shell treated as
           "no data yet" and polled until its read timeout, then hit BrokenPipeError on the next
           call.  Here: an empty recv() raises ConnectionResetError at once.
        """

        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # A link that dies silently (Wi-Fi gone, no RST) errors out in ~25 s instead of
            # waiting for a long command's own timeout.
            self._connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, option):
                    self._connection.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

        def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
            view = memoryview(data)
            sent = 0
            while sent < len(view):
                _, writable, _ = select.select([], [self._connection], [], transport_timeout_s)
                if not writable:
                    from adb_shell.exceptions import TcpTimeoutException

                    raise TcpTimeoutException(f"Sending to {self._host}:{self._port} timed out "
                                              f"after {transport_timeout_s} s ({sent} of {len(view)} bytes sent)")
                try:
                    sent += self._connection.send(view[sent:])
                except BlockingIOError:
                    continue
            return sent

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

    return FixedTcpTransport


def default_key_path() -> Path:
    return Path(os.environ.get("ADB_VENDOR_KEYS_FILE", Path.home() / ".android" / "adbkey"))


def load_signer(key: Path | None = None) -> Any:
    """The RSA signer for ~/.android/adbkey, creating the key pair (adb's own format) if missing.

    adb keeps a PKCS#8 PEM private key in adbkey and the Android public key blob (base64) plus
    "user@host" in adbkey.pub; adb-shell's keygen writes the same, so a phone that trusts the
    workstation's `adb` trusts this too.
    """
    try:
        from adb_shell.auth.keygen import keygen, write_public_keyfile
        from adb_shell.auth.sign_pythonrsa import PythonRSASigner
    except ImportError as exc:
        require_adb_shell()  # the package itself is missing: the install sentence
        raise AdbError(f"adb-shell could not be imported ({exc}); reinstall it with `make install-adb`.") from None
    key = key or default_key_path()
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(key))
        os.chmod(key, 0o600)
        _fix_key_comment(key)
    elif not Path(f"{key}.pub").exists():
        write_public_keyfile(str(key), f"{key}.pub")
    return PythonRSASigner.FromRSAKeyPath(str(key))


def _fix_key_comment(key: Path) -> None:
    """adb writes 'user@host' after the key blob; the phone shows it in its prompt."""
    pub = Path(f"{key}.pub")
    blob = pub.read_text().split()[0]
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "user"
    pub.write_text(f"{blob} {user}@{socket.gethostname()}\n")


class AdbShellTransport(_SentinelShell):
    """adb-shell over TCP (host:port) or USB (a serial), with the fixed TCP transport."""

    def __init__(self, serial: str, key: Path | None = None, auth_timeout_s: float = 30.0,
                 io_timeout_s: float = 30.0, on_auth_prompt: Callable[[str], None] | None = None) -> None:
        self.serial = serial
        self.key = key or default_key_path()
        self.auth_timeout_s = auth_timeout_s
        self.io_timeout_s = io_timeout_s
        self.on_auth_prompt = on_auth_prompt
        self._device: Any = None

    def connect(self) -> None:
        require_adb_shell()
        from adb_shell.adb_device import AdbDevice
        from adb_shell.exceptions import AdbTimeoutError, DeviceAuthError, TcpTimeoutException

        signer = load_signer(self.key)
        self.close()
        transport = self._usb_transport() if not is_tcp_serial(self.serial) else \
            _tcp_transport_class()(*split_tcp(self.serial))
        device = AdbDevice(transport, default_transport_timeout_s=self.io_timeout_s)

        def prompt(_: Any) -> None:
            if self.on_auth_prompt:
                self.on_auth_prompt(f"{self.serial}: waiting up to {self.auth_timeout_s:.0f} s for you to allow this "
                                    "computer on the phone ('Allow USB debugging?').")
        try:
            device.connect(rsa_keys=[signer], auth_timeout_s=self.auth_timeout_s,
                           transport_timeout_s=self.io_timeout_s, read_timeout_s=self.io_timeout_s,
                           auth_callback=prompt)
        except (AdbTimeoutError, TcpTimeoutException, DeviceAuthError):
            device.close()
            raise AdbError(unauthorized_message(self.serial, self.key)) from None
        except (ConnectionRefusedError, socket.gaierror, TimeoutError) as exc:
            device.close()
            raise AdbError(f"Cannot reach {self.serial} ({exc}). On the phone: Developer options > Wireless "
                           "debugging (or `adb tcpip 5555` over USB); check the address with `adb devices`.") from None
        except OSError as exc:
            device.close()
            raise LinkLost(f"{self.serial}: the connection dropped while connecting ({exc}).") from None
        self._device = device

    def _usb_transport(self) -> Any:
        try:
            from adb_shell.transport.usb_transport import UsbTransport
        except ImportError:
            raise AdbError(
                f"'{self.serial}' is a USB serial, and USB needs libusb: pip install 'adb-shell[usb]' and the "
                "libusb-1.0 library (Debian: apt install libusb-1.0-0). Or use --transport adb, or connect over "
                "TCP (`adb tcpip 5555`, then --device PHONE_IP:5555).") from None
        from adb_shell.exceptions import UsbDeviceNotFoundError

        try:
            return UsbTransport.find_adb(serial=self.serial, default_transport_timeout_s=self.io_timeout_s)
        except UsbDeviceNotFoundError:
            try:
                found = [t.serial_number for t in UsbTransport.find_all_adb_devices()]
            except Exception:  # noqa: BLE001 - listing is best effort
                found = []
            raise AdbError(f"No phone with serial '{self.serial}' on USB. Connected: "
                           f"{', '.join(found) or 'none'}. Check the cable and `adb devices`.") from None
        except Exception as exc:
            if "BUSY" in str(exc).upper() or "ACCESS" in str(exc).upper():
                raise AdbError(f"The USB interface of {self.serial} is held by another program, usually the adb "
                               "server: run `adb kill-server` and retry (or use --transport adb).") from None
            raise

    def close(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            except OSError:
                pass
            self._device = None

    def _need(self) -> Any:
        if self._device is None:
            raise LinkLost(f"{self.serial}: not connected.")
        return self._device

    def _raw_shell(self, command: str, timeout: float) -> str:
        from adb_shell.exceptions import AdbTimeoutError, TcpTimeoutException

        device = self._need()
        started = time.monotonic()
        try:
            # A command may print nothing for a long time (one long generation): reads wait up to its
            # own timeout; a closed link is still noticed at once (FixedTcpTransport.bulk_read).
            return device.shell(command, timeout_s=timeout, read_timeout_s=timeout + 5,
                                transport_timeout_s=timeout + 5, decode=False).decode("utf-8", "replace")
        except (AdbTimeoutError, TcpTimeoutException) as exc:
            # The stream may still deliver packets later: start a fresh connection (adbd hangs up
            # the old one's commands), then the caller kills the remote process group.
            self.close()
            if time.monotonic() - started < timeout - 0.5:
                raise LinkLost(f"{self.serial}: the phone stopped answering ({exc}).") from None
            self.connect()
            raise RemoteTimeout(f"{self.serial}: timed out") from None
        except OSError as exc:
            self.close()
            raise LinkLost(f"{self.serial}: the connection dropped ({exc}).") from None

    def push(self, local: Path, remote: str, timeout: float | None = None,
             progress: Callable[[int], None] | None = None) -> None:
        from adb_shell.exceptions import AdbTimeoutError, PushFailedError, TcpTimeoutException

        device = self._need()
        sent = 0

        def chunk_sent(_path: str, size: int, _total: int) -> None:  # adb-shell passes each chunk's size
            nonlocal sent
            sent += size
            if progress is not None:
                progress(sent)
        try:
            device.push(str(local), remote, st_mode=0o100755 if os.access(local, os.X_OK) else 0o100644,
                        progress_callback=chunk_sent if progress is not None else None,
                        read_timeout_s=timeout or self.io_timeout_s, transport_timeout_s=self.io_timeout_s)
        except PushFailedError as exc:
            raise AdbError(_push_failure(self.serial, remote, str(exc))) from None
        except (OSError, TcpTimeoutException, AdbTimeoutError) as exc:
            self.close()
            raise LinkLost(f"{self.serial}: the connection dropped while pushing {local.name} ({exc}).") from None

    def pull(self, remote: str, local: Path, timeout: float | None = None) -> None:
        from adb_shell.exceptions import AdbTimeoutError, TcpTimeoutException

        device = self._need()
        try:
            device.pull(remote, str(local), read_timeout_s=timeout or self.io_timeout_s,
                        transport_timeout_s=self.io_timeout_s)
        except (OSError, TcpTimeoutException, AdbTimeoutError) as exc:
            self.close()
            raise LinkLost(f"{self.serial}: the connection dropped while pulling {remote} ({exc}).") from None


def _push_failure(serial: str, remote: str, detail: str) -> str:
    if "Read-only" in detail or "Permission denied" in detail or "denied" in detail.lower():
        return (f"{serial}: cannot write {remote} ({detail.strip()}): without root, adb may write only under "
                "/data/local/tmp and /sdcard. Keep the default staging folder, or run `adb root` on a userdebug "
                "build first.")
    return f"{serial}: pushing to {remote} failed: {detail.strip()}"


# ---- the adb binary ----------------------------------------------------------------------

class AdbBinaryTransport(_SentinelShell):
    """Google's `adb` client (`--transport adb`); honours ANDROID_ADB_SERVER_PORT like adb does."""

    def __init__(self, serial: str, adb: str | None = None, env: dict[str, str] | None = None,
                 server_port: int | None = None) -> None:
        import shutil

        self.serial = serial
        self.adb = adb or os.environ.get("ADB") or shutil.which("adb") or ""
        self.env = env
        self.server_port = server_port

    def _argv(self, *args: str, with_serial: bool = True) -> list[str]:
        port = ["-P", str(self.server_port)] if self.server_port else []
        return [self.adb, *port, *(["-s", self.serial] if with_serial else []), *args]

    def _run(self, *args: str, timeout: float, with_serial: bool = True) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(self._argv(*args, with_serial=with_serial), capture_output=True, timeout=timeout,
                                  env=self.env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteTimeout(f"{self.serial}: adb {args[0]} timed out") from None

    def connect(self) -> None:
        if not self.adb or not os.access(self.adb, os.X_OK):
            raise AdbError("No adb binary: install Android platform-tools (Debian: apt install adb) or set ADB=path, "
                           "or use the default transport (--transport adb-shell).")
        if is_tcp_serial(self.serial):
            out = self._run("connect", self.serial, timeout=30, with_serial=False)
            text = (out.stdout + out.stderr).decode(errors="replace")
            if "connected" not in text or "cannot" in text or "failed" in text:
                raise AdbError(f"adb connect {self.serial} failed: {text.strip()}")
        deadline = time.monotonic() + 15
        while True:
            state = self._run("get-state", timeout=30)
            text = (state.stdout + state.stderr).decode(errors="replace").strip()
            if state.returncode == 0 and "device" in text:
                return
            if "unauthorized" in text:
                raise AdbError(unauthorized_message(self.serial, Path.home() / ".android" / "adbkey"))
            if "not found" in text:
                listed = self._run("devices", timeout=30, with_serial=False).stdout.decode(errors="replace")
                found = [line.split()[0] for line in listed.splitlines()[1:] if line.strip()]
                raise AdbError(f"No phone '{self.serial}' is connected. Connected: {', '.join(found) or 'none'}. "
                               "Check the cable and `adb devices`.")
            if time.monotonic() > deadline:  # "authorizing", "offline", "connecting": give it a moment
                key = Path.home() / ".android" / "adbkey"
                raise AdbError(f"{self.serial} is '{text}' after 15 s: {unauthorized_message(self.serial, key)}")
            time.sleep(0.3)

    def close(self) -> None:
        pass  # the adb server keeps the connection

    def _raw_shell(self, command: str, timeout: float) -> str:
        result = self._run("shell", command, timeout=timeout)
        text = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0 and ("not found" in text or "offline" in text or "closed" in text):
            raise LinkLost(f"{self.serial}: {text.strip()}")
        return text

    def push(self, local: Path, remote: str, timeout: float | None = None,
             progress: Callable[[int], None] | None = None) -> None:
        # `adb push` prints progress only to a terminal: no progress calls, the caller's start and end lines
        result = self._run("push", str(local), remote, timeout=timeout or 3600)
        if result.returncode != 0:
            text = (result.stdout + result.stderr).decode(errors="replace")
            if "not found" in text or "offline" in text or "protocol fault" in text or "closed" in text:
                raise LinkLost(f"{self.serial}: the connection dropped while pushing {local.name}: {text.strip()}")
            raise AdbError(_push_failure(self.serial, remote, text))

    def pull(self, remote: str, local: Path, timeout: float | None = None) -> None:
        result = self._run("pull", remote, str(local), timeout=timeout or 3600)
        if result.returncode != 0:
            text = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise LinkLost(f"{self.serial}: pulling {remote} failed: {text}")


TRANSPORTS = {"adb-shell": AdbShellTransport, "adb": AdbBinaryTransport}


def open_transport(serial: str, kind: str = "adb-shell", **options: Any) -> Transport:
    """A connected transport to `serial`."""
    if kind not in TRANSPORTS:
        from eval.errors import unknown_name

        raise unknown_name("transport", kind, TRANSPORTS)
    transport = TRANSPORTS[kind](serial, **options)
    transport.connect()
    return transport
