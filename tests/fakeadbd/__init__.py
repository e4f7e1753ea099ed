"""A fake Android device for tests: adbd speaking the real ADB protocol on 127.0.0.1.

    from fakeadbd import FakeAdbd

    with FakeAdbd(root=tmp_path / "device", auth_required=True) as dev:
        dev.serial              # "127.0.0.1:PORT", for `adb connect` / `adb -s`
        dev.set_battery(level=42, temperature_c=31.5, charging=False)
        ...

Modules, in reading order:

- protocol.py   the wire format (24-byte headers, shell-v2 packets, sync records)
- auth.py       adb_keys parsing and token signature checks
- sandbox.py    the phone's filesystem (a chroot with static busybox + mksh), props, battery, thermal
- connection.py one TCP connection: handshake, streams, flow control
- services.py   shell / exec / shell v2 / sync
- server.py     FakeAdbd itself: lifecycle, test-facing state changes, fault injection
- hostadb.py    running Google's `adb` client against it with a private adb server
- binfmt.sh     binfmt_misc + qemu-user for the arm64 mode (FakeAdbd(arch="arm64"): aarch64 binaries)
"""

from __future__ import annotations

from .auth import KeyStore, PublicKey
from .hostadb import HostAdb, find_adb
from .sandbox import Battery, DeviceSandbox, SandboxUnavailable, arm64_unavailable_reason, unavailable_reason
from .server import DEFAULT_FEATURES, FakeAdbd

__all__ = ["DEFAULT_FEATURES", "Battery", "DeviceSandbox", "FakeAdbd", "HostAdb", "KeyStore",
           "PublicKey", "SandboxUnavailable", "arm64_unavailable_reason", "find_adb", "unavailable_reason"]
