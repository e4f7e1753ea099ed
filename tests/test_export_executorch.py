"""ExecuTorch (.pte, XNNPACK) export of a tiny checkpoint, parity, and the executorch host runtime.

The export runs the real path (cached executorch toolchain env, optimum-executorch, parity
through the ExecuTorch runtime).  The runtime and a benchmark run go through
runtimes/isolated.py from the core venv (the engine runs in the toolchain env).
tiny-llama exports in float32 so that parity is exact (logits + 16 greedy tokens); Gemma 3
(sliding window 16, a prompt past it, chunked prefill) is marked slow.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from device_runner.run import RunOptions, open_runtime, run_host
from export import env as export_env
from export.__main__ import main
from export.manifest import verify
from runtimes import GenerationSettings, Request
from runtimes.isolated import IsolatedRuntime

# Closed, so that a random model cannot wander into extra keys with endless strings.
ON_SCHEMA = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
             "additionalProperties": False}


def test_tiny_llama_executorch_export_parity_and_runtime(tmp_path):
    assert main(["--model", "tiny-llama", "--format", "executorch", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "tiny-llama" / "executorch"
    assert verify(folder) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["variant"] == "fp32" and manifest["tools"]["executorch"] == "1.5.1"
    parity = manifest["parity"]
    assert parity["passed"] and parity["mode"] == "exact" and parity["greedy_identical"]
    assert {"model.pte", "pte_config.json", "tokenizer.model"} <= {f["path"] for f in manifest["files"]}

    # The runtime, from the core venv (which has no executorch): it runs in the toolchain env.
    runtime = open_runtime("executorch")
    assert isinstance(runtime, IsolatedRuntime)
    try:
        runtime.load(str(folder))
        assert runtime.max_context == 2048  # the recipe's max_seq_len, read from the .pte
        free, choice, chat = runtime.generate([
            Request(prompt="When it rains", settings=GenerationSettings(max_tokens=6)),
            Request(prompt="The TV volume is", choices=(" 12", " 15", " none", " 1"),
                    settings=GenerationSettings(max_tokens=8)),
            Request(messages=({"role": "user", "content": "lights on"},), settings=GenerationSettings(max_tokens=4)),
        ])
        assert free.timings.generated_tokens >= 1 and free.timings.prompt_tokens > 2 and free.timings.peak_rss_mb
        assert choice.text in (" 12", " 15", " none", " 1")
        assert chat.timings.prompt_tokens > 3
        # JSON schema (llguidance masks over the prompt tokenizer): valid JSON from a random model.
        [schema_out] = runtime.generate([Request(prompt="Lights:", json_schema=ON_SCHEMA,
                                                 settings=GenerationSettings(max_tokens=30))])
        assert schema_out.finish_reason == "stop", schema_out.text
        assert isinstance(json.loads(schema_out.text)["on"], bool) and set(json.loads(schema_out.text)) == {"on"}
        assert schema_out.timings.sampling_ms > 0
        assert runtime.count_tokens("lights on") >= 2
    finally:
        runtime.close()
    _check_prefix_reuse(folder, "The kitchen lights turn on every evening when it rains. " * 4)

    # The whole benchmark on the .pte: the incremental strategy (choices) end to end, one user.
    results = run_host(RunOptions(models=("tiny-llama",), runtimes=("executorch",), strategies=("incremental",),
                                  sample_users=1, sample_sessions=12, out=tmp_path / "run", artifact=folder,
                                  progress=False))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["runtime_version"] == "1.5.1"
    assert rows[0]["runtime_details"]["process"].startswith("isolated: executorch toolchain env")
    assert rows[0]["timings"]["requests"] > 0 and rows[0]["timings"]["prefill_tps"] > 0
    # the row's score is the scorer's on the row's own truth and routines
    from eval.score import score

    assert rows[0]["score"] == {k: score([rows[0]["truth"]], [rows[0]["routines"]]).metrics[k]
                                for k in ("acc.routine_exact", "jaccard.flattened")}


def _check_prefix_reuse(folder, prefix: str, tails=(" The TV volume is", " The speaker volume is"),
                       reused: bool = True) -> None:
    """The .pte's KV cache is reused after a shared prefix (when safe), and gives what a fresh run gives."""
    questions = [prefix + tail for tail in tails]
    kept, fresh = open_runtime("executorch"), open_runtime("executorch")
    try:
        kept.load(str(folder))
        fresh.load(str(folder))
        first, second = kept.generate([Request(prompt=q, settings=GenerationSettings(max_tokens=6)) for q in questions])
        [alone] = fresh.generate([Request(prompt=questions[1], settings=GenerationSettings(max_tokens=6))])
    finally:
        kept.close()
        fresh.close()
    assert first.timings.prompt_tokens_evaluated == first.timings.prompt_tokens
    if reused:
        assert 0 < second.timings.prompt_tokens_evaluated < second.timings.prompt_tokens / 3
    else:
        assert second.timings.prompt_tokens_evaluated == second.timings.prompt_tokens
    assert second.text == alone.text  # greedy: the same tokens with or without the reused prefix


@pytest.mark.slow
def test_tiny_gemma3_executorch_past_the_sliding_window(tmp_path):
    assert main(["--model", "tiny-gemma3", "--format", "executorch", "--out", str(tmp_path)]) == 0
    parity = json.loads((tmp_path / "tiny-gemma3" / "executorch" / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["greedy_identical"] and parity["sliding_window"] == 16
    assert max(p["tokens"] for p in parity["prompts"]) > 16
    folder = tmp_path / "tiny-gemma3" / "executorch"
    prefix = "The kitchen lights turn on every evening when it rains. " * 4  # well past the window of 16
    # The first sequence runs a few tokens past the shared prefix: within the window, reused ...
    _check_prefix_reuse(folder, prefix)
    # ... and a whole window beyond it, the ring cache lost positions the prefix needs: evaluated anew.
    _check_prefix_reuse(folder, prefix, (" " + "and the blinds close slowly in the late evening " * 3, " The TV is"),
                        reused=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-qwen2", "tiny-phi3"])
def test_other_architectures_export_exactly(model, tmp_path):
    assert main(["--model", model, "--format", "executorch", "--out", str(tmp_path)]) == 0
    parity = json.loads((tmp_path / model / "executorch" / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["mode"] == "exact" and parity["greedy_identical"]


@pytest.mark.slow
def test_tiny_llama_executorch_8da4w_is_quantized_and_close(tmp_path):
    # 8da4w: what the recipes ship for every real model (export/catalogue.py), not 8da8w
    assert main(["--model", "tiny-llama", "--format", "executorch", "--variant", "8da4w", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "tiny-llama" / "executorch-8da4w" / "manifest.json").read_text())
    assert manifest["variant"] == "8da4w"
    parity = manifest["parity"]
    assert parity["passed"] and parity["mode"] == "quantized" and parity["top1_agreement"] >= 0.6


def test_a_bf16_source_is_loaded_in_bf16_and_quantized_module_by_module():
    """export/et_optimum.py: a bf16 model whose Embedding / Linear modules turn float32 one at a time just before
    optimum's own quantize_model_ holds the same weights as optimum quantizing the whole model loaded in float32
    (what 8da4w needs; a float32 load is twice the bf16 checkpoint).  A tied lm_head included.  The full
    lowering was measured byte-identical on tiny bf16 Llama and Gemma 3 (same .pte sha256)."""
    from export.executorch import optimum_dtype_args

    assert optimum_dtype_args("bfloat16") == ["--dtype", "bfloat16"] and optimum_dtype_args("float32") == []
    script = """
import copy, torch, transformers as tf
from optimum.exporters.executorch.quantization import quantize_model_
from export.et_optimum import quantize_by_module
torch.manual_seed(0)
config = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
source = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
fp32 = copy.deepcopy(source).float()
quantize_model_(fp32, qlinear_config="8da4w", qembedding_config="8w")
a = fp32.state_dict()
# 4096 elements: the 256 x 64 embedding / lm_head and the 128 x 64 MLP weights go in row blocks of 64
for chunk in (1 << 30, 4096):
    bf16 = copy.deepcopy(source)
    quantize_by_module(quantize_model_, chunk_elements=chunk)(bf16, qlinear_config="8da4w", qembedding_config="8w")
    b = bf16.state_dict()
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (chunk, key)
    assert bf16.dtype == torch.float32 and bf16._dtype == torch.float32  # optimum makes the KV cache in model.dtype
    for quantized in ("model.embed_tokens", "lm_head"):  # the tied pair: both quantized (int8 data), as optimum does
        assert b[quantized + ".parametrizations.weight.original0"].dtype == torch.int8, quantized
print("same", len(a))
"""
    done = subprocess.run([str(export_env.ensure_env("executorch", quiet=True)), "-c", script], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "same" and int(last[1]) > 10
    assert "quantizing 1 Embedding modules one at a time" in done.stdout  # the patched path ran


# --- vendor backends (QNN, NeuroPilot): everything before the vendor tool runs --------------------
# No SDK here: these check the early refusals, the options, and the command lines; nothing fakes an
# SDK into producing an artifact or a parity verdict.

from pathlib import Path  # noqa: E402

from eval.errors import HarnessError  # noqa: E402
from export import pipeline, vendor_backends as vendor  # noqa: E402


def _fake_qnn_sdk(root: Path, libs=vendor.QNN_HOST_LIBS) -> Path:
    (root / vendor.QNN_HOST_LIB_DIR).mkdir(parents=True)
    for lib in libs:
        (root / vendor.QNN_HOST_LIB_DIR / lib).write_bytes(b"")
    return root


def test_qnn_sdk_check_names_the_missing_host_library(tmp_path, monkeypatch, capsys):
    sdk = _fake_qnn_sdk(tmp_path / "qairt", libs=("libQnnHtp.so", "libQnnSystem.so"))
    monkeypatch.setenv("QNN_SDK_ROOT", str(sdk))
    assert main(["--model", "phi-4-mini", "--format", "executorch", "--variant", "qnn-16a4w", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "lib/x86_64-linux-clang/libQnnHtpPrepare.so" in err and "download_qnn_sdk" in err
    (sdk / vendor.QNN_HOST_LIB_DIR / "libQnnHtpPrepare.so").write_bytes(b"")
    assert vendor.qnn_sdk_problem(str(sdk)) is None


def test_qnn_refuses_recipes_its_script_does_not_register(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QNN_SDK_ROOT", str(_fake_qnn_sdk(tmp_path / "qairt")))
    for model, why in (("qwen-2.5-3b", "only at 0.5B and 1.5B"), ("gemma-3-4b", "only at 1B"),
                       ("tiny-llama", "no model entry")):
        assert main(["--model", model, "--format", "executorch", "--variant", "qnn", "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f"Model '{model}' cannot be exported for QNN" in err and why in err and "xnnpack" in err


def test_qnn_variant_soc_and_dry_run_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QNN_SDK_ROOT", str(_fake_qnn_sdk(tmp_path / "qairt")))
    monkeypatch.setenv("QNN_SOC_MODEL", "sm8750")
    [plan] = pipeline.make_plans("phi-4-mini", ["executorch"], "qnn", root=tmp_path)
    assert plan.variant == "qnn-16a4w" and plan.out == tmp_path / "phi-4-mini" / "executorch-qnn-16a4w"
    assert main(["--model", "llama-3.2-3b", "--format", "executorch", "--variant", "qnn-fp16", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "--compile_only --soc_model SM8750" in out and " -F " in out and "parity: not run" in out
    assert f"toolchain env: {export_env.env_dir('executorch-qnn')}" in out  # where the QNN script runs
    with pytest.raises(HarnessError, match="VARIANT=qnn-16a4w"):
        pipeline.make_plans("phi-4-mini", ["executorch"], "qnn-8da4w")
    monkeypatch.setenv("QNN_SOC_MODEL", "SM9999")
    with pytest.raises(HarnessError, match="QNN_SOC_MODEL"):
        pipeline.make_plans("phi-4-mini", ["executorch"], "qnn")


def test_qnn_command_compiles_only_with_the_checkpoint_inputs(tmp_path):
    settings = vendor.qnn_options({"backend": "qnn", "max_seq_len": 1024})
    inputs = {"checkpoint": tmp_path / "c.pth", "params": tmp_path / "p.json", "tokenizer_model": tmp_path / "t.model"}
    cmd = vendor.qnn_command("py", "llama3_2-3b_instruct", tmp_path / "a", settings, inputs, tmp_path / "cal.json",
                             tmp_path / "build")
    assert cmd[:3] == ["py", "-m", vendor.QNN_SCRIPT] and "--compile_only" in cmd and "-F" not in cmd

    def value(flag):
        return cmd[cmd.index(flag) + 1]

    assert value("--decoder_model") == "llama3_2-3b_instruct" and value("--soc_model") == vendor.QNN_DEFAULT_SOC
    assert value("--max_seq_len") == value("--max_context_len") == "1024" and value("--prefill_ar_len") == "128"
    assert value("--checkpoint") == str(tmp_path / "c.pth") and value("--tokenizer_model") == str(tmp_path / "t.model")
    assert value("--calib_samples") == str(tmp_path / "cal.json") and value("--build_folder") == str(tmp_path / "build")


def test_qnn_llama_needs_metas_original_checkpoint(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "consolidated.00.pth").write_bytes(b"")
    with pytest.raises(HarnessError, match="no original/params.json"):
        vendor.qnn_source_inputs("llama3_2-3b_instruct", tmp_path)
    (tmp_path / "original" / "params.json").write_text("{}")
    (tmp_path / "original" / "tokenizer.model").write_text("")
    assert vendor.qnn_source_inputs("llama3_2-3b_instruct", tmp_path)["params"] == tmp_path / "original/params.json"


def test_static_llama_params_from_a_phi4_mini_config():
    # Phi-4-mini-instruct's published config.json sizes (the fields the params need).
    hf = {"hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 24, "num_key_value_heads": 8,
          "num_hidden_layers": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 200064,
          "partial_rotary_factor": 0.75, "model_type": "phi3"}
    params = vendor.static_llama_params(hf)
    assert (params["dim"], params["hidden_dim"], params["n_heads"], params["n_kv_heads"], params["n_layers"]) == (
        3072, 8192, 24, 8, 32)
    assert params["partial_rotary_factor"] == 0.75 and params["use_hf_rope"] and "head_dim" not in params
    assert vendor.static_llama_params({**hf, "head_dim": 96})["head_dim"] == 96  # only when not hidden/heads


def test_mediatek_needs_an_executorch_checkout_then_a_supported_model(tmp_path, monkeypatch):
    monkeypatch.setattr("export.executorch._env_has_module", lambda name: True)  # as if the wheels were installed
    monkeypatch.delenv("EXECUTORCH_SRC", raising=False)
    with pytest.raises(HarnessError, match="EXECUTORCH_SRC is not set"):
        pipeline.make_plans("qwen-2.5-3b", ["executorch"], "mediatek")
    monkeypatch.setenv("EXECUTORCH_SRC", str(tmp_path))
    with pytest.raises(HarnessError, match="has no examples/mediatek/model_export_scripts/llama.py"):
        pipeline.make_plans("qwen-2.5-3b", ["executorch"], "mediatek")
    for rel in (vendor.MTK_SCRIPT, "examples/mediatek/aot_utils/llm_utils/utils.py",
                "examples/mediatek/models/llm_models/configuration_base.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    [plan] = pipeline.make_plans("qwen-2.5-3b", ["executorch"], "mediatek-a16w8", root=tmp_path / "a")
    assert plan.variant == "mediatek-a16w8" and "--precision A16W8" in plan.steps[0]
    assert "128t2048c 1t2048c" in plan.steps[0]
    with pytest.raises(HarnessError, match="cannot be exported for MediaTek NeuroPilot: its checkpoint is the multimodal"):
        pipeline.make_plans("gemma-3-4b", ["executorch"], "mediatek")
    with pytest.raises(HarnessError, match="precision 'w4' is not offered"):
        pipeline.make_plans("qwen-2.5-3b", ["executorch"], "mediatek-w4")


def test_mediatek_command_and_layer_split():
    settings = vendor.mtk_options({"backend": "mediatek", "max_seq_len": 1024, "mtk_num_chunks": 2})
    cmd = vendor.mtk_command("py", Path("/w/config.json"), settings, Path("/c.txt"))
    assert cmd[1:3] == ["model_export_scripts/llama.py", "/w/config.json"]
    assert cmd[cmd.index("-shapes") + 1:] == ["128t1024c", "1t1024c"] and "A16W4" in cmd
    vendor.check_mtk_layers({"num_hidden_layers": 28}, 4)
    with pytest.raises(HarnessError, match="28 layers do not split into 3"):
        vendor.check_mtk_layers({"num_hidden_layers": 28}, 3)


def test_a_vendor_result_without_parity_reason_is_refused_and_not_run_is_reported(tmp_path):
    plan = pipeline.Plan(pipeline.get_recipe("phi-4-mini"), "executorch", "qnn-16a4w", {}, tmp_path, [])
    pipeline._check_parity_entry(vendor.parity_not_run("QNN HTP", "the phone"), plan)
    pipeline._check_parity_entry({"passed": True}, plan)
    for bad in ({"passed": None}, {"passed": None, "skipped": " "}, {}, None, {"passed": 1}):
        with pytest.raises(HarnessError, match="no parity verdict"):
            pipeline._check_parity_entry(bad, plan)
    assert pipeline.parity_line(vendor.parity_not_run("QNN HTP", "the phone")).startswith("parity NOT run: QNN HTP")
