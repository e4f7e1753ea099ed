"""`python -m device_runner --device 127.0.0.1:PORT`: phones over ADB, against tests/fakeadbd.

The fake phone runs this machine's build of our llama.cpp runner, ew_llama (android/build.sh --abi
host, `make android-host`), with its shared libraries copied into its chroot, so the on-device side
(android/run_ew_llama.sh) really runs the default GGUF.  Tests that need the binary skip with the
command that builds it.  tests/test_ew_llama.py checks that runner's answers against the host's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtimes.versions import LLAMACPP_VERSION

from fakeadbd import FakeAdbd, HostAdb, find_adb, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")
pytest.importorskip("adb_shell", reason="pip install -e '.[adb]'")

from device_runner.__main__ import main  # noqa: E402
from device_runner.adb import AdbBinaryTransport, AdbError, AdbShellTransport, LinkLost, RemoteTimeout  # noqa: E402
from device_runner.facts import device_facts  # noqa: E402
from device_runner.phone import Phone, PhoneOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOST_BIN = ROOT / "android" / "build" / "host" / "bin"
needs_runner = pytest.mark.skipif(not (HOST_BIN / "ew_llama").is_file(),
                                  reason="no host ew_llama: `make android-host` (android/build.sh --abi host)")


def _model() -> Path | None:
    try:
        from export.catalogue import default_model_path

        path = default_model_path()
        return path if path.is_file() else None
    except Exception:  # noqa: BLE001
        return None


needs_model = pytest.mark.skipif(_model() is None, reason="the default GGUF is not downloaded (make bench once)")


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This 'workstation's' adb key, created by the runner the way a first run does."""
    from device_runner.adb import load_signer

    path = tmp_path_factory.mktemp("home") / ".android" / "adbkey"
    load_signer(path)
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # adb's PKCS#8 PEM
    assert len(Path(f"{path}.pub").read_text().split()) == 2  # base64 blob + user@host
    return path


def _trust(dev: FakeAdbd, key: Path) -> None:
    dev.keystore.add(Path(f"{key}.pub").read_text())


@pytest.fixture
def phone(tmp_path: Path, key: Path) -> Iterator[FakeAdbd]:
    with FakeAdbd(root=tmp_path / "device") as dev:
        _trust(dev, key)
        yield dev


def _run(dev: FakeAdbd, key: Path, out: Path, *extra: str, serials: tuple[str, ...] = ()) -> int:
    devices = [a for s in (serials or (dev.serial,)) for a in ("--device", s)]
    return main([*devices, "--adb-key", str(key), "--data", "sample", "--sample-users", "2",
                 "--sample-sessions", "3", "--out", str(out), "--no-progress", "--runner-bin", str(HOST_BIN), *extra])


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# ---- transports --------------------------------------------------------------------------

def test_connect_pre_trusted_shell_exit_status_quoting_and_timeout(phone: FakeAdbd, key: Path) -> None:
    t = AdbShellTransport(phone.serial, key=key, auth_timeout_s=3)
    t.connect()
    try:
        assert t.shell("echo hi; exit 3").rc == 3
        assert t.shell("echo hi").out == "hi\n"
        evil = "x'; touch /data/local/tmp/pwned; echo '"
        from device_runner.adb import q

        assert t.shell(f"echo {q(evil)}").out == evil + "\n"
        assert not phone.host_path("/data/local/tmp/pwned").exists()
        started = time.monotonic()
        with pytest.raises(RemoteTimeout, match="timeout"):
            t.shell("sleep 30; echo never", timeout=1.5)
        assert time.monotonic() - started < 10
        time.sleep(0.3)
        assert phone.running_commands() == 0  # the remote process group was killed
        assert t.shell("echo still usable").rc == 0
    finally:
        t.close()


def test_connect_new_key_allowed_and_refused(tmp_path: Path, key: Path) -> None:
    with FakeAdbd(root=tmp_path / "allow", allow_new_keys=True) as dev:
        t = AdbShellTransport(dev.serial, key=key, auth_timeout_s=3)
        t.connect()
        t.close()
        assert len(dev.keystore.keys()) == 1  # the user tapped "Allow": key saved
    with FakeAdbd(root=tmp_path / "refuse", allow_new_keys=False) as dev:
        t = AdbShellTransport(dev.serial, key=key, auth_timeout_s=1)
        with pytest.raises(AdbError, match="Allow USB debugging"):
            t.connect()


def test_link_drop_is_noticed_at_once(phone: FakeAdbd, key: Path) -> None:
    t = AdbShellTransport(phone.serial, key=key, io_timeout_s=20)
    t.connect()
    phone.drop_when_shell_starts("sleep 2")
    started = time.monotonic()
    with pytest.raises(LinkLost):
        t.shell("sleep 2; echo done", timeout=15)
    assert time.monotonic() - started < 5  # not a busy wait of the 20 s read timeout
    t.connect()
    assert t.shell("echo back").out == "back\n"
    t.close()


def test_usb_serial_without_libusb_and_unknown_tcp_device_are_sentences(key: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("usb1") is None:
        with pytest.raises(AdbError, match="libusb"):
            AdbShellTransport("R58M12345", key=key).connect()
    with pytest.raises(AdbError, match="Cannot reach 127.0.0.1:1"):
        AdbShellTransport("127.0.0.1:1", key=key).connect()


def test_usb_busy_and_unknown_serial_messages(key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """adb-shell's USB transport (libusb) stood in for: the adb server holding the interface, and
    a serial that is not plugged in (the message lists what is)."""
    import sys
    import types

    from adb_shell.exceptions import UsbDeviceNotFoundError

    class FakeUsb:
        error: Exception = RuntimeError("LIBUSB_ERROR_BUSY [-6]")

        @classmethod
        def find_adb(cls, serial: str, default_transport_timeout_s: float | None = None) -> None:
            raise cls.error

        @classmethod
        def find_all_adb_devices(cls) -> list:
            return [types.SimpleNamespace(serial_number="R58M0001")]

    module = types.ModuleType("adb_shell.transport.usb_transport")
    module.UsbTransport = FakeUsb  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "adb_shell.transport.usb_transport", module)
    with pytest.raises(AdbError, match="adb kill-server"):
        AdbShellTransport("R58M9999", key=key).connect()
    FakeUsb.error = UsbDeviceNotFoundError("none")
    with pytest.raises(AdbError, match="No phone with serial 'R58M9999' on USB. Connected: R58M0001"):
        AdbShellTransport("R58M9999", key=key).connect()


@pytest.mark.skipif(find_adb() is None, reason="no adb binary: apt-get install adb")
def test_adb_binary_transport_connect_shell_push(tmp_path: Path) -> None:
    with HostAdb(tmp_path / "home") as adb, FakeAdbd(root=tmp_path / "device") as dev:
        dev.keystore.add(adb.public_key())
        t = AdbBinaryTransport(dev.serial, adb=adb.adb, env=adb.env, server_port=adb.port)
        t.connect()
        assert t.shell("exit 7").rc == 7
        phone_ = Phone(dev.serial, PhoneOptions(transport="adb"))
        phone_.transport = t
        local = tmp_path / "file name; rm -rf x.bin"
        local.write_bytes(b"\x00\x01" * 5000)
        assert phone_.stage(local, "/data/local/tmp/edgewise/f.bin") is True
        assert phone_.stage(local, "/data/local/tmp/edgewise/f.bin") is False  # same sha256: skipped
        assert dev.host_path("/data/local/tmp/edgewise/f.bin").read_bytes() == local.read_bytes()
        wrong = AdbBinaryTransport("127.0.0.1:2", adb=adb.adb, env=adb.env, server_port=adb.port)
        with pytest.raises(AdbError, match="127.0.0.1:2"):
            wrong.connect()


# ---- facts, staging ----------------------------------------------------------------------

def test_facts_and_devices_command(phone: FakeAdbd, key: Path, capsys) -> None:
    phone.sandbox.write_file("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "1800000\n")
    phone.sandbox.write_file("/sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq", "2900000\n")
    phone.sandbox.write_file("/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "schedutil\n")
    phone.set_battery(level=55, temperature_c=33.0, charging=False)
    t = AdbShellTransport(phone.serial, key=key)
    t.connect()
    facts = device_facts(t)
    t.close()
    assert facts["model"] == "Fake Pixel" and facts["soc"] == "FakeSoC 8" and facts["abi"] == "arm64-v8a"
    assert facts["sdk"] == 34 and facts["android_release"] == "14" and facts["ram_gb"] == 7.5
    assert facts["cpu_max_khz"] == [1800000, 2900000] and facts["governors"] == ["schedutil"]
    assert facts["battery"] == {"level": 55, "temperature_c": 33.0, "charging": False, "plugged": None}
    assert facts["thermal_c"]["cpu-0-0"] == 38.0 and facts["root"] is False
    assert main(["devices", "--device", phone.serial, "--adb-key", str(key), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["model"] == "Fake Pixel"
    assert main(["devices", "--device", phone.serial, "--adb-key", str(key)]) == 0
    assert "Google Fake Pixel | FakeSoC 8 | arm64-v8a | Android 14 (SDK 34)" in capsys.readouterr().out


def test_push_skips_same_sha_and_system_push_is_a_sentence(phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    p = Phone(phone.serial, PhoneOptions(transport_options={"key": key}))
    p.connect()
    local = tmp_path / "blob.bin"
    local.write_bytes(b"abc" * 100000)
    assert p.stage(local, "/data/local/tmp/edgewise/blob.bin") is True
    pushes = sum(1 for s in phone.services_opened if s.startswith("sync:"))
    assert p.stage(local, "/data/local/tmp/edgewise/blob.bin") is False
    assert sum(1 for s in phone.services_opened if s.startswith("sync:")) == pushes  # no second push
    with pytest.raises(AdbError, match="only under /data/local/tmp"):
        p.stage(local, "/system/blob.bin")
    p.close()


def test_drop_mid_push_reconnects_and_completes(phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    p = Phone(phone.serial, PhoneOptions(transport_options={"key": key}))
    p.connect()
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 40000)  # 10 MB
    phone.drop_after_bytes_received(3_000_000)
    p.retrying(p.stage, local, "/data/local/tmp/edgewise/big.bin")
    assert p.reconnects == 1
    assert phone.host_path("/data/local/tmp/edgewise/big.bin").read_bytes() == local.read_bytes()
    p.close()


# ---- runs (rules: no model, seconds) -----------------------------------------------------

def test_rules_run_on_two_phones_in_parallel_with_device_facts(tmp_path: Path, key: Path, capsys) -> None:
    with FakeAdbd(root=tmp_path / "a") as a, FakeAdbd(root=tmp_path / "b") as b:
        _trust(a, key)
        _trust(b, key)
        b.set_prop("ro.product.model", "Other Phone")
        out = tmp_path / "out"
        assert _run(a, key, out, "--strategy", "rules", serials=(a.serial, b.serial)) == 0
        rows = _rows(out)
        assert sorted((r["device"]["name"], r["user"]) for r in rows) == sorted(
            [(a.serial, 0), (a.serial, 1), (b.serial, 0), (b.serial, 1)])
        models = {r["device"]["name"]: r["device"]["model"] for r in rows}
        assert models == {a.serial: "Fake Pixel", b.serial: "Other Phone"}
        assert all(r["case"].endswith(r["device"]["name"]) for r in rows)


def test_wrong_serial_and_missing_artifact_are_sentences(phone: FakeAdbd, key: Path, tmp_path: Path, capsys) -> None:
    assert _run(phone, key, tmp_path / "o1", "--strategy", "rules", serials=("127.0.0.1:1",)) == 2
    assert "Cannot reach 127.0.0.1:1" in capsys.readouterr().err
    assert _run(phone, key, tmp_path / "o2", "--strategy", "incremental", "--gguf", str(tmp_path / "nope.gguf")) == 2
    assert "nope.gguf does not exist" in capsys.readouterr().err
    assert _run(phone, key, tmp_path / "o3", "--strategy", "incremental", "--runtime", "mnn") == 2
    err = capsys.readouterr().err
    assert "mnn" in err
    qnn = tmp_path / "executorch-qnn-16a4w"
    qnn.mkdir()
    (qnn / "pte_config.json").write_text('{"backend": "qnn"}')
    assert _run(phone, key, tmp_path / "o4", "--strategy", "incremental", "--runtime", "executorch",
                "--artifact", str(qnn)) == 2
    assert "runs with executorch's qnn_llama_runner" in capsys.readouterr().err
    assert not (tmp_path / "o4" / "results.jsonl").exists()


# ---- runs with the model (host llama.cpp binaries inside the fake phone) -------------------

@pytest.fixture(scope="module")
def model_phone(tmp_path_factory: pytest.TempPathFactory, key: Path) -> Iterator[FakeAdbd]:
    """One phone for the model tests (the 250 MB GGUF is pushed once and then skipped by sha)."""
    if not (HOST_BIN / "ew_llama").is_file() or _model() is None:
        pytest.skip("needs `make android-host` and the default GGUF")
    with FakeAdbd(root=tmp_path_factory.mktemp("modelphone") / "device") as dev:
        _trust(dev, key)
        dev.sandbox.install_host_libraries(HOST_BIN / "ew_llama")
        yield dev


@needs_runner
@needs_model
def test_model_case_end_to_end_scored_with_thermal_gate(model_phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    """rules + hybrid on one user with 3 sessions: pushed, run on the 'phone', pulled, scored.
    The phone starts hot; a timer cools it and the case waits for that.  (hybrid: the phone's
    plumbing with few questions; tests/test_ew_llama.py runs incremental and single-pass.)"""
    model_phone.set_battery(temperature_c=45.0)

    def cool_when_the_case_waits() -> None:  # once the gate (after the model push) has seen it hot
        deadline = time.monotonic() + 120

        def opened() -> list[str]:
            return list(model_phone.services_opened)
        while time.monotonic() < deadline and not any(".gguf.part" in s and "mv -f" in s for s in opened()):
            time.sleep(0.05)
        pushed = len(opened())
        while time.monotonic() < deadline and not any("dumpsys battery" in s for s in opened()[pushed:]):
            time.sleep(0.05)
        time.sleep(1.5)
        model_phone.set_battery(temperature_c=30.0)
    threading.Thread(target=cool_when_the_case_waits, daemon=True).start()
    out = tmp_path / "out"
    assert _run(model_phone, key, out, "--strategy", "rules,hybrid", "--users", "0", "--thermal-limit", "40",
                "--thermal-timeout", "60", "--thermal-poll", "0.3", "--threads", "2", "--context", "2048") == 0
    rows = {r["strategy"]: r for r in _rows(out)}
    inc = rows["hybrid"]
    assert inc["device"]["model"] == "Fake Pixel"
    assert inc["runtime_version"].startswith(f"llama.cpp {LLAMACPP_VERSION}")
    assert inc["measurement"]["thermal_wait_s"]["waited_s"] >= 1.0
    assert inc["device"]["state_start"]["battery"]["temperature_c"] == 30.0
    assert "no root: CPU governor and frequencies not pinned" in inc["measurement"]["uncontrolled"]
    t = inc["timings"]
    assert t["requests"] == inc["prompt_notes"]["questions"] > 0
    assert t["prefill_tps"] > 0  # every request evaluates its question after the shared prefix
    assert t["decode_tps"] is None or t["decode_tps"] > 0  # None when every answer was one token
    assert t["load_ms"] > 0 and t["ttft_ms"] > 0 and 150 < t["peak_rss_mb"] < 1000
    # the shared prefix was evaluated once, then kept in ew_llama's KV cache for the next questions
    assert t["prompt_tokens_evaluated"] < t["prompt_tokens"]
    assert inc["runtime_details"]["decoding"] == "gbnf" and inc["runtime_details"]["grammar_fast_path"]
    assert inc["parse_errors"] == []  # every answer was one of the choices (grammar on the phone)
    # the row's score is the scorer's on the row's own truth and routines
    from eval.score import score

    assert inc["score"] == {k: score([inc["truth"]], [inc["routines"]]).metrics[k]
                            for k in ("acc.routine_exact", "jaccard.flattened")}
    assert inc["artifact_sha256"] and len(inc["artifact_sha256"]) == 64


@needs_runner
@needs_model
def test_drop_mid_run_resumes_without_lost_or_doubled_rows(model_phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    model_phone.drop_when_shell_starts("run_ew_llama.sh")
    assert _run(model_phone, key, out, "--strategy", "hybrid", "--users", "0-1", "--threads", "2",
                "--context", "2048") == 0
    rows = _rows(out)
    assert sorted(r["user"] for r in rows) == [0, 1]
    assert max(r["measurement"]["reconnects"] for r in rows) >= 1
    # Resume: nothing left to do, nothing written twice.
    assert _run(model_phone, key, out, "--strategy", "hybrid", "--users", "0-1", "--threads", "2", "--context", "2048",
                "--resume") == 0
    assert len(_rows(out)) == 2


# ---- runs with a stand-in ew_llama (fast: plumbing, not the model) ------------------------------

# Prints ew_llama's records for every request of the case (ID " none", made-up numbers).  With
# /data/local/tmp/stub-crash present, its second invocation dies by SIGSEGV in its second request.
STUB = r"""#!/bin/sh
case_dir=
while [ $# -gt 0 ]; do
  case "$1" in --case) case_dir=$2; shift ;; esac; shift
done
echo x >> /data/local/tmp/stub-calls
calls=$(wc -l < /data/local/tmp/stub-calls)
n=0
while IFS="$(printf '\t')" read -r id rest; do
  [ -n "$id" ] || continue
  n=$((n + 1))
  echo "EW_NEXT request $id"
  if [ -e /data/local/tmp/stub-crash ] && [ "$calls" -eq 2 ] && [ "$n" -eq 2 ]; then
    echo "ggml: something went wrong" >&2; kill -SEGV $$
  fi
  sleep 0.05
  echo "EW_BEGIN request $id"
  echo "EW_STAT prompt_tokens=12 reused_tokens=2 evaluated_tokens=10 generated_tokens=1 load_ms=10 prefill_ms=5 ttft_ms=6 decode_ms=0 sampling_ms=0.5 total_ms=9 full_grammar_passes=0 finish=stop"
  printf 'EW_RC 0\nEW_RSS_KB 204800\nEW_WALL_MS 9\nEW_TEXT IG5vbmU=\nEW_END request %s\n' "$id"
done < "$case_dir/requests.tsv"
"""


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "stubbin"
    folder.mkdir()
    (folder / "ew_llama").write_text(STUB)
    (folder / "ew_llama").chmod(0o755)
    return folder


def test_one_phone_lost_for_good_stops_alone_and_repetitions_are_recorded(tmp_path: Path, key: Path,
                                                                          stub_bin: Path, capsys) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 1000)
    with FakeAdbd(root=tmp_path / "a") as a, FakeAdbd(root=tmp_path / "b") as b:
        _trust(a, key)
        _trust(b, key)
        b.drop_when_shell_starts("run_ew_llama.sh")
        b_serial = b.serial

        def unplug_b() -> None:  # B's link drops at its first case and never comes back
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any("run_ew_llama.sh" in s for s in list(b.services_opened)):
                time.sleep(0.02)
            b.stop()
        threading.Thread(target=unplug_b, daemon=True).start()
        out = tmp_path / "out"
        code = main(["--device", a.serial, "--device", b.serial, "--adb-key", str(key), "--data", "sample",
                     "--sample-users", "2", "--sample-sessions", "3", "--out", str(out), "--no-progress",
                     "--runner-bin", str(stub_bin), "--gguf", str(gguf), "--strategy", "hybrid",
                     "--repeat", "2", "--warmup", "1", "--affinity", "f"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"{b_serial}: lost the connection and could not reconnect" in err and "--resume" in err
        rows = _rows(out)
        assert sorted((r["device"]["name"], r["user"]) for r in rows) == [(a.serial, 0), (a.serial, 1)]
        calls = a.host_path("/data/local/tmp/stub-calls").read_text().count("x")
        cases = sum(1 for r in rows if r["prompt_notes"]["questions"])
        assert calls == 3 * cases  # one ew_llama process per case and run: 1 warm-up + 2 measured
        assert all(line.endswith("\tnone") for r in rows for line in r["output"].splitlines())
        m = rows[0]["measurement"]
        assert m["warmup"] == 1 and m["repeat"] == 2 and m["affinity"] == "f"
        assert rows[0]["runtime_details"]["repeat"] == 2


@pytest.mark.slow
@needs_runner
@needs_model
def test_single_pass_on_the_phone_with_repetitions(model_phone: FakeAdbd, key: Path, tmp_path: Path) -> None:
    """The paper's protocol on the 'phone': JSON-schema grammar on the device, parsed and scored
    (hundreds of generated tokens, twice: a minute or more on 2 cores)."""
    out = tmp_path / "out"
    assert _run(model_phone, key, out, "--strategy", "single-pass", "--users", "0", "--threads", "2",
                "--context", "4096", "--repeat", "2") == 0
    [row] = _rows(out)
    assert row["output"].startswith("{") and row["timings"]["generated_tokens"] > 10
    assert row["measurement"]["spread"]["decode_tps"]["min"] <= row["measurement"]["spread"]["decode_tps"]["max"]
    # the row's score is the scorer's on the row's own truth and routines
    from eval.score import score

    assert row["score"] == {k: score([row["truth"]], [row["routines"]]).metrics[k]
                            for k in ("acc.routine_exact", "jaccard.flattened")}
