"""MNN: the telemetry / pip self-install guard (proved in the mnn toolchain env), Gemma 3 refusal, export.

pymnn's MNN.tools.utils.log runs `pip install -U aliyun-log-python-sdk` and sends usage
telemetry; export/mnn.py's block_telemetry() must stop both.  The checks below run in the
mnn env (created through export/env.py like `make export`), and nothing in them reaches
the network: the audit hook refuses before any connection or lookup is made.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from export import env as export_env
from export.__main__ import main

GUARD_CHECK = r'''
import json, os, socket, subprocess, sys, importlib.util, pathlib
spec = importlib.util.find_spec("MNN")
log_py = pathlib.Path(list(spec.submodule_search_locations)[0], "tools", "utils", "log.py").read_text()
from export.mnn import ATTEMPTS, block_telemetry
block_telemetry()
out = {"threat_present": "pip install -U aliyun-log-python-sdk" in log_py and "LogClient" in log_py}
import MNN.tools.mnnconvert as mnnconvert          # imports the telemetry logger when it can
out["converter_logger"] = repr(mnnconvert.mnn_logger)
try:
    import MNN.tools.utils.log
    out["log_import"] = "imported"
except ImportError as exc:
    out["log_import"] = "blocked"
try:
    import aliyun.log
    out["aliyun"] = "imported"
except ImportError:
    out["aliyun"] = "blocked"
def refused(fn):
    try:
        fn()
        return False
    except PermissionError:
        return True
out["os_system_pip"] = refused(lambda: os.system("pip install -U aliyun-log-python-sdk"))
out["subprocess_pip"] = refused(lambda: subprocess.run([sys.executable, "-m", "pip", "install", "aliyun-log-python-sdk"]))
raw = socket.socket()
out["connect_remote"] = refused(lambda: raw.connect(("203.0.113.7", 443)))   # refused before any packet
raw.close()
out["resolve_remote"] = refused(lambda: socket.getaddrinfo("cn-hangzhou.log.aliyuncs.com", 443))
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=2)   # loopback stays allowed
out["loopback"] = True
client.close(); server.close()
out["pip_env"] = [os.environ.get("PIP_NO_INDEX"), os.environ.get("PIP_CONFIG_FILE")]
out["attempts"] = [a[0] for a in ATTEMPTS]
print("RESULT " + json.dumps(out))
'''


def test_mnn_telemetry_and_pip_self_install_are_blocked():
    python = export_env.ensure_env("mnn")
    result = subprocess.run([str(python), "-c", GUARD_CHECK], capture_output=True, text=True,
                            env=export_env.worker_env(), cwd=export_env.ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["threat_present"], "MNN no longer self-installs its telemetry SDK: revisit export/mnn.py"
    assert out["converter_logger"] == "None"
    assert out["log_import"] == "blocked" and out["aliyun"] == "blocked"
    assert out["os_system_pip"] and out["subprocess_pip"]
    assert out["connect_remote"] and out["resolve_remote"] and out["loopback"]
    assert out["pip_env"][0] == "1"
    assert {"import", "pip", "connect", "resolve"} <= set(out["attempts"])
    assert "Installing" not in result.stdout and "Successfully installed" not in result.stdout


def test_gemma3_is_refused_for_mnn_before_any_work(tmp_path, capsys):
    assert main(["--model", "tiny-gemma3", "--format", "mnn", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "MNN export of tiny-gemma3 is refused" in err and "RoPE base" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.xfail(reason="llmexport 0.0.5's tokenizer.txt encodes spaces of a byte-fallback SentencePiece model as "
                          "byte tokens, so MNN tokenizes differently from transformers (logits agree: ~88% top-1 "
                          "at int8 on tiny-llama)", strict=False)
def test_tiny_llama_mnn_export(tmp_path):
    assert main(["--model", "tiny-llama", "--format", "mnn", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "tiny-llama" / "mnn" / "manifest.json").read_text())
    assert manifest["parity"]["passed"]
    assert manifest["details"]["telemetry_guard"]["attempts"]  # the logger import was tried and refused
