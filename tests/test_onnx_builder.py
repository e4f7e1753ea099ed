"""export/onnx_builder.py: onnxruntime-genai's model builder with our workarounds, on tiny checkpoints.

- int4 quantized one weight at a time writes the same bytes as the builder's own whole-graph pass
  (which holds every weight in float32 at once: out of memory at 4B);
- Gemma 3 with linear RoPE scaling (the 4B's config): the builder alone scales the sliding-window
  layers' RoPE too and misses transformers' logits; with the workaround the fp32 export matches.
Both run in the cached onnx toolchain env (made on first use, as the export tests do).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from export import env as export_env
from export.sources import _tiny

ROOT = Path(__file__).resolve().parents[1]


def _build(python: Path, source: Path, out: Path, precision: str, plain: bool = False,
           whole_graph: bool = False, slice_bytes: int | None = None) -> None:
    env = export_env.worker_env()
    if whole_graph:
        env["EW_ONNX_WHOLE_GRAPH_QUANTIZATION"] = "1"
    if slice_bytes:
        env["EW_ONNX_QUANT_SLICE_BYTES"] = str(slice_bytes)
    module = "onnxruntime_genai.models.builder" if plain else "export.onnx_builder"
    cmd = [str(python), "-m", module, "-i", str(source), "-o", str(out), "-p", precision, "-e", "cpu",
           "-c", str(out.parent / f"{out.name}-cache")]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_streaming_int4_writes_the_builders_own_bytes(tmp_path):
    """One weight at a time, and (as for a weight over protobuf's 2 GB) in column slices: the same bytes."""
    python = export_env.ensure_env("onnx", quiet=True)
    source = _tiny("gemma3").path
    _build(python, source, tmp_path / "whole", "int4", whole_graph=True)
    _build(python, source, tmp_path / "stream", "int4")
    # 25,600 bytes: every weight of the tiny model (K = 64 or 128) in 2-4 slices of 50-100 columns
    _build(python, source, tmp_path / "sliced", "int4", slice_bytes=25_600)
    whole = (tmp_path / "whole" / "model.onnx").read_bytes()  # the graph, with every tensor's offset
    assert (tmp_path / "stream" / "model.onnx").read_bytes() == whole
    assert (tmp_path / "sliced" / "model.onnx").read_bytes() == whole
    assert whole.count(b"MatMulNBits") >= 31  # quantized at all (an unquantized pair would also be equal)
    result = subprocess.run([str(python), "-c", SAME_TENSORS, str(tmp_path / "whole"), str(tmp_path / "stream"),
                             str(tmp_path / "sliced")], cwd=ROOT, env=export_env.worker_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "SAME" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


# Every initializer bit for bit, except the builder's own RoPE tables, which it computes with torch
# and which came out 1 ulp apart in one of several identical runs on a loaded machine.
SAME_TENSORS = r"""
import sys, numpy as np, onnx
from onnx import numpy_helper
def tensors(folder):
    return {t.name: numpy_helper.to_array(t, base_dir=folder)
            for t in onnx.load(folder + "/model.onnx", load_external_data=False).graph.initializer}
ref = tensors(sys.argv[1])
for folder in sys.argv[2:]:
    got = tensors(folder)
    assert got.keys() == ref.keys(), folder
    for name, array in ref.items():
        if "_cache" in name:
            assert np.allclose(got[name], array, rtol=0, atol=1e-6), (folder, name)
        else:
            assert got[name].dtype == array.dtype and np.array_equal(got[name], array), (folder, name)
print("SAME")
"""


COMPARE = r'''
import json, sys
import numpy as np, torch, transformers, onnxruntime_genai as og
source, *folders = sys.argv[1:]
model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
ids = [int(i) for i in np.random.default_rng(0).integers(5, 300, 120)]
with torch.no_grad():
    ref = model(torch.tensor([ids])).logits[0].numpy()
out = {}
for folder in folders:
    m = og.Model(folder)
    params = og.GeneratorParams(m)
    params.set_search_options(max_length=len(ids) + 8)
    g = og.Generator(m, params)
    g.append_tokens(np.asarray(ids, dtype=np.int32))
    got = np.asarray(g.get_output("logits"))[0]
    out[folder] = float(np.abs(got - ref).max() / np.abs(ref).max())
print("RESULT " + json.dumps(out))
'''


def test_gemma3_linear_rope_scaling_matches_transformers(tmp_path):
    python = export_env.ensure_env("onnx", quiet=True)
    source = tmp_path / "src"
    shutil.copytree(_tiny("gemma3").path, source)
    config = json.loads((source / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}  # as Gemma 3 4B's checkpoint has it
    (source / "config.json").write_text(json.dumps(config))
    ours, plain = tmp_path / "ours", tmp_path / "plain"
    _build(python, source, ours, "fp32")
    _build(python, source, plain, "fp32", plain=True)
    result = subprocess.run([str(python), "-c", COMPARE, str(source), str(ours), str(plain)], cwd=ROOT,
                            env={**export_env.worker_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
                            capture_output=True, text=True, timeout=600)
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, result.stdout[-2000:] + result.stderr[-2000:]
    rel = json.loads(line[len("RESULT "):])
    assert rel[str(ours)] < 1e-4, rel  # exact up to float rounding
    assert rel[str(plain)] > 0.05, rel  # the builder alone rotates the local layers wrongly
