"""Pushing big artifacts to a phone: free space first, progress, the sha256 skip (issue 12).

Against tests/fakeadbd (its `df` reports this machine's disk, or `set_free_space()`'s number).
Local files are sparse (`truncate`): they take no disk here, but the fake phone writes every byte.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeadbd import FakeAdbd, HostAdb, find_adb, unavailable_reason

from device_runner import phone as phone_module
from device_runner.phone import DeviceStopped, Phone, PhoneOptions, PushProgress, parse_df

STAGE = "/data/local/tmp/edgewise"
MiB = 1 << 20

needs_fake_phone = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")


def sparse(path: Path, size: int) -> Path:
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)
    return path


# ---- df parsing, progress lines (no phone) -----------------------------------------------

TOYBOX = """Filesystem       1K-blocks     Used Available Use% Mounted on
/dev/block/dm-46 115384600 61434292  53819236  54% /data
"""
BUSYBOX_WRAPPED = """Filesystem           1K-blocks      Used Available Use% Mounted on
/dev/mapper/a-very-long-volume-name-that-wraps
                       2031440   1516032    515408  75% /data
"""
GNU_TWO_ROWS = """Filesystem     1K-blocks     Used Available Use% Mounted on
tmpfs            1024000        0   1024000   0% /dev/shm
/dev/sda2      488245288 12345678 475899610   3% /media/my files
"""
OLD_TOOLBOX = """Filesystem               Size     Used     Free   Blksize
/data                   25.5G    18.2G     7.3G   4096
"""


@pytest.mark.parametrize(("text", "expected"), [
    (TOYBOX, (53819236 * 1024, "/data")),
    (BUSYBOX_WRAPPED, (515408 * 1024, "/data")),
    (GNU_TWO_ROWS, (475899610 * 1024, "/media/my files")),
    (OLD_TOOLBOX, (int(7.3 * 2**30), "/data")),
    ("df: /data/local/tmp: can't find mount point\n", None),
    ("Filesystem 1K-blocks Used Available Use% Mounted on\ndf: /x: No such file or directory\n", None),
    ("/system/bin/sh: df: inaccessible or not found\n", None),
    ("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/x 10 5 n/a 50% /data\n", None),
])
def test_parse_df(text: str, expected: tuple[int, str] | None) -> None:
    assert parse_df(text) == expected


def test_progress_lines_are_rate_limited_and_end_with_the_average(capsys) -> None:
    now = [0.0]
    progress = PushProgress("P: model.gguf", 1000 * MiB, clock=lambda: now[0])
    for step in range(1, 1001):  # 1 MiB every 0.1 s: 10 MiB/s for 100 s
        now[0] = step / 10
        progress(step * MiB)
    rate = progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert 10 * MiB * 0.99 < rate < 10 * MiB * 1.01
    assert lines[-1] == "P: model.gguf: pushed 1000 MiB in 100.0 s, 10.0 MiB/s"
    steps = lines[:-1]
    assert 15 <= len(steps) <= 20  # every 5% (5 s here), not every 2 s (50 lines) or every chunk
    assert steps[0] == "P: model.gguf: 50 of 1000 MiB (5%), 10.0 MiB/s, 95 s left"


def test_slow_link_still_shows_a_line_every_30_s(capsys) -> None:
    now = [0.0]
    progress = PushProgress("P: x", 1000 * MiB, clock=lambda: now[0])
    for second in range(1, 121):  # 0.1 MiB/s: 5% would take 500 s
        now[0] = float(second)
        progress(second * MiB // 10)
    assert len(capsys.readouterr().err.splitlines()) == 4  # at 30, 60, 90, 120 s


# ---- the loopback phone ------------------------------------------------------------------

@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")
    from device_runner.adb import load_signer

    monkeypatch.setenv("EDGEWISE_CACHE", str(tmp_path / "cache"))  # the local sha256 cache
    path = tmp_path / "home" / ".android" / "adbkey"
    load_signer(path)
    return path


@pytest.fixture
def phone(tmp_path: Path, key: Path) -> Iterator[FakeAdbd]:
    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason() or "")
    with FakeAdbd(root=tmp_path / "device") as dev:
        dev.keystore.add(Path(f"{key}.pub").read_text())
        yield dev


def _connected(dev: FakeAdbd, key: Path) -> Phone:
    p = Phone(dev.serial, PhoneOptions(transport_options={"key": key}))
    p.connect()
    return p


def _pushes(dev: FakeAdbd) -> int:
    return sum(1 for service in dev.services_opened if service.startswith("sync:"))


@needs_fake_phone
def test_too_little_space_says_what_to_delete_and_pushes_nothing(phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    phone.sandbox.write_file(f"{STAGE}/models/0123456789abcdef/old.gguf", b"\1" * (5 * MiB))
    phone.sandbox.write_file(f"{STAGE}/models/fedcba9876543210/older.gguf", b"\2" * (2 * MiB))
    phone.sandbox.write_file(f"{STAGE}/bin/arm64-v8a/ew_llama", b"\3" * MiB)
    phone.set_free_space(125 * MiB)
    local = sparse(tmp_path / "new model.gguf", 64 * MiB)
    script = tmp_path / "small.sh"
    script.write_text("echo hi\n")
    p = _connected(phone, key)
    with pytest.raises(DeviceStopped) as stopped:
        p.stage_all([(script, f"{STAGE}/scripts/small.sh", False),
                     (local, f"{STAGE}/models/aaaa/new model.gguf", False)])
    message = str(stopped.value)
    serial = phone.serial
    # 64 MiB to push + a 64 MiB margin (5% is less) = 128 MiB; 125 MiB free
    assert message.startswith(f"{serial}: not enough space on the phone: pushing 64.0 MiB to {STAGE} needs "
                              "128 MiB free on /data")
    assert "but 125 MiB is free; nothing was pushed" in message
    assert (f"The biggest under {STAGE}: models/0123456789abcdef (5.0 MiB), models/fedcba9876543210 (2.0 MiB), "
            "bin/arm64-v8a (1.0 MiB);") in message
    # deleting the biggest frees enough (125 + 5 >= 128): the command names it alone
    assert f"`adb -s {serial} shell rm -r {STAGE}/models/0123456789abcdef`, then rerun with --resume." in message
    assert _pushes(phone) == 0
    assert not phone.host_path(f"{STAGE}/scripts/small.sh").exists()  # not even the small file first
    assert not phone.host_path(f"{STAGE}/models/aaaa").exists()

    phone.set_free_space(60 * MiB)  # even deleting everything listed is not enough
    with pytest.raises(DeviceStopped) as stopped:
        p.stage(local, f"{STAGE}/models/aaaa/new model.gguf")
    message = str(stopped.value)
    assert f"pushing 64.0 MiB to {STAGE}/models/aaaa needs 128 MiB free on /data" in message
    assert (f"rm -r {STAGE}/models/0123456789abcdef {STAGE}/models/fedcba9876543210 {STAGE}/bin/arm64-v8a` "
            "(not enough on its own: free more in Settings > Storage as well)") in message
    assert _pushes(phone) == 0
    p.close()


@needs_fake_phone
def test_unreadable_df_is_a_note_and_the_push_goes_on(phone: FakeAdbd, key: Path, tmp_path: Path, capsys) -> None:
    phone.sandbox.write_file("/system/bin/df", "#!/system/bin/sh\necho 'df: unknown option -k' >&2\nexit 1\n",
                             mode=0o755)
    local = sparse(tmp_path / "m.gguf", 20 * MiB)
    p = _connected(phone, key)
    assert p.stage(local, f"{STAGE}/models/b/m.gguf") is True
    err = capsys.readouterr().err
    assert f"{phone.serial}: could not read the free space of {STAGE}/models/b (`df -k` printed " \
           "'df: unknown option -k'); pushing without checking it." in err
    assert phone.host_path(f"{STAGE}/models/b/m.gguf").stat().st_size == 20 * MiB
    p.close()


def _push_twice(phone: FakeAdbd, key: Path, local: Path, capsys) -> tuple[float, list[str]]:
    """stage() twice: the first pushes (timed), the second is skipped by sha256; stderr's lines."""
    p = _connected(phone, key)
    remote = f"{STAGE}/models/c0ffee/{local.name}"
    started = time.monotonic()
    assert p.stage(local, remote) is True
    seconds = time.monotonic() - started
    pushes = _pushes(phone)
    assert p.stage(local, remote) is False
    assert _pushes(phone) == pushes  # no second push
    assert phone.host_path(remote).stat().st_size == local.stat().st_size
    assert not phone.host_path(remote + ".part").exists()
    p.close()
    return seconds, capsys.readouterr().err.splitlines()


@needs_fake_phone
def test_push_shows_progress_and_skips_by_sha256(phone: FakeAdbd, key: Path, tmp_path: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phone_module, "PROGRESS_EVERY_S", 0.0)  # a line every 5% on the fast loopback
    local = sparse(tmp_path / "model-64m.gguf", 64 * MiB)
    _, lines = _push_twice(phone, key, local, capsys)
    serial = phone.serial
    assert lines[0] == f"{serial}: pushing model-64m.gguf (64 MiB)"
    steps = [line for line in lines if " s left" in line]
    assert 15 <= len(steps) <= 20, lines
    assert steps[0].startswith(f"{serial}: model-64m.gguf: 3 of 64 MiB (5%), ")
    assert [line for line in lines if ": pushed " in line][0].startswith(
        f"{serial}: model-64m.gguf: pushed 64.0 MiB in ")
    assert sum(": pushing " in line for line in lines) == 1  # the second stage() printed nothing of a push


@pytest.mark.skipif(find_adb() is None, reason="no adb binary: apt-get install adb")
@needs_fake_phone
def test_adb_binary_push_prints_start_and_average(tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from device_runner.adb import AdbBinaryTransport

    monkeypatch.setenv("EDGEWISE_CACHE", str(tmp_path / "cache"))
    with HostAdb(tmp_path / "home") as adb, FakeAdbd(root=tmp_path / "device") as dev:
        dev.keystore.add(adb.public_key())
        t = AdbBinaryTransport(dev.serial, adb=adb.adb, env=adb.env, server_port=adb.port)
        t.connect()
        p = Phone(dev.serial, PhoneOptions(transport="adb"))
        p.transport = t
        local = sparse(tmp_path / "m.gguf", 32 * MiB)
        assert p.stage(local, f"{STAGE}/m.gguf") is True
        assert p.stage(local, f"{STAGE}/m.gguf") is False
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == f"{dev.serial}: pushing m.gguf (32 MiB)"
        assert lines[-1].startswith(f"{dev.serial}: m.gguf: pushed 32.0 MiB in ") and lines[-1].endswith(" MiB/s")


@pytest.mark.slow
@needs_fake_phone
def test_3_gib_push_to_the_loopback_phone(phone: FakeAdbd, key: Path, tmp_path: Path, capsys) -> None:
    """A 4B Q4 model's size: ~40 s of pushing and two phone-side sha256sums of 3 GiB here (the fake
    phone writes every byte to this machine's disk, removed at the end)."""
    import shutil

    size = 3 << 30
    if shutil.disk_usage(phone.sandbox.root).free < size + (2 << 30):
        pytest.skip(f"needs {size >> 30} GiB + 2 GiB free on the disk of {phone.sandbox.root}")
    local = sparse(tmp_path / "gemma-3-4b-it-q4_k_m.gguf", size)
    try:
        seconds, lines = _push_twice(phone, key, local, capsys)
    finally:
        shutil.rmtree(phone.host_path(f"{STAGE}/models"), ignore_errors=True)
    steps = [line for line in lines if " s left" in line]
    assert steps and all("MiB/s" in line for line in steps), lines
    [done] = [line for line in lines if ": pushed " in line]
    print("\n" + "\n".join(lines) + f"\n(the first stage() took {seconds:.1f} s in all)")
    assert (tmp_path / "cache" / "sha256.json").is_file()  # the local digest is cached
