"""ONNX (onnxruntime-genai) export of a tiny checkpoint, parity, and the onnxruntime host runtime.

The export runs the real path (cached onnx toolchain env, model builder, ORT format,
parity through onnxruntime-genai).  The runtime checks run inside that same env, which has
onnxruntime-genai, so the core venv needs nothing extra; JSON-schema decoding (llguidance) is
also checked in the core venv when it has onnxruntime-genai (`make install-onnxruntime`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest

from export import env as export_env
from export.__main__ import main
from export.manifest import verify
from runtimes import GenerationSettings, Request, get_runtime

RUNTIME_CHECK = r'''
import json, sys
from runtimes import Request, get_runtime
from runtimes.base import GenerationSettings
from eval.errors import HarnessError
rt = get_runtime("onnxruntime")
rt.load(sys.argv[1])
out = {}
free = rt.generate([Request(prompt="When it rains", settings=GenerationSettings(max_tokens=6))])[0]
out["free"] = [free.text, free.timings.generated_tokens, free.timings.prompt_tokens]
choices = (" 12", " 15", " none", " 1")
picked = rt.generate([Request(prompt="The TV volume is", choices=choices, settings=GenerationSettings(max_tokens=8))])
out["choice"] = picked[0].text
chat = rt.generate([Request(messages=({"role": "user", "content": "lights on"},), settings=GenerationSettings(max_tokens=4))])
out["chat_prompt_tokens"] = chat[0].timings.prompt_tokens
schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"], "additionalProperties": False}
try:
    done = rt.generate([Request(prompt="Lights:", json_schema=schema, settings=GenerationSettings(max_tokens=30))])[0]
    out["schema"] = [done.text, done.finish_reason]
except HarnessError as exc:
    out["schema"] = str(exc)
out["info"] = rt.info().name
print("RESULT " + json.dumps(out))
'''


def test_tiny_llama_onnx_export_parity_and_runtime(tmp_path):
    assert main(["--model", "tiny-llama", "--format", "onnx", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "tiny-llama" / "onnx"
    assert verify(folder) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variant"] == "fp32" and manifest["tools"]["onnxruntime-genai"] == "0.15.2"
    parity = manifest["parity"]
    assert parity["passed"] and parity["mode"] == "exact" and parity["greedy_identical"] and parity["tokenizer_match"]
    assert parity["rel_diff"] < 1e-3
    paths = {f["path"] for f in manifest["files"]}
    assert {"model.onnx", "genai_config.json", "mobile/model.ort", "mobile/required_operators.config"} <= paths
    usability = manifest["details"]["mobile_usability"]
    assert usability["nnapi"] is False and "CPU EP" in usability["recommendation"]
    assert manifest["details"]["nnapi_selectable_by_genai"] is False

    python = export_env.ensure_env("onnx")
    result = subprocess.run([str(python), "-c", RUNTIME_CHECK, str(folder)], capture_output=True, text=True,
                            env=export_env.worker_env(), cwd=export_env.ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["free"][1] >= 1 and out["free"][2] > 2
    assert out["choice"] in (" 12", " 15", " none", " 1")
    assert out["chat_prompt_tokens"] > 3
    assert out["info"] == "onnxruntime"
    # JSON schema: where llguidance is installed (the core venv after `make install-onnxruntime`),
    # valid JSON from the random tiny model; the onnx toolchain env, without it, says how to get it.
    if isinstance(out["schema"], str):
        assert "needs the Python package llguidance" in out["schema"] and "pip install" in out["schema"]
    else:
        _assert_on_json(*out["schema"])
    if importlib.util.find_spec("onnxruntime_genai") is not None:  # the core venv runs this runtime too
        rt = get_runtime("onnxruntime")
        try:
            rt.load(str(folder))
            [done] = rt.generate([Request(prompt="Lights:", json_schema=ON_SCHEMA,
                                          settings=GenerationSettings(max_tokens=30))])
        finally:
            rt.close()
        _assert_on_json(done.text, done.finish_reason)
        _check_prefix_reuse(folder)


def _check_prefix_reuse(folder):
    """The kept generator continues after a shared prefix, and gives what a fresh one gives."""
    from runtimes.onnxruntime import OnnxRuntimeGenaiRuntime

    prefix = "The kitchen lights turn on every evening when it rains. " * 4
    questions = [prefix + "The TV volume is", prefix + "The speaker volume is"]
    kept = OnnxRuntimeGenaiRuntime()
    kept.load(str(folder))
    try:
        first, second = kept.generate([Request(prompt=q, settings=GenerationSettings(max_tokens=8)) for q in questions])
    finally:
        kept.close()
    assert first.timings.prompt_tokens_evaluated == first.timings.prompt_tokens
    assert 0 < second.timings.prompt_tokens_evaluated < second.timings.prompt_tokens / 3  # the prefix came from the cache
    fresh = OnnxRuntimeGenaiRuntime()
    fresh.load(str(folder))
    try:
        [alone] = fresh.generate([Request(prompt=questions[1], settings=GenerationSettings(max_tokens=8))])
    finally:
        fresh.close()
    assert alone.timings.prompt_tokens_evaluated == alone.timings.prompt_tokens
    assert second.text == alone.text  # greedy: the same tokens with or without the reused prefix


# Closed, so that a random model cannot wander into extra keys with endless strings.
ON_SCHEMA = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
             "additionalProperties": False}


def _assert_on_json(text: str, finish: str) -> None:
    assert finish == "stop", text
    value = json.loads(text)
    assert set(value) == {"on"} and isinstance(value["on"], bool), text


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-qwen2", "tiny-gemma3", "tiny-phi3"])
def test_other_tiny_architectures_onnx(tmp_path, model):
    assert main(["--model", model, "--format", "onnx", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / model / "onnx" / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["greedy_identical"]
