"""MNN: the telemetry / pip self-install guard (proved in the mnn toolchain env), Gemma 3's RoPE
correction (and the refusal of gemma-3-4b), the tokenizer fixes, and a whole export of tiny-llama with parity.

pymnn's MNN.tools.utils.log runs `pip install -U aliyun-log-python-sdk` and sends usage
telemetry; export/mnn.py's block_telemetry() must stop both.  The checks below run in the
mnn env (created through export/env.py like `make export`), and nothing in them reaches
the network: the audit hook refuses before any connection or lookup is made.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from device_runner.run import RunOptions, run_host
from eval.errors import HarnessError
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


def test_gemma3_4b_is_refused_for_mnn_before_any_work(tmp_path, capsys):
    assert main(["--model", "gemma-3-4b", "--format", "mnn", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "MNN export of gemma-3-4b is refused" in err and "RoPE" in err
    assert not any(tmp_path.iterdir())


def _gemma3_worker(tmp_path, *extra, source=None):
    from export.catalogue import get_recipe
    from export.sources import resolve

    source = source or resolve(get_recipe("tiny-gemma3"), None).path
    out = tmp_path / "out"
    out.mkdir(parents=True)
    result = subprocess.run([str(export_env.ensure_env("mnn")), "-m", "export.mnn", "--source", str(source), "--out",
                             str(out), "--result", str(tmp_path / "result.json"), "--quant-bit", "16", "--min-top1",
                             "0.95", *extra],
                            capture_output=True, text=True, env=export_env.worker_env(), cwd=tmp_path, timeout=600)
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())["parity"], result.stdout


def test_gemma3_local_rope_base_is_fixed_and_its_fault_caught_by_parity(tmp_path):
    """tiny-gemma3 at 16 bits past its 16-token window: llmexport's own RoPE (every layer the global base) fails
    parity on the relative logit bound although top-1 agrees; with export/mnn.py's correction it matches."""
    broken, _ = _gemma3_worker(tmp_path / "a", "--keep-global-rope")
    assert broken["tokenizer_match"] and broken["top1_agreement"] >= 0.95  # top-1 alone would pass it
    assert not broken["passed"] and broken["rel_diff"] > 0.1, (
        f"llmexport now gives Gemma 3's local layers their base (rel. diff {broken['rel_diff']}): "
        "drop _local_rope_for_gemma3 in export/mnn.py")
    fixed, stdout = _gemma3_worker(tmp_path / "b")
    assert "RoPE base 10000 for the sliding-window layers" in stdout
    assert fixed["passed"] and fixed["rel_diff"] < 2e-3 and fixed["greedy_identical"]
    assert fixed["sliding_window"] == 16 and any(p["tokens"] > 16 for p in fixed["prompts"])


def test_gemma3_linear_rope_scaling_is_applied(tmp_path):
    """Gemma 3 4B's config scales the global RoPE linearly (factor 8), which llmexport 0.0.5 ignores: on a tiny
    Gemma 3 with that scaling, export/mnn.py's correction matches transformers at 16 bits."""
    import shutil

    from export.catalogue import get_recipe
    from export.sources import resolve

    source = tmp_path / "src"
    shutil.copytree(resolve(get_recipe("tiny-gemma3"), None).path, source)
    config = json.loads((source / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
    (source / "config.json").write_text(json.dumps(config))
    fixed, stdout = _gemma3_worker(tmp_path / "b", source=source)
    assert "linear RoPE scaling 8 on the global layers" in stdout
    assert fixed["passed"] and fixed["rel_diff"] < 2e-3 and fixed["greedy_identical"], fixed
    broken, _ = _gemma3_worker(tmp_path / "a", "--keep-global-rope", source=source)
    assert not broken["passed"] and broken["rel_diff"] > 0.1, broken


UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_embedding_kept_in_bf16_changes_no_byte_of_the_artifact(tmp_path):
    """llmexport converts the embedding to float32 (for Gemma 3 4B a 2.7 GB copy alive through the export);
    export/mnn.py keeps it in the source's dtype.  From a bf16 tiny Gemma 3 (tied lm_head, 4 and 16 bits), every
    file llmexport writes is byte-identical either way."""
    import shutil

    from export.catalogue import get_recipe
    from export.sources import resolve

    source = tmp_path / "src"
    shutil.copytree(resolve(get_recipe("tiny-gemma3"), None).path, source)
    python = str(export_env.ensure_env("mnn"))
    subprocess.run([python, "-c", "import sys, torch, transformers as tf; m = tf.AutoModelForCausalLM.from_pretrained("
                    "sys.argv[1], dtype=torch.bfloat16); assert m.config.tie_word_embeddings; "
                    "m.save_pretrained(sys.argv[1]); "  # and the tokenizer.json llmexport wants
                    "tf.AutoTokenizer.from_pretrained(sys.argv[1]).backend_tokenizer.save(sys.argv[1] + '/tokenizer.json')",
                    str(source)], check=True, capture_output=True)
    for bits in ("4", "16"):  # 4: the lm_head quantized from float32; 16: written as fp16
        files = {}
        for name, extra in (("kept", []), ("float", ["--float-embeddings"])):
            out = tmp_path / f"{name}-{bits}"
            done = subprocess.run([python, "-m", "export.mnn", "--llmexport-only", "--source", str(source), "--out",
                                   str(out), "--result", str(tmp_path / f"{name}.json"), "--quant-bit", bits, *extra],
                                  capture_output=True, text=True, env=export_env.worker_env(), cwd=tmp_path,
                                  timeout=600)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            # export_args.json names the output folder and llm.mnn carries a fresh UUID each run: both taken out.
            files[name] = {p.name: UUID.sub(b"UUID", p.read_bytes().replace(str(out).encode(), b"OUT"))
                           for p in sorted(out.iterdir()) if p.is_file()}
        assert {"llm.mnn", "llm.mnn.weight"} <= set(files["kept"]) and files["kept"].keys() == files["float"].keys()
        for name in files["kept"]:
            assert files["kept"][name] == files["float"][name], (bits, name)


def test_a_text_only_gemma3_4b_source_is_not_refused(tmp_path):
    from export.catalogue import get_recipe
    from export.mnn import MnnExporter

    recipe = get_recipe("gemma-3-4b")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    MnnExporter().preflight({}, recipe, tmp_path)  # no refusal
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForConditionalGeneration"]}))
    with pytest.raises(HarnessError, match="multimodal"):
        MnnExporter().preflight({}, recipe, tmp_path)


def test_tokenizer_prefix_header_is_rewritten(tmp_path):
    from export.mnn import _fix_prefix

    body = b"\x00\x01binary\nbody"
    path = tmp_path / "tokenizer.mtok"
    path.write_bytes(b"430 4\n3 1 2\n0 1 2 2 1 329\n" + body)
    assert _fix_prefix(path, [1]) == [1, 329]
    assert path.read_bytes() == b"430 4\n3 1 1\n0 1 2 2 1\n" + body
    assert _fix_prefix(path, [1]) is None
    txt = tmp_path / "tokenizer.txt"  # llmexport's text format ends the id line with a space
    txt.write_bytes(b"430 0\n2 1 2\n0 1 2 1 329 \n384\n")
    assert _fix_prefix(txt, [1]) == [1, 329] and txt.read_bytes() == b"430 0\n2 1 1\n0 1 2 1 \n384\n"


def test_tiny_llama_mnn_export(tmp_path):
    """The whole route on tiny-llama at the recipe's int8 (about 10 s once the mnn env exists)."""
    assert main(["--model", "tiny-llama", "--format", "mnn", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "tiny-llama" / "mnn" / "manifest.json").read_text())
    parity = manifest["parity"]
    # The recipe's measured threshold for tiny int8 (export/catalogue.py), not the old blanket 0.8.
    assert parity["passed"] and parity["tokenizer_match"] and parity["top1_agreement"] >= 0.83
    assert parity["criterion"] == "top1_agreement >= 0.83"
    # The tiny checkpoint has no tokenizer.json: one was staged, so MNN got tokenizer.mtok.
    tokenizer = manifest["details"]["tokenizer"]
    assert tokenizer["file"] == "tokenizer.mtok" and tokenizer["staged_tokenizer_json"]
    # llmexport guessed [1, "▁"] as the prefix (the tiny vocabulary has no "▁A"); BOS alone was set.
    assert tokenizer["prefix_fixed"] is None or tokenizer["prefix_fixed"]["set"] == [1]
    assert manifest["details"]["telemetry_guard"]["attempts"]  # the logger import was tried and refused
    # The host runtime on that artifact (runtimes/mnn.py, in the mnn env).
    artifact = tmp_path / "tiny-llama" / "mnn"
    result = subprocess.run([str(export_env.ensure_env("mnn")), "-c", RUNTIME_CHECK, str(artifact)],
                            capture_output=True, text=True, env=export_env.worker_env(), cwd=export_env.ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["bos"] == [1] and out["encode"][0] != 1  # Engine.encode: no BOS
    assert out["decoded"] == "Ünïcode"  # byte-fallback tokens decode to the characters they spell
    assert out["choice"] in (" 12", " 15", " 47")
    # JSON schema (llguidance masks over MNN's own token ids): valid JSON from the tiny model.
    text, finish = out["schema"]
    assert finish == "stop" and set(json.loads(text)) == {"on"} and isinstance(json.loads(text)["on"], bool), text
    # The benchmark from the core venv (no MNN here): the runtime runs in the mnn env.
    results = run_host(RunOptions(models=("tiny-llama",), runtimes=("mnn",), strategies=("incremental",),
                                  sample_users=1, sample_sessions=12, out=tmp_path / "run", artifact=artifact,
                                  progress=False))
    [row] = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["runtime_details"]["process"].startswith("isolated: mnn toolchain env")
    assert row["timings"]["requests"] > 0 and row["timings"]["generated_tokens"] >= row["timings"]["requests"]


RUNTIME_CHECK = r'''
import json, sys
from runtimes.base import GenerationSettings, Request
from runtimes.mnn import MnnRuntime
runtime = MnnRuntime()
runtime.load(sys.argv[1])
model, engine = runtime._model, runtime._engine()
out = {"bos": model.tokenize(""), "encode": engine.encode("The TV"),
       "decoded": model.decode(engine.encode("Ünïcode")).strip()}
[completion] = runtime.generate([Request(prompt="The TV volume is", choices=(" 12", " 15", " 47"),
                                         settings=GenerationSettings(max_tokens=6, temperature=0))])
out["choice"] = completion.text
schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"], "additionalProperties": False}
[completion] = runtime.generate([Request(prompt="Lights:", json_schema=schema, settings=GenerationSettings(max_tokens=30))])
out["schema"] = [completion.text, completion.finish_reason]
print("RESULT " + json.dumps(out))
'''
