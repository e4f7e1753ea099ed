"""The fake adbd (tests/fakeadbd) against real clients: adb-shell, Google's adb, and raw bytes.

If these pass, code that drives phones over ADB can be tested on a laptop: the fake speaks the
same wire protocol as a phone, so a client that works with it has done the real handshake,
auth, streams, flow control, shell v2 and sync.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from fakeadbd import FakeAdbd, HostAdb, find_adb, unavailable_reason
from fakeadbd.protocol import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_VERSION_MIN,
                               A_WRTE, AUTH_TOKEN, HEADER, SHELL_CLOSE_STDIN, SHELL_EXIT,
                               SHELL_HEADER, SHELL_STDERR, SHELL_STDIN, SHELL_STDOUT, Message,
                               shell_packet)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")

pytest.importorskip("adb_shell", reason="pip install 'adb-shell[async]==0.4.4' (the adb extra)")
from adb_shell.adb_device import AdbDeviceTcp  # noqa: E402
from adb_shell.auth.keygen import keygen  # noqa: E402
from adb_shell.auth.sign_pythonrsa import PythonRSASigner  # noqa: E402
from adb_shell.exceptions import AdbTimeoutError, PushFailedError, TcpTimeoutException  # noqa: E402

ADB = find_adb()
needs_adb = pytest.mark.skipif(ADB is None, reason="no adb binary: apt-get install adb")


# ---- fixtures ----

@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adb-shell RSA key pair (adbkey, adbkey.pub), made once for this module."""
    path = tmp_path_factory.mktemp("hostkey") / "adbkey"
    keygen(str(path))
    return path


@pytest.fixture(scope="module")
def signer(host_key: Path) -> PythonRSASigner:
    return PythonRSASigner.FromRSAKeyPath(str(host_key))


def _fakeadbd_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fakeadbd")}


@contextmanager
def fake_device(root: Path, **options: object) -> Iterator[FakeAdbd]:
    """A started FakeAdbd that must end with no errors and no threads left behind."""
    before = _fakeadbd_threads()
    with FakeAdbd(root=root, **options) as dev:
        yield dev
    assert dev.errors == []
    assert _fakeadbd_threads() - before == set()


@pytest.fixture
def device(tmp_path: Path, host_key: Path) -> Iterator[FakeAdbd]:
    """A non-root device that already trusts host_key."""
    with fake_device(tmp_path / "device") as dev:
        dev.keystore.add(Path(f"{host_key}.pub").read_text())
        yield dev


@contextmanager
def adb_shell_client(dev: FakeAdbd, signer: PythonRSASigner, **connect: object) -> Iterator[AdbDeviceTcp]:
    # transport timeout None = a blocking socket: adb-shell 0.4.4 ignores short writes on a
    # non-blocking one (TcpTransport.bulk_write), which could corrupt a 1 MiB WRTE.
    client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=None)
    try:
        client.connect(rsa_keys=[signer], auth_timeout_s=connect.pop("auth_timeout_s", 5), **connect)
        yield client
    finally:
        client.close()


def _random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# ---- adb-shell (pure Python client) ----

def test_adb_shell_connects_with_a_trusted_key_and_runs_shell(device: FakeAdbd, signer) -> None:
    with adb_shell_client(device, signer) as client:
        assert client.shell("echo hi") == "hi\n"
        assert client.shell("id -u; pwd; echo $TMPDIR") == "2000\n/\n/data/local/tmp\n"
    assert device.services_opened[0] == "shell:echo hi"


def test_adb_shell_unknown_key_is_never_answered(tmp_path: Path, signer) -> None:
    with fake_device(tmp_path / "device", allow_new_keys=False) as dev:
        started = time.monotonic()
        with pytest.raises((TcpTimeoutException, AdbTimeoutError)):
            with adb_shell_client(dev, signer, auth_timeout_s=1):
                pass
        assert time.monotonic() - started < 5
        assert len(dev.pending_keys) == 1  # offered, waiting for a tap on "Allow"
        assert dev.keystore.keys() == []


def test_adb_shell_new_key_is_accepted_and_saved_when_allowed(tmp_path: Path, signer, host_key) -> None:
    with fake_device(tmp_path / "device", allow_new_keys=True) as dev:
        with adb_shell_client(dev, signer) as client:
            assert client.shell("echo ok") == "ok\n"
        [saved] = dev.keystore.keys()
        assert saved.line == Path(f"{host_key}.pub").read_text().strip()
        assert dev.keystore.path == dev.host_path("/data/misc/adb/adb_keys")


def test_adb_shell_push_pull_are_byte_identical(device: FakeAdbd, signer, tmp_path: Path) -> None:
    data = _random_file(tmp_path / "big.bin", 3 * 1024 * 1024 + 17)
    with adb_shell_client(device, signer) as client:
        client.push(str(tmp_path / "big.bin"), "/data/local/tmp/big.bin", mtime=1_700_000_000)
        client.pull("/data/local/tmp/big.bin", str(tmp_path / "back.bin"))
        on_device = client.shell("md5sum /data/local/tmp/big.bin").split()[0]
    assert (tmp_path / "back.bin").read_bytes() == data
    assert device.host_path("/data/local/tmp/big.bin").read_bytes() == data
    assert on_device == hashlib.md5(data).hexdigest()


def test_adb_shell_stat_and_list(device: FakeAdbd, signer, tmp_path: Path) -> None:
    _random_file(tmp_path / "a.bin", 1234)
    with adb_shell_client(device, signer) as client:
        client.push(str(tmp_path / "a.bin"), "/sdcard/Download/a.bin", mtime=1_700_000_000)
        mode, size, mtime = client.stat("/storage/emulated/0/Download/a.bin")
        missing = client.stat("/data/local/tmp/nothing")
        listing = {entry.filename.decode(): entry for entry in client.list("/sdcard/Download")}
    assert (oct(mode), size, mtime) == (oct(0o100770 | 0o7), 1234, 1_700_000_000)
    assert missing == (0, 0, 0)
    assert set(listing) == {".", "..", "a.bin"}
    assert listing["a.bin"].size == 1234
    if device.sandbox.isolation == "chroot":  # real ownership needs root (see sandbox.py)
        assert device.host_path("/storage/emulated/0/Download/a.bin").stat().st_uid == 2000


def test_adb_shell_exec_merges_stderr_like_adbd(device: FakeAdbd, signer) -> None:
    with adb_shell_client(device, signer) as client:
        assert client.exec_out("echo out; echo err >&2; exit 5") == "out\nerr\n"
        assert client.shell("ls /nonexistent; echo status=$?").endswith("status=1\n")


def test_adb_shell_two_streams_run_concurrently(device: FakeAdbd, signer) -> None:
    # Both streams are opened and running before either is read to the end. (One thread:
    # adb-shell 0.4.4 holds its transport lock while it blocks on a read, so two threads
    # sharing a connection take turns unpredictably.)
    with adb_shell_client(device, signer) as client:
        started = time.monotonic()
        first = client.streaming_shell("echo go; sleep 1; echo one")
        assert next(first) == "go\n"
        second = client.streaming_shell("echo go; sleep 1; echo two")
        assert next(second) == "go\n"
        assert ("".join(first), "".join(second)) == ("one\n", "two\n")
        assert time.monotonic() - started < 1.9  # the two sleeps overlapped on the device
    assert device.connection_count == 1


def test_adb_shell_two_connections_at_once(device: FakeAdbd, signer) -> None:
    with adb_shell_client(device, signer) as a, adb_shell_client(device, signer) as b, \
            ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        runs = [pool.submit(client.shell, f"sleep 1; echo {name}") for name, client in
                (("a", a), ("b", b))]
        assert [run.result(timeout=10) for run in runs] == ["a\n", "b\n"]
        assert time.monotonic() - started < 1.9
    assert device.connection_count == 2


def test_device_state_changes_show_in_getprop_dumpsys_and_sysfs(device: FakeAdbd, signer) -> None:
    device.set_prop("ro.product.model", "Pixel 8 Pro")
    device.set_battery(level=42, temperature_c=31.5, charging="ac")
    device.set_thermal(0, 71500, zone_type="cpu-big")
    with adb_shell_client(device, signer) as client:
        assert client.shell("getprop ro.product.model") == "Pixel 8 Pro\n"
        assert client.shell("getprop no.such.prop fallback") == "fallback\n"
        assert "[ro.build.version.sdk]: [34]" in client.shell("getprop")
        battery = client.shell("dumpsys battery")
        zone = client.shell("cat /sys/class/thermal/thermal_zone0/type "
                            "/sys/class/thermal/thermal_zone0/temp")
        capacity = client.shell("cat /sys/class/power_supply/battery/capacity")
        device.set_battery(charging=False)
        unplugged = client.shell("dumpsys battery")
    assert "  level: 42\n" in battery and "  temperature: 315\n" in battery
    assert "  AC powered: true\n" in battery and "  status: 2\n" in battery
    assert "  AC powered: false\n" in unplugged and "  status: 3\n" in unplugged
    assert zone == "cpu-big\n71500\n"
    assert capacity == "42\n"
    assert "ro.product.model=Pixel 8 Pro;" in device.banner()


# ---- not root ----

def test_non_root_push_into_system_fails_like_a_phone(device: FakeAdbd, signer, tmp_path: Path) -> None:
    _random_file(tmp_path / "f.bin", 100_000)
    with adb_shell_client(device, signer) as client:
        # adb-shell puts the FAIL text in the exception as a bytearray repr.
        with pytest.raises(PushFailedError, match="create file: Read-only file system"):
            client.push(str(tmp_path / "f.bin"), "/system/f.bin")
        with pytest.raises(PushFailedError, match="Permission denied"):
            client.push(str(tmp_path / "f.bin"), "/data/system/f.bin")
        denied = client.shell("echo x > /system/x && echo wrote || echo denied")
    if device.sandbox.isolation == "chroot":  # shell permissions are real only as root
        assert "denied" in denied
    assert not device.host_path("/system/f.bin").exists()


def test_rooted_device_writes_anywhere(tmp_path: Path, signer) -> None:
    with fake_device(tmp_path / "device", auth_required=False, rooted=True) as dev:
        (tmp_path / "f.bin").write_bytes(b"root")
        with adb_shell_client(dev, signer) as client:
            client.push(str(tmp_path / "f.bin"), "/system/bin/f.bin")
            assert client.shell("id -u; cat /system/bin/f.bin") == "0\nroot"


# ---- fault injection ----

def test_drop_mid_push_makes_the_client_fail_quickly(device: FakeAdbd, signer, tmp_path: Path) -> None:
    _random_file(tmp_path / "big.bin", 3 * 1024 * 1024)
    with adb_shell_client(device, signer) as client:
        device.drop_after_bytes_received(1_000_000)
        started = time.monotonic()
        # adb-shell 0.4.4 sees the peer's close only when its read timeout expires.
        with pytest.raises((AdbTimeoutError, TcpTimeoutException, OSError)):
            client.push(str(tmp_path / "big.bin"), "/data/local/tmp/big.bin", read_timeout_s=2)
        assert time.monotonic() - started < 5
    device.wait_idle()
    assert not device.host_path("/data/local/tmp/big.bin").exists()  # adbd removes partial files


def test_drop_when_shell_starts_kills_the_command(device: FakeAdbd, signer) -> None:
    with adb_shell_client(device, signer) as client:
        device.drop_when_shell_starts("sleep 30")
        started = time.monotonic()
        with pytest.raises((AdbTimeoutError, TcpTimeoutException, OSError)):
            client.shell("echo started; sleep 30", read_timeout_s=2)
        assert time.monotonic() - started < 5
    deadline = time.monotonic() + 3
    while device.running_commands() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device.running_commands() == 0
    with adb_shell_client(device, signer) as client:  # the phone is still there
        assert client.shell("echo back") == "back\n"


# ---- raw protocol: what the clients above do not show ----

class RawHost:
    """A bare-bones ADB host over a socket, to test the wire format itself."""

    def __init__(self, port: int, version: int = A_VERSION, max_payload: int = 1024 * 1024) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.version = version
        self.send(Message(A_CNXN, version, max_payload, b"host::features=shell_v2\0"))

    def send(self, message: Message) -> None:
        self.sock.sendall(message.pack(with_checksum=self.version < A_VERSION))

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("device closed the connection")
            data += chunk
        return data

    def recv(self, timeout: float = 5) -> Message:
        self.sock.settimeout(timeout)
        command, arg0, arg1, length, check, magic = HEADER.unpack(self._read(HEADER.size))
        assert magic == command ^ 0xFFFFFFFF
        data = self._read(length)
        assert check == (sum(data) if self.version < A_VERSION else 0)
        return Message(command, arg0, arg1, data)

    def open(self, local_id: int, service: str) -> int:
        self.send(Message(A_OPEN, local_id, 0, service.encode() + b"\0"))
        reply = self.recv()
        assert (reply.command, reply.arg1) == (A_OKAY, local_id), reply
        return reply.arg0

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def open_device(tmp_path: Path) -> Iterator[FakeAdbd]:
    with fake_device(tmp_path / "device", auth_required=False) as dev:
        yield dev


@pytest.mark.parametrize("version", [A_VERSION_MIN, A_VERSION])
def test_banner_and_checksums_follow_the_hosts_version(open_device: FakeAdbd, version: int) -> None:
    host = RawHost(open_device.port, version=version)
    reply = host.recv()  # RawHost.recv checks the checksum rule
    assert (reply.command, reply.arg0, reply.arg1) == (A_CNXN, A_VERSION, 1024 * 1024)
    banner = reply.data.decode()
    assert banner.startswith("device::ro.product.name=fakeadbd;ro.product.model=Fake Pixel;")
    assert "features=shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir" in banner
    host.close()


def test_auth_token_is_twenty_random_bytes(tmp_path: Path) -> None:
    with fake_device(tmp_path / "device") as dev:
        tokens = []
        for _ in range(2):
            host = RawHost(dev.port)
            reply = host.recv()
            assert (reply.command, reply.arg0) == (A_AUTH, AUTH_TOKEN)
            tokens.append(reply.data)
            host.close()
    assert [len(t) for t in tokens] == [20, 20] and tokens[0] != tokens[1]


def test_each_wrte_waits_for_the_hosts_okay(open_device: FakeAdbd) -> None:
    host = RawHost(open_device.port, max_payload=4096)
    assert host.recv().command == A_CNXN
    remote = host.open(1, "exec:yes 0123456789 | head -c 20000")
    first = host.recv()
    assert (first.command, first.arg0, first.arg1, len(first.data)) == (A_WRTE, remote, 1, 4096)
    with pytest.raises(socket.timeout):
        host.recv(timeout=0.3)  # nothing more until we acknowledge
    received = len(first.data)
    while True:
        host.send(Message(A_OKAY, 1, remote))
        message = host.recv()
        if message.command == A_CLSE:
            break
        assert message.command == A_WRTE and len(message.data) <= 4096
        received += len(message.data)
    assert received == 20000
    host.close()


def test_shell_v2_separates_streams_forwards_stdin_and_reports_exit(open_device: FakeAdbd) -> None:
    host = RawHost(open_device.port)
    assert host.recv().command == A_CNXN
    remote = host.open(7, "shell,v2,raw:cat; echo oops >&2; exit 7")
    stdin = shell_packet(SHELL_STDIN, b"hello\n") + shell_packet(SHELL_CLOSE_STDIN, b"")
    host.send(Message(A_WRTE, 7, remote, stdin))
    stream = b""
    while True:
        message = host.recv()
        if message.command == A_WRTE:
            stream += message.data
            host.send(Message(A_OKAY, 7, remote))
        elif message.command == A_CLSE:
            break
    packets: dict[int, bytes] = {}
    while stream:
        packet_id, length = SHELL_HEADER.unpack_from(stream)
        packets[packet_id] = packets.get(packet_id, b"") + stream[5:5 + length]
        stream = stream[5 + length:]
    assert packets == {SHELL_STDOUT: b"hello\n", SHELL_STDERR: b"oops\n", SHELL_EXIT: b"\x07"}
    host.close()


def test_streams_on_one_connection_are_independent(open_device: FakeAdbd) -> None:
    host = RawHost(open_device.port)
    assert host.recv().command == A_CNXN
    started = time.monotonic()
    remotes = {host.open(local, f"exec:sleep 1; echo {local}"): local for local in (1, 2)}
    outputs: dict[int, bytes] = {}
    closed = set()
    while len(closed) < 2:
        message = host.recv()
        local = remotes[message.arg0]
        if message.command == A_WRTE:
            outputs[local] = outputs.get(local, b"") + message.data
            host.send(Message(A_OKAY, local, message.arg0))
        elif message.command == A_CLSE:
            closed.add(local)
    assert outputs == {1: b"1\n", 2: b"2\n"}
    assert time.monotonic() - started < 1.9
    host.close()


def test_unknown_service_is_refused_with_clse(open_device: FakeAdbd) -> None:
    host = RawHost(open_device.port)
    assert host.recv().command == A_CNXN
    host.send(Message(A_OPEN, 3, 0, b"framebuffer:\0"))
    reply = host.recv()
    assert (reply.command, reply.arg0, reply.arg1) == (A_CLSE, 0, 3)
    host.close()


def test_bad_checksum_is_recorded_and_the_connection_dropped(tmp_path: Path) -> None:
    with FakeAdbd(root=tmp_path / "device", auth_required=False) as dev:
        sock = socket.create_connection(("127.0.0.1", dev.port), timeout=5)
        payload = b"host::\0"
        sock.sendall(struct.pack("<6I", A_CNXN, A_VERSION_MIN, 4096, len(payload), 12345,
                                 A_CNXN ^ 0xFFFFFFFF) + payload)
        assert sock.recv(100) == b""  # dropped
        sock.close()
        assert dev.errors and "checksum" in dev.errors[0]


def test_port_and_address_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeAdbd(root=tmp_path / "device", host="0.0.0.0")
    with pytest.raises(ValueError, match="5554-5585"):
        FakeAdbd(root=tmp_path / "device", port=5555)


# ---- Google's adb client ----

@pytest.fixture(scope="module")
def host_adb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostAdb]:
    """A private adb server (own port, own HOME and key), killed after this module."""
    if ADB is None:
        pytest.skip("no adb binary: apt-get install adb (or pip install adbutils)")
    with HostAdb(tmp_path_factory.mktemp("adbhome"), adb=ADB) as adb:
        yield adb


@pytest.fixture
def adb_device(tmp_path: Path, host_adb: HostAdb) -> Iterator[FakeAdbd]:
    """A device that trusts the private adb server's key, connected."""
    with fake_device(tmp_path / "device") as dev:
        dev.keystore.add(host_adb.public_key())
        host_adb.connect(dev.serial)
        yield dev
        host_adb.run("disconnect", dev.serial)


@needs_adb
def test_real_adb_shell_exit_status_output_and_props(adb_device: FakeAdbd, host_adb: HostAdb) -> None:
    serial = adb_device.serial
    devices = host_adb.run("devices", "-l").stdout
    assert f"{serial}" in devices and "model:Fake_Pixel" in devices
    assert host_adb.run("shell", "exit 3", serial=serial).returncode == 3
    echoed = host_adb.run("shell", "echo hi; echo err >&2", serial=serial)
    assert (echoed.returncode, echoed.stdout, echoed.stderr) == (0, "hi\n", "err\n")
    assert host_adb.run("shell", "getprop", "ro.product.model", serial=serial).stdout == "Fake Pixel\n"
    assert "shell,v2,raw:exit 3" in adb_device.services_opened


@needs_adb
def test_real_adb_runs_commands_concurrently(adb_device: FakeAdbd, host_adb: HostAdb) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(host_adb.run, "shell", f"sleep 1; echo {i}", serial=adb_device.serial)
                for i in range(3)]
        assert [run.result().stdout for run in runs] == ["0\n", "1\n", "2\n"]
    assert time.monotonic() - started < 2.5  # one connection, three streams at once
    assert adb_device.connection_count == 1


@needs_adb
def test_real_adb_push_pull_ls_are_exact(adb_device: FakeAdbd, host_adb: HostAdb, tmp_path: Path) -> None:
    serial = adb_device.serial
    data = _random_file(tmp_path / "model.bin", 4 * 1024 * 1024 + 3)
    pushed = host_adb.run("push", str(tmp_path / "model.bin"), "/data/local/tmp/models/model.bin",
                          serial=serial)  # the missing folder is made (fixed_push_mkdir)
    assert pushed.returncode == 0, pushed.stderr
    pulled = host_adb.run("pull", "/data/local/tmp/models/model.bin", str(tmp_path / "back.bin"),
                          serial=serial)
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "back.bin").read_bytes() == data
    listing = host_adb.run("ls", "/data/local/tmp/models", serial=serial).stdout
    assert "model.bin" in listing and f"{len(data):08x}" in listing


@needs_adb
def test_real_adb_push_into_system_prints_the_failure(adb_device: FakeAdbd, host_adb: HostAdb,
                                                      tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"x" * 1000)
    result = host_adb.run("push", str(tmp_path / "x.bin"), "/system/x.bin", serial=adb_device.serial)
    assert result.returncode != 0
    assert "remote couldn't create file: Read-only file system" in result.stdout + result.stderr


@needs_adb
def test_real_adb_unknown_key_is_unauthorized_until_allowed(tmp_path: Path, host_adb: HostAdb) -> None:
    with fake_device(tmp_path / "locked") as locked:
        host_adb.run("connect", locked.serial)
        state = host_adb.run("get-state", serial=locked.serial)
        assert "unauthorized" in state.stdout + state.stderr
        assert len(locked.pending_keys) == 1
        host_adb.run("disconnect", locked.serial)
    with fake_device(tmp_path / "allowing", allow_new_keys=True) as allowing:
        host_adb.connect(allowing.serial)
        assert host_adb.run("shell", "echo in", serial=allowing.serial).stdout == "in\n"
        assert allowing.keystore.keys()[0].line == host_adb.public_key()
        host_adb.run("disconnect", allowing.serial)


@needs_adb
def test_real_adb_push_fails_when_the_connection_drops(adb_device: FakeAdbd, host_adb: HostAdb,
                                                       tmp_path: Path) -> None:
    _random_file(tmp_path / "big.bin", 4 * 1024 * 1024)
    adb_device.drop_after_bytes_received(1_000_000)
    started = time.monotonic()
    result = host_adb.run("push", str(tmp_path / "big.bin"), "/data/local/tmp/big.bin",
                          serial=adb_device.serial, timeout=20)
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    adb_device.wait_idle()  # adb may report the error before the device has cleaned up
    assert not adb_device.host_path("/data/local/tmp/big.bin").exists()


@needs_adb
def test_real_adb_shell_cut_mid_run_never_prints_the_sentinel(adb_device: FakeAdbd,
                                                               host_adb: HostAdb) -> None:
    # What a device runner must expect: adb 29 exits 0 with no output when the connection
    # drops before the exit packet, so only a printed sentinel proves the command finished.
    adb_device.drop_when_shell_starts("sleep 30")
    started = time.monotonic()
    result = host_adb.run("shell", "sleep 30; echo __done__", serial=adb_device.serial, timeout=20)
    assert "__done__" not in result.stdout
    assert time.monotonic() - started < 10
    adb_device.wait_idle()
    assert adb_device.running_commands() == 0
