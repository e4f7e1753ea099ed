"""GGUF export of tiny random checkpoints, checked against transformers (DESIGN.md, rule 6).

Runs the real path: `python -m export` -> the cached gguf toolchain env (made on first use by
export/env.py, as `make export` does) -> llama.cpp's converter -> parity -> quantize ->
parity -> manifest.  tiny-llama runs in CI; the other three architectures are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtimes.versions import LLAMACPP_VERSION

from eval.errors import HarnessError
from export import env as export_env
from export.__main__ import main
from export.manifest import verify


def _need_wheel() -> None:
    try:
        export_env.llamacpp_wheels()
    except HarnessError as exc:
        pytest.skip(str(exc))


def _export(tmp_path, model: str, *extra: str) -> dict:
    _need_wheel()
    assert main(["--model", model, "--format", "gguf", "--out", str(tmp_path / "artifacts"), *extra]) == 0
    folder = tmp_path / "artifacts" / model / "gguf"
    assert verify(folder) == []
    return json.loads((folder / "manifest.json").read_text())


def _check_manifest(manifest: dict, model: str) -> None:
    assert manifest["model"] == model and manifest["format"] == "gguf" and manifest["variant"] == "Q8_0"
    [entry] = manifest["files"]
    assert entry["path"] == f"{model}-q8_0.gguf" and entry["bytes"] > 10_000
    assert manifest["tools"]["llama-cpp-python"] == LLAMACPP_VERSION and manifest["tools"]["torch"] == "2.13.0"
    assert manifest["source"]["kind"] == "tiny" and manifest["source"]["revision"].startswith("sha256:")
    parity = manifest["parity"]
    assert parity["passed"] and parity["tokenizer_match"]
    exact = parity["float"]
    # f32 GGUF vs transformers: logits to ~1e-4 relative, 16 greedy tokens identical on each prompt.
    assert exact["passed"] and exact["greedy_identical"] and exact["rel_diff"] < 5e-3
    assert exact["top1_agreement"] == 1.0
    assert parity["quantized"]["top1_agreement"] >= 0.8
    assert manifest["export_seconds"] > 0 and manifest["peak_rss_mb"] > 0


def test_tiny_llama_gguf_export_matches_transformers_and_runs_in_the_harness(tmp_path, monkeypatch):
    manifest = _export(tmp_path, "tiny-llama")
    _check_manifest(manifest, "tiny-llama")
    # The artifact runs through the benchmark's own llama.cpp runtime.
    pytest.importorskip("llama_cpp")
    from runtimes import Request, get_runtime
    from runtimes.base import GenerationSettings

    gguf = tmp_path / "artifacts" / "tiny-llama" / "gguf" / manifest["files"][0]["path"]
    runtime = get_runtime("llamacpp", n_ctx=256)
    try:
        runtime.load(str(gguf))
        [done] = runtime.generate([Request(messages=({"role": "user", "content": "lights on"},),
                                           settings=GenerationSettings(max_tokens=8))])
        assert done.timings.prompt_tokens > 3 and done.timings.generated_tokens >= 1
        # A vocabulary (384) smaller than the grammar fast path's top-k tiers: the constrained
        # choice is still one of the choices (this crashed in np.argpartition before).
        choices = (" 21", " 47", " none")
        [picked] = runtime.generate([Request(prompt="Set the volume to", choices=choices,
                                             settings=GenerationSettings(max_tokens=8))])
        assert picked.text in choices
    finally:
        runtime.close()

    # A run names the model it loads: --model tiny-llama finds tiny-llama's export under ./artifacts
    # (never the packaged Gemma GGUF), and its rows carry that file.
    from device_runner.run import RunOptions, run_host

    monkeypatch.chdir(tmp_path)
    out = run_host(RunOptions(models=("tiny-llama",), strategies=("incremental",), data="sample", users="0",
                              sample_users=1, sample_sessions=2, out=tmp_path / "run", progress=False))
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["model"] == "tiny-llama" and row["artifact"] == str(Path("artifacts") / "tiny-llama" / "gguf" / gguf.name)
    assert row["runtime_details"]["model_path"] == row["artifact"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-qwen2", "tiny-gemma3", "tiny-phi3"])
def test_other_tiny_architectures_gguf(tmp_path, model):
    manifest = _export(tmp_path, model)
    _check_manifest(manifest, model)
    if model == "tiny-gemma3":
        # The long prompt is longer than the sliding window: the hybrid cache was exercised.
        window = manifest["parity"]["float"]["sliding_window"]
        assert window == 16
        assert max(p["tokens"] for p in manifest["parity"]["float"]["prompts"]) > window


def test_f16_variant_is_checked_exactly(tmp_path):
    _need_wheel()
    assert main(["--model", "tiny-qwen2", "--format", "gguf", "--variant", "F16", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "tiny-qwen2" / "gguf-f16"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variant"] == "F16" and manifest["parity"]["mode"] == "exact"
    assert manifest["parity"]["greedy_identical"] and manifest["parity"]["passed"]
