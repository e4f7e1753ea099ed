"""Google's `adb` client in tests: a private adb server, its own key, its own port.

The adb client talks to a background adb server (normally port 5037, key in
~/.android/adbkey). `HostAdb` gives each test its own: HOME and TMPDIR point into a folder
of the test's, and the server listens on a free port, so tests never touch (or kill) a
developer's real adb server and keys.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def find_adb() -> str | None:
    """An adb binary: $ADB, then `adb` on PATH (Debian package adb), then the adbutils wheel's."""
    candidates = [os.environ.get("ADB", ""), shutil.which("adb") or ""]
    spec = importlib.util.find_spec("adbutils")
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "binaries" / "adb"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # ephemeral range: never 5037 nor 5554-5585


class HostAdb:
    """A private adb server plus a way to run adb client commands against it.

    Use as a context manager; on exit the server is killed (`adb kill-server`).

    Args:
        home: folder used as HOME (the key is generated in home/.android/adbkey) and TMPDIR.
        adb: path of the adb binary; default find_adb().
        port: the adb server's port; default a free one.
    """

    def __init__(self, home: Path, adb: str | None = None, port: int | None = None) -> None:
        found = adb or find_adb()
        if found is None:
            raise FileNotFoundError("No adb binary: apt-get install adb (or pip install adbutils).")
        self.adb = found
        self.home = Path(home)
        self.port = port or _free_port()
        self.env = {"HOME": str(self.home), "TMPDIR": str(self.home),
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "ANDROID_ADB_SERVER_PORT": str(self.port)}

    def run(self, *args: str, serial: str | None = None, timeout: float = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`adb -P PORT [-s SERIAL] ARGS...` with text output; never raises on a non-zero exit."""
        argv = [self.adb, "-P", str(self.port), *(["-s", serial] if serial else []), *args]
        return subprocess.run(argv, env=self.env, capture_output=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              encoding="utf-8", errors="replace")

    def start(self) -> HostAdb:
        """Make the home folder and start the server (which creates its key on first start)."""
        (self.home / ".android").mkdir(parents=True, exist_ok=True)
        result = self.run("start-server")
        if result.returncode != 0:
            raise RuntimeError(f"adb start-server failed: {result.stderr.strip()}")
        return self

    def stop(self) -> None:
        """Kill the private server and wait until its port is closed."""
        self.run("kill-server", timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def __enter__(self) -> HostAdb:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def public_key(self) -> str:
        """The server's public key line (home/.android/adbkey.pub), to pre-trust in adb_keys."""
        return (self.home / ".android" / "adbkey.pub").read_text().strip()

    def connect(self, serial: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """`adb connect SERIAL`, then wait until the device is online (or `timeout` passes)."""
        result = self.run("connect", serial, timeout=timeout)
        try:
            waited = self.run("wait-for-device", serial=serial, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{serial} did not come online within {timeout}s after "
                               f"`adb connect` said: {result.stdout.strip()}") from None
        if waited.returncode != 0:
            raise RuntimeError(f"adb wait-for-device {serial} failed: {waited.stderr.strip()}")
        return result
