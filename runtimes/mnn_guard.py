"""MNN's telemetry guard, shared by the MNN exporter (export/mnn.py) and the MNN runtime.

pymnn's converter tools run `pip install -U aliyun-log-python-sdk` when it is missing and
then send usage telemetry to a remote log service (export/mnn.py's docstring has the facts).
`block_telemetry()` stops that for the rest of the process: the modules cannot be imported,
an audit hook refuses (and records in ATTEMPTS) any pip run and any non-loopback connection
or name lookup, and pip is pointed at no index.
"""

from __future__ import annotations

import importlib.abc
import ipaddress
import os
import sys
from typing import Any

BLOCKED_MODULES = ("aliyun", "MNN.tools.utils.log")

# What the guard refused, in order: ("pip" | "connect" | "resolve" | "import", detail).
ATTEMPTS: list[tuple[str, str]] = []
_GUARDED = False


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        for blocked in BLOCKED_MODULES:
            if name == blocked or name.startswith(blocked + "."):
                ATTEMPTS.append(("import", name))
                raise ImportError(f"{name} is blocked by the harness (MNN usage telemetry)")
        return None


def _local(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _mentions_pip(command: Any) -> bool:
    if isinstance(command, (list, tuple)):
        command = " ".join(str(c) for c in command)
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    words = text.replace("/", " ").replace("=", " ").split()
    return "pip" in words or "pip3" in words or any(w.startswith("pip") and w[3:4] in ("", "3") for w in words) \
        or ("-m" in words and "pip" in text)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "os.system" and _mentions_pip(args[0]):
        ATTEMPTS.append(("pip", str(args[0])))
        raise PermissionError("pip is blocked by the harness while MNN tools run")
    if event == "subprocess.Popen" and _mentions_pip(args[1]):
        ATTEMPTS.append(("pip", str(args[1])))
        raise PermissionError("pip is blocked by the harness while MNN tools run")
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _local(address[0]):
            ATTEMPTS.append(("connect", str(address)))
            raise PermissionError(f"network connection to {address} is blocked by the harness")
    if event == "socket.getaddrinfo" and not _local(args[0]):
        ATTEMPTS.append(("resolve", str(args[0])))
        raise PermissionError(f"name lookup of {args[0]} is blocked by the harness")


def block_telemetry() -> None:
    """Block MNN's telemetry module, pip and non-loopback network for the rest of this process."""
    global _GUARDED
    if _GUARDED:
        return
    for name in list(sys.modules):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED_MODULES):
            del sys.modules[name]
    sys.meta_path.insert(0, _Blocker())
    os.environ["PIP_NO_INDEX"] = "1"
    os.environ["PIP_FIND_LINKS"] = ""
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    sys.addaudithook(_audit)
    _GUARDED = True
