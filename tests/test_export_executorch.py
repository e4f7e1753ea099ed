"""ExecuTorch (.pte, XNNPACK) export of a tiny checkpoint, parity, and the executorch host runtime.

The export runs the real path (cached executorch toolchain env, optimum-executorch, parity
through the ExecuTorch runtime).  The runtime checks run inside that env (it has executorch).
tiny-llama exports in float32 so that parity is exact (logits + 16 greedy tokens); Gemma 3
(sliding window 16, a prompt past it, chunked prefill) is marked slow.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from export import env as export_env
from export.__main__ import main
from export.manifest import verify

RUNTIME_CHECK = r'''
import json, sys
from runtimes import Request, get_runtime
from runtimes.base import GenerationSettings
from eval.errors import HarnessError
rt = get_runtime("executorch")
rt.load(sys.argv[1])
out = {}
free = rt.generate([Request(prompt="When it rains", settings=GenerationSettings(max_tokens=6))])[0]
out["free"] = [free.text, free.timings.generated_tokens, free.timings.prompt_tokens, free.timings.decode_tps]
choices = (" 12", " 15", " none", " 1")
out["choice"] = rt.generate([Request(prompt="The TV volume is", choices=choices,
                                     settings=GenerationSettings(max_tokens=8))])[0].text
chat = rt.generate([Request(messages=({"role": "user", "content": "lights on"},), settings=GenerationSettings(max_tokens=4))])
out["chat_prompt_tokens"] = chat[0].timings.prompt_tokens
try:
    rt.generate([Request(prompt="x", json_schema={"type": "object"})])
    out["schema"] = "accepted"
except HarnessError as exc:
    out["schema"] = str(exc)
print("RESULT " + json.dumps(out))
'''


def test_tiny_llama_executorch_export_parity_and_runtime(tmp_path):
    assert main(["--model", "tiny-llama", "--format", "executorch", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "tiny-llama" / "executorch"
    assert verify(folder) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variant"] == "fp32" and manifest["tools"]["executorch"] == "1.5.1"
    parity = manifest["parity"]
    assert parity["passed"] and parity["mode"] == "exact" and parity["greedy_identical"]
    assert {"model.pte", "pte_config.json", "tokenizer.model"} <= {f["path"] for f in manifest["files"]}

    python = export_env.ensure_env("executorch")
    result = subprocess.run([str(python), "-c", RUNTIME_CHECK, str(folder)], capture_output=True, text=True,
                            env=export_env.worker_env(), cwd=export_env.ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["free"][1] >= 1 and out["free"][2] > 2
    assert out["choice"] in (" 12", " 15", " none", " 1")
    assert out["chat_prompt_tokens"] > 3
    assert "does not support JSON-schema" in out["schema"]


@pytest.mark.slow
def test_tiny_gemma3_executorch_past_the_sliding_window(tmp_path):
    assert main(["--model", "tiny-gemma3", "--format", "executorch", "--out", str(tmp_path)]) == 0
    parity = json.loads((tmp_path / "tiny-gemma3" / "executorch" / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["greedy_identical"] and parity["sliding_window"] == 16
    assert max(p["tokens"] for p in parity["prompts"]) > 16


@pytest.mark.slow
def test_tiny_llama_executorch_8da4w_is_quantized_and_close(tmp_path):
    assert main(["--model", "tiny-llama", "--format", "executorch", "--variant", "8da8w", "--out", str(tmp_path)]) == 0
    parity = json.loads((tmp_path / "tiny-llama" / "executorch-8da8w" / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["mode"] == "quantized" and parity["top1_agreement"] >= 0.6
