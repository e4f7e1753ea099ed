"""FakeAdbd: the device side of ADB over TCP, on 127.0.0.1, for tests without a phone."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .auth import KeyStore
from .connection import Connection, Stream
from .sandbox import Battery, DeviceSandbox
from .services import find_service

log = logging.getLogger("fakeadbd")

# What the daemon tells the host it can do (the CNXN banner's features=). Only what is
# implemented here: no sendrecv_v2 (SND2/RCV2), no abb, no delayed_ack.
DEFAULT_FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")
ADB_EMULATOR_PORTS = range(5554, 5586)  # the host adb server probes these; never listen there


class _Faults:
    """One-shot fault injections, armed by the test and consumed by a connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.drop_after_bytes: int | None = None
        self.drop_on_shell: str | None = None  # substring of the command; "" matches any

    def should_drop_after(self, received: int) -> bool:
        with self._lock:
            if self.drop_after_bytes is None:
                return False
            self.drop_after_bytes -= received
            if self.drop_after_bytes > 0:
                return False
            self.drop_after_bytes = None
            return True

    def should_drop_on_shell(self, command: str) -> bool:
        with self._lock:
            if self.drop_on_shell is None or self.drop_on_shell not in command:
                return False
            self.drop_on_shell = None
            return True


class FakeAdbd:
    """A fake Android device speaking the real ADB protocol over TCP on the loopback interface.

    Use it as a context manager::

        with FakeAdbd(root=tmp_path / "device") as dev:
            AdbDeviceTcp("127.0.0.1", dev.port) ...   # or: adb connect dev.serial

    Args:
        root: folder that plays the phone's filesystem (created and populated if needed;
            see sandbox.py for the layout and the device-path mapping).
        adb_keys: the trusted-keys file; default `<root>/data/misc/adb/adb_keys` as on a phone.
        auth_required: ask for RSA authentication (ro.adb.secure=1); False accepts anyone.
        allow_new_keys: accept a host's offered public key (the user taps "Allow") and append
            it to adb_keys; when False the device stays silent ("unauthorized" on the host).
        rooted: commands and file writes as root; when False, as the shell user (uid 2000)
            who may write only /data/local/tmp and /sdcard.
        props: system properties to set on top of the defaults (sandbox.DEFAULT_PROPS).
        host, port: where to listen; loopback only, port 0 (default) picks a free port.
        features: the feature list sent in the CNXN banner.
        arch: "host" (default) runs this machine's binaries; "arm64" runs aarch64 ones through
            qemu-user and reports aarch64 everywhere (sandbox.py; needs binfmt.sh's binfmt_misc
            entry: SandboxUnavailable says why when it cannot be set up).
    """

    def __init__(self, root: Path | str, *, adb_keys: Path | str | None = None,
                 auth_required: bool = True, allow_new_keys: bool = False, rooted: bool = False,
                 props: dict[str, str] | None = None, host: str = "127.0.0.1", port: int = 0,
                 features: tuple[str, ...] = DEFAULT_FEATURES, arch: str = "host") -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"FakeAdbd listens on loopback only: host={host!r} is not a loopback "
                             "IP address; use '127.0.0.1' or '::1'.")
        if port in ADB_EMULATOR_PORTS or port == 5037:
            raise ValueError(f"Port {port} belongs to adb (server 5037, emulators 5554-5585); "
                             "use port=0 for a free one.")
        self.sandbox = DeviceSandbox(Path(root), rooted=rooted, props=props, arch=arch)
        self.keystore = KeyStore(Path(adb_keys) if adb_keys else
                                 self.sandbox.root / "data/misc/adb/adb_keys")
        self.auth_required = auth_required
        self.allow_new_keys = allow_new_keys
        self.features = features
        self._bind = (host, port)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: list[Connection] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._faults = _Faults()
        self.services_opened: list[str] = []  # every OPEN's service string, in order
        self.pending_keys: list[str] = []  # public keys offered while allow_new_keys was False
        self.errors: list[str] = []  # protocol errors and service crashes; tests expect []
        self.connection_count = 0

    # ---- lifecycle ----

    def start(self) -> FakeAdbd:
        """Listen and accept connections in a background thread."""
        listener = socket.socket(socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._bind)
        listener.listen(8)
        listener.settimeout(0.1)  # lets the accept loop notice stop()
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fakeadbd-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, kill commands, join all threads.

        Raises RuntimeError naming any thread that did not finish within `timeout`.
        """
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        self.drop_connections()
        with self._lock:
            processes = list(self._processes)
            connections = list(self._connections)
        for proc in processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        stuck = [name for conn in connections for name in conn.join(timeout)]
        if self._accept_thread is not None and self._accept_thread.is_alive():
            stuck.append(self._accept_thread.name)
        for proc in processes:
            proc.wait(timeout)
        if stuck:
            raise RuntimeError(f"FakeAdbd.stop(): threads still running after {timeout}s: {stuck}")

    def __enter__(self) -> FakeAdbd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the daemon listens on."""
        if self._listener is None:
            raise RuntimeError("FakeAdbd is not started: use `with FakeAdbd(...) as dev:` or start().")
        return self._listener.getsockname()[1]

    @property
    def serial(self) -> str:
        """What `adb connect` and `adb -s` take: "127.0.0.1:PORT"."""
        return f"{self._bind[0]}:{self.port}"

    def banner(self) -> str:
        """The CNXN payload: "device::ro.product.name=...;...;features=..."."""
        props = self.sandbox.props()
        fields = [f"{name}={props.get(name, '')}" for name in
                  ("ro.product.name", "ro.product.model", "ro.product.device")]
        fields.append("features=" + ",".join(self.features))
        return "device::" + ";".join(fields)

    # ---- what the fake phone reports ----

    def set_prop(self, name: str, value: str) -> None:
        """Set a system property (getprop, and the banner of later connections)."""
        self.sandbox.set_prop(name, value)

    def get_prop(self, name: str, default: str = "") -> str:
        """A system property, as `getprop NAME` prints it."""
        return self.sandbox.props().get(name, default)

    def set_battery(self, level: int | None = None, temperature_c: float | None = None,
                    charging: bool | str | None = None) -> Battery:
        """Change `dumpsys battery` and /sys/class/power_supply/battery; None keeps a field."""
        return self.sandbox.set_battery(level=level, temperature_c=temperature_c, charging=charging)

    def set_thermal(self, zone_index: int, millidegrees: int, zone_type: str | None = None) -> None:
        """Set /sys/class/thermal/thermal_zoneN/temp (millidegrees Celsius) and maybe its type."""
        self.sandbox.set_thermal(zone_index, millidegrees, zone_type=zone_type)

    def set_free_space(self, free_bytes: int | None) -> None:
        """What `df` on the phone reports as available (None: this machine's disk's free space)."""
        self.sandbox.set_free_space(free_bytes)

    def host_path(self, device_path: str) -> Path:
        """The host file behind a device path, for seeding or checking files in tests."""
        return self.sandbox.host(device_path)

    def running_commands(self) -> int:
        """How many shell/exec commands are still running (0 after a drop killed them)."""
        with self._lock:
            return sum(1 for proc in self._processes if proc.poll() is None)

    # ---- fault injection (each one-shot: it fires once, then disarms) ----

    def drop_after_bytes_received(self, count: int) -> None:
        """Cut the connection that next brings the total received (from now) past `count` bytes."""
        self._faults.drop_after_bytes = count

    def drop_when_shell_starts(self, contains: str = "") -> None:
        """Cut the connection right after the next shell/exec command containing `contains` starts."""
        self._faults.drop_on_shell = contains

    def drop_connections(self) -> None:
        """Cut every open connection now, as pulling the cable would."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.drop("drop_connections()")

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until `count` connections were accepted since start; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while self.connection_count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.connection_count} of {count} connections after {timeout}s")
            time.sleep(0.01)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no service is running (e.g. cleanup after a drop is done); TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = [conn for conn in self._connections if conn.busy()]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"services still running after {timeout}s: "
                                   f"{[t.name for c in busy for t in c._service_threads if t.is_alive()]}")
            time.sleep(0.01)

    # ---- used by connections and services ----

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self.connection_count += 1
                conn = Connection(self, sock, self.connection_count)
                self._connections = [c for c in self._connections if c.thread.is_alive()] + [conn]
            conn.thread.start()

    def _find_service(self, name: str) -> Callable[[Stream], None] | None:
        return find_service(name, self)

    def _track_process(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes = [p for p in self._processes if p.poll() is None] + [proc]

    def _shell_started(self, stream: Stream, command: str) -> None:
        if self._faults.should_drop_on_shell(command):
            stream.connection.drop(f"fault injection: shell {command!r} started")

    def _record_error(self, message: str) -> None:
        log.warning("fakeadbd: %s", message)
        self.errors.append(message)
