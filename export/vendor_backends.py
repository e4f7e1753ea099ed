"""ExecuTorch's vendor NPU backends: Qualcomm QNN (HTP) and MediaTek NeuroPilot, through ExecuTorch's own scripts.

Neither is verified here (no QNN SDK, no NeuroPilot SDK on this machine): what is tested is
everything before the vendor tool runs (SDK checks that name the missing file, the recipe ->
script mapping, the command lines, the params derived from a checkpoint's config).

Qualcomm QNN: executorch 1.5.1's wheel ships the official static-LLM exporter
`executorch.examples.qualcomm.oss_scripts.llama.llama` and its model registry. Facts read there
that shape this module:
  - `--decoder_model` keys for our recipes: `llama3_2-3b_instruct` and `phi_4_mini`. Qwen 2.5 is
    registered only at 0.5B / 1.5B and Gemma 3 only at 1B, so qwen-2.5-3b and gemma-3-4b are refused.
  - quantization is fixed per model by its quant recipe (no --ptq flag in 1.5.1): 16-bit
    activations, 4-bit (block) weights with some 8-bit layers, i.e. "16a4w"; `-F` gives fp16.
  - it needs calibration data even with --compile_only (a local --calib_samples JSON is the offline
    way), a --prompt, and a --build_folder (realpath(None) fails), though neither is used to compile.
  - the wheel leaves out the models' params JSON files (examples/models/*/config/*.json), so
    --params must be given: Llama 3.2 has Meta's original/params.json; for Phi-4-mini it is derived
    from the checkpoint's config.json (`static_llama_params`).
  - Llama 3.2 loads Meta's original/consolidated.00.pth with its tiktoken tokenizer.model;
    Phi-4-mini's HF weights go through executorch's own phi_4_mini converter, and its tokenizer is
    loaded by hub id, which transformers resolves to a folder of that name in the working dir.
  - host compilation dlopens libQnnHtp.so / libQnnSystem.so (libQnnHtpPrepare.so prepares the
    graph) from $QNN_SDK_ROOT/lib/x86_64-linux-clang; with QNN_SDK_ROOT unset executorch would
    download an SDK (and a glibc, libc++) by itself, which we never let happen: it is required.
  - its imports need torchtune, lm-eval, datasets, pydot: the `executorch-qnn` env.

MediaTek NeuroPilot: (b) executorch's example script from a checkout the user names
(EXECUTORCH_SRC), not a lowering of our own. Why: the phone side (mtk_llama_executor_runner)
expects exactly what examples/mediatek/model_export_scripts/llama.py writes: the decoder cut
into chunks of equal layer counts, each taking hidden states, mask, rotary embeddings and a
fixed-size KV cache as inputs, one method per fixed shape ("128t1024c" prompt, "1t1024c"
generation) sharing weights, and the embedding table as a separate .bin. Its model code
(examples/mediatek/models/llm_models) is not in the wheel, and a lowering of our own through
NeuropilotPartitioner would be a second, unverified copy of that I/O contract. The script
quantizes with NeuropilotQuantizer (A16W4 / A16W8 / A16W16 / A8W4 / A8W8), compiles for
platform mt6989 (Dimensity 9300), and the README reports ~114 GB RAM and ~2.5 h for Llama 3 8B.

Parity of either cannot run on this host: the .pte holds a QNN context binary / NeuroPilot DLA
that only the phone's NPU (or the vendor's simulator) runs, so the worker records parity as
not run (`passed: None`, with the reason), never as passed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

# --- Qualcomm QNN --------------------------------------------------------------------------------

QNN_HOST_LIB_DIR = "lib/x86_64-linux-clang"
# What compiling for HTP on an x86 host loads from the SDK (executorch/backends/qualcomm).
QNN_HOST_LIBS = ("libQnnHtp.so", "libQnnSystem.so", "libQnnHtpPrepare.so")
QNN_QUANT = ("16a4w", "fp16")  # the model's own PTQ recipe, or -F (fp16, no quantization)
QNN_DEFAULT_SOC = "SM8650"  # Snapdragon 8 Gen 3 (HTP v75)
# executorch 1.5.1 get_soc_to_chipset_map(): the SoCs its compiler spec accepts.
QNN_SOCS = ("SA8295", "SA8797", "SC8380XP", "SM8350", "SM8450", "SM8475", "SM8550", "SA8255", "SM8650",
            "SM8750", "SM8850", "SSG2115P", "SSG2125P", "SXR1230P", "SXR2230P", "SXR2330P", "QCS9100",
            "SAR2230P", "SW6100", "QCM6490", "SM8845")
QNN_MODEL_MODES = ("hybrid", "kv", "lookahead")
QNN_SCRIPT = "executorch.examples.qualcomm.oss_scripts.llama.llama"

# Recipe key -> the script's --decoder_model.
QNN_DECODER_MODELS = {"llama-3.2-3b": "llama3_2-3b_instruct", "phi-4-mini": "phi_4_mini"}
QNN_REFUSED = {
    "qwen-2.5-3b": "its Qualcomm LLM script registers Qwen 2.5 only at 0.5B and 1.5B (qwen2_5-0_5b, qwen2_5-1_5b)",
    "gemma-3-4b": "its Qualcomm LLM script registers Gemma 3 only at 1B (gemma3-1b), text-only",
}
# The hub id the script loads the tokenizer by (its model registry's repo_id), for the models whose
# tokenizer it takes from transformers; importing the registry itself needs the executorch-qnn env.
QNN_TOKENIZER_REPOS = {"phi_4_mini": "microsoft/Phi-4-mini-instruct"}
# Meta's original checkpoint, which the script loads for llama3_2-* (HF weights are not converted).
LLAMA_ORIGINAL = ("original/consolidated.00.pth", "original/params.json", "original/tokenizer.model")


def qnn_sdk_problem(root: str | None) -> str | None:
    """Why QNN_SDK_ROOT cannot compile for HTP on this host, or None when it can (files only)."""
    if not root:
        return "QNN_SDK_ROOT is not set"
    path = Path(root)
    if not path.is_dir():
        return f"QNN_SDK_ROOT={root} is not a folder"
    for lib in QNN_HOST_LIBS:
        if not (path / QNN_HOST_LIB_DIR / lib).is_file():
            return (f"QNN_SDK_ROOT={root} has no {QNN_HOST_LIB_DIR}/{lib} (the x86_64 Linux host libraries "
                    "executorch's QNN compiler loads); name the SDK's versioned root, e.g. .../qairt/2.37.0.250724")
    return None


def qnn_options(options: dict[str, Any]) -> dict[str, Any]:
    """The QNN settings from the recipe's executorch options and VARIANT=qnn-<quant>; HarnessError if bad."""
    quant = str(options.get("vendor_quant") or "16a4w").lower()
    if quant not in QNN_QUANT:
        raise HarnessError(
            f"QNN quantization '{quant}' is not offered: executorch's Qualcomm LLM script quantizes each model "
            f"with its own recipe. Use VARIANT=qnn-16a4w (that recipe) or VARIANT=qnn-fp16."
        )
    soc = str(options.get("soc_model") or os.environ.get("QNN_SOC_MODEL") or QNN_DEFAULT_SOC).upper()
    if soc not in QNN_SOCS:
        raise HarnessError(f"QNN SoC '{soc}' is not known to executorch 1.5.1; set QNN_SOC_MODEL to one of "
                           f"{', '.join(QNN_SOCS)}.")
    mode = str(options.get("qnn_model_mode", "hybrid"))
    if mode not in QNN_MODEL_MODES:
        raise HarnessError(f"QNN model mode '{mode}' is not supported; use one of {', '.join(QNN_MODEL_MODES)}.")
    max_seq_len = int(options.get("max_seq_len", 2048))
    prefill = int(options.get("prefill_ar_len", 128))
    if mode != "kv" and prefill > max_seq_len:
        raise HarnessError(f"prefill_ar_len ({prefill}) must not exceed max_seq_len ({max_seq_len}) in QNN {mode} mode.")
    return {"quant": quant, "soc_model": soc, "model_mode": mode, "max_seq_len": max_seq_len,
            "prefill_ar_len": prefill}


def qnn_decoder_model(recipe_key: str) -> str:
    """The script's --decoder_model for a recipe, or a HarnessError saying why it has none."""
    if recipe_key in QNN_DECODER_MODELS:
        return QNN_DECODER_MODELS[recipe_key]
    why = QNN_REFUSED.get(recipe_key, "executorch's Qualcomm LLM script has no model entry for it")
    raise HarnessError(
        f"Model '{recipe_key}' cannot be exported for QNN: {why}. QNN exports are offered for "
        f"{', '.join(QNN_DECODER_MODELS)}; export {recipe_key} with backend xnnpack instead."
    )


def qnn_source_inputs(decoder_model: str, source: Path) -> dict[str, Path]:
    """The checkpoint files the script reads for `decoder_model`; HarnessError naming a missing one."""
    if decoder_model.startswith("llama3_2"):
        missing = [name for name in LLAMA_ORIGINAL if not (source / name).is_file()]
        if missing:
            raise HarnessError(
                f"The QNN export of Llama 3.2 loads Meta's original checkpoint, and {source} has no {missing[0]}. "
                "Download it next to the HF files (`huggingface-cli download meta-llama/Llama-3.2-3B-Instruct "
                "--include 'original/*' --local-dir DIR`) and pass SOURCE=DIR."
            )
        return {"checkpoint": source / LLAMA_ORIGINAL[0], "params": source / LLAMA_ORIGINAL[1],
                "tokenizer_model": source / LLAMA_ORIGINAL[2]}
    if not (source / "config.json").is_file() or not any(source.glob("*.safetensors")):
        raise HarnessError(f"The QNN export of {decoder_model} needs a Hugging Face checkpoint (config.json and "
                           f"*.safetensors) in {source}; pass SOURCE=DIR.")
    return {"hf_dir": source}


def static_llama_params(hf_config: dict[str, Any]) -> dict[str, Any]:
    """executorch's Llama ModelArgs JSON (the script's --params) from a Phi-3-family HF config.json.

    The wheel omits examples/models/phi_4_mini/config/config.json; these are the fields that file
    sets, read from the checkpoint itself so that a fine-tune with other sizes stays right.
    """
    text = hf_config.get("text_config", hf_config)
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    params = {
        "dim": hidden,
        "ffn_dim_multiplier": 1,
        "hidden_dim": int(text["intermediate_size"]),
        "n_heads": heads,
        "n_kv_heads": int(text.get("num_key_value_heads") or heads),
        "n_layers": int(text["num_hidden_layers"]),
        "norm_eps": float(text.get("rms_norm_eps", 1e-5)),
        "rope_theta": float(text.get("rope_theta", 10000.0)),
        "use_scaled_rope": False,
        "vocab_size": int(text["vocab_size"]),
        "use_hf_rope": True,
        "partial_rotary_factor": float(text.get("partial_rotary_factor", 1.0)),
        "attention_qkv_bias": bool(text.get("attention_bias", False)),
    }
    if text.get("head_dim") and int(text["head_dim"]) != hidden // heads:
        params["head_dim"] = int(text["head_dim"])
    return params


def qnn_command(python: str, decoder_model: str, artifact: Path, settings: dict[str, Any],
                inputs: dict[str, Path], calib_samples: Path, build_folder: Path) -> list[str]:
    """The command line of executorch's Qualcomm LLM script that compiles (never runs) the model."""
    cmd = [python, "-m", QNN_SCRIPT, "--decoder_model", decoder_model, "--artifact", str(artifact),
           "--compile_only", "--soc_model", settings["soc_model"], "--backend", "htp",
           "--model_mode", settings["model_mode"], "--max_seq_len", str(settings["max_seq_len"]),
           "--max_context_len", str(settings["max_seq_len"]), "--prefill_ar_len", str(settings["prefill_ar_len"]),
           # Required by its parser though only inference uses them.
           "--prompt", "When it rains in the evening, what does the user do?", "--build_folder", str(build_folder),
           "--calib_samples", str(calib_samples)]
    for key in ("checkpoint", "params", "tokenizer_model"):
        if key in inputs:
            cmd += [f"--{key}", str(inputs[key])]
    if settings["quant"] == "fp16":
        cmd.append("-F")
    return cmd


def qnn_env(sdk_root: str) -> dict[str, str]:
    """The environment of the script: the SDK named, its host libraries findable, the hub offline."""
    from .env import worker_env

    env = worker_env()
    env["QNN_SDK_ROOT"] = sdk_root
    libs = str(Path(sdk_root) / QNN_HOST_LIB_DIR)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    return env


# --- MediaTek NeuroPilot -------------------------------------------------------------------------

NEUROPILOT_MODULES = ("mtk_converter", "mtk_neuron")
MTK_PRECISIONS = ("a16w4", "a16w8", "a16w16", "a8w4", "a8w8")
MTK_SCRIPT = "examples/mediatek/model_export_scripts/llama.py"
MTK_PLATFORM = "mt6989"  # what the script compiles for (Dimensity 9300)
# Recipe key -> the model_type the MediaTek script dispatches on (its config.json field).
MTK_MODEL_TYPES = {"llama-3.2-3b": "llama", "qwen-2.5-3b": "qwen2", "phi-4-mini": "phi4"}
MTK_REFUSED = {
    "gemma-3-4b": "its checkpoint is the multimodal Gemma3ForConditionalGeneration (text settings nested in "
                  "text_config), while the MediaTek script reads a text-only Gemma 3 config",
}


def executorch_source() -> Path:
    """The executorch checkout named by EXECUTORCH_SRC; HarnessError saying what is missing."""
    named = os.environ.get("EXECUTORCH_SRC")
    if not named:
        raise HarnessError(
            "The MediaTek export runs executorch's examples/mediatek/model_export_scripts/llama.py, which the "
            "executorch wheel does not ship, and EXECUTORCH_SRC is not set. Clone executorch at the wheel's "
            "version (`git clone -b v1.5.1 https://github.com/pytorch/executorch`), install "
            "examples/mediatek/requirements.txt into the executorch toolchain env, and run the export again with "
            "EXECUTORCH_SRC=/path/to/executorch."
        )
    root = Path(named)
    for rel in (MTK_SCRIPT, "examples/mediatek/aot_utils/llm_utils/utils.py",
                "examples/mediatek/models/llm_models/configuration_base.py"):
        if not (root / rel).is_file():
            raise HarnessError(f"EXECUTORCH_SRC={named} has no {rel}; name the root of an executorch checkout "
                               "(v1.5.1, the wheel's version).")
    return root


def mtk_options(options: dict[str, Any]) -> dict[str, Any]:
    """The NeuroPilot settings from the recipe and VARIANT=mediatek-<precision>; HarnessError if bad."""
    precision = str(options.get("vendor_quant") or "a16w4").lower()
    if precision not in MTK_PRECISIONS:
        raise HarnessError(f"NeuroPilot precision '{precision}' is not offered; use VARIANT=mediatek-<p> with p one "
                           f"of {', '.join(MTK_PRECISIONS)}.")
    chunks = int(options.get("mtk_num_chunks", 4))
    prompt_tokens = int(options.get("mtk_prompt_tokens", 128))
    cache = int(options.get("max_seq_len", 2048))
    if not 1 < prompt_tokens <= cache:
        raise HarnessError(f"mtk_prompt_tokens ({prompt_tokens}) must be above 1 and at most max_seq_len ({cache}).")
    return {"precision": precision, "num_chunks": chunks, "prompt_tokens": prompt_tokens, "cache_size": cache}


def mtk_model_type(recipe_key: str) -> str:
    if recipe_key in MTK_MODEL_TYPES:
        return MTK_MODEL_TYPES[recipe_key]
    why = MTK_REFUSED.get(recipe_key, "the MediaTek LLM script has no model class for it")
    raise HarnessError(f"Model '{recipe_key}' cannot be exported for MediaTek NeuroPilot: {why}. Offered for "
                       f"{', '.join(MTK_MODEL_TYPES)}; export {recipe_key} with backend xnnpack instead.")


def mtk_command(python: str, config: Path, settings: dict[str, Any], calib_txt: Path) -> list[str]:
    """The command line of executorch's MediaTek LLM script (run in examples/mediatek)."""
    cache = settings["cache_size"]
    return [python, "model_export_scripts/llama.py", str(config), "--precision", settings["precision"].upper(),
            "--dataset", str(calib_txt), "--num_chunks", str(settings["num_chunks"]),
            "-shapes", f"{settings['prompt_tokens']}t{cache}c", f"1t{cache}c"]


def check_mtk_layers(hf_config: dict[str, Any], chunks: int) -> None:
    """The script needs the same number of decoder layers in every chunk; say so before loading weights."""
    layers = int(hf_config.get("num_hidden_layers", 0))
    if layers and layers % chunks:
        raise HarnessError(f"The MediaTek export cuts the decoder into chunks of equal layer counts, and "
                           f"{layers} layers do not split into {chunks}; set mtk_num_chunks to a divisor of {layers}.")


# --- the worker side (run in the executorch toolchain env by export/executorch.py) ---------------

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "config.json", "generation_config.json", "chat_template.jinja")


def calibration_texts() -> list[str]:
    """Offline calibration text: the parity prompts, smart-home sentences like the benchmark's sessions."""
    from .parity import _LONG, PROMPTS

    return [*PROMPTS, *(s.strip() + "." for s in _LONG.split(". ") if s.strip())]


def parity_not_run(backend: str, where: str) -> dict[str, Any]:
    """The manifest's parity entry for an artifact whose engine cannot run on the host."""
    return {"passed": None, "mode": "not run", "skipped": (
        f"{backend} .pte files run only on {where}; parity against transformers was not run on this host. "
        "Run the artifact on the phone (device_runner) to check it.")}


def _run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    print(f"[executorch] {' '.join(cmd[1:])}", flush=True)
    with log.open("w") as handle:
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed (exit {result.returncode}):\n{log.read_text()[-3000:]}")


def _copy_tokenizer(source: Path, out: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (out / name).exists():
            shutil.copy2(source / name, out / name)
            copied.append(name)
    return copied


def run_qnn(args: Any, scratch: Path) -> dict[str, Any]:
    """Compile the checkpoint for QNN HTP with executorch's script; the worker's result dict."""
    from .env import ensure_env

    source, out = Path(args.source), Path(args.out)
    settings = json.loads(args.settings)
    sdk = os.environ.get("QNN_SDK_ROOT")
    problem = qnn_sdk_problem(sdk)
    if problem:
        raise SystemExit(problem)
    decoder = qnn_decoder_model(args.model)
    inputs = qnn_source_inputs(decoder, source)
    python = str(ensure_env("executorch-qnn"))
    env = qnn_env(str(sdk))
    if "hf_dir" in inputs:
        # executorch's own converter (HF names -> its static Llama names), then params from config.json.
        converted = scratch / f"{decoder}.pth"
        _run_logged([python, "-c", "import sys; from executorch.examples.models.phi_4_mini.convert_weights import "
                     "convert_weights; convert_weights(sys.argv[1], sys.argv[2])", str(source), str(converted)],
                    scratch, env, scratch / "convert.log", "executorch's phi_4_mini weight converter")
        params = scratch / "params.json"
        params.write_text(json.dumps(static_llama_params(json.loads((source / "config.json").read_text())), indent=2))
        inputs = {"checkpoint": converted, "params": params}
        # The script loads the tokenizer by hub id; a folder of that name in its working dir is what
        # transformers opens first, so the checkpoint's own tokenizer is used, offline.
        link = scratch / QNN_TOKENIZER_REPOS[decoder]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.resolve(), target_is_directory=True)
    calib = scratch / "calib_samples.json"
    calib.write_text(json.dumps([{"messages": [{"role": "user", "content": t}]} for t in calibration_texts()]))
    artifact = scratch / "qnn"
    started = time.monotonic()
    _run_logged(qnn_command(python, decoder, artifact, settings, inputs, calib, scratch / "build"),
                scratch, env, scratch / "export.log", "executorch's Qualcomm LLM script")
    ptes = sorted(artifact.glob("*.pte"))
    if not ptes:
        raise SystemExit(f"executorch's Qualcomm LLM script wrote no .pte into {artifact}; see {scratch / 'export.log'}.")
    for pte in ptes:
        shutil.copy2(pte, out / pte.name)
    for extra in sorted(artifact.glob("tokenizer*")):  # what the script saved for its runner
        shutil.copy2(extra, out / extra.name)
    if "tokenizer_model" in inputs:
        shutil.copy2(inputs["tokenizer_model"], out / "tokenizer.model")
    _copy_tokenizer(source, out)
    (out / "pte_config.json").write_text(json.dumps({
        "backend": "qnn", "soc_model": settings["soc_model"], "quantization": settings["quant"],
        "model_mode": settings["model_mode"], "max_seq_len": settings["max_seq_len"],
        "max_context_len": settings["max_seq_len"], "prefill_ar_len": settings["prefill_ar_len"],
        "decoder_model": decoder, "pte": [p.name for p in ptes]}, indent=2))
    return {"parity": parity_not_run("QNN HTP", "a Snapdragon phone's HTP (or the QNN SDK's simulator)"),
            "quantization": {"qnn": settings["quant"], "method": (
                "the model's own quant recipe in executorch's Qualcomm LLM script (16-bit activations, 4-bit "
                "block weights, some 8-bit layers)" if settings["quant"] == "16a4w" else "fp16, not quantized")},
            "details": {"backend": "qnn", "decoder_model": decoder, **settings, "compile_seconds":
                        round(time.monotonic() - started, 1), "calibration": f"{len(calibration_texts())} "
                        "in-repo smart-home sentences (export/parity.py), offline", "qnn_sdk_root": sdk}}


def run_mediatek(args: Any, scratch: Path) -> dict[str, Any]:
    """Export the checkpoint for NeuroPilot with executorch's MediaTek script; the worker's result dict."""
    source, out = Path(args.source), Path(args.out)
    settings = json.loads(args.settings)
    root = executorch_source()
    model_type = mtk_model_type(args.model)
    config = json.loads((source / "config.json").read_text())
    check_mtk_layers(config, settings["num_chunks"])
    # The script takes the config.json of a weights folder and writes the embedding table beside it,
    # so it gets a folder of links to the checkpoint with its model_type (e.g. phi4 for Phi-4-mini,
    # whose HF config says phi3) rather than the user's own folder.
    weights = scratch / "weights"
    weights.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (weights / item.name).symlink_to(item.resolve())
    (weights / "config.json").write_text(json.dumps({**config, "model_type": model_type}, indent=2))
    calib = scratch / "calibration.txt"
    calib.write_text("\n".join(calibration_texts()) + "\n")
    mediatek = root / "examples" / "mediatek"
    started = time.time()
    from .env import worker_env

    _run_logged(mtk_command(sys.executable, weights / "config.json", settings, calib), mediatek, worker_env(),
                scratch / "export.log", "executorch's MediaTek LLM script")
    # It writes into <checkout>/examples/mediatek/pte/<experiment>/: take what this run wrote.
    ptes = sorted(p for p in (mediatek / "pte").rglob("*.pte") if p.stat().st_mtime >= started)
    if not ptes:
        raise SystemExit(f"executorch's MediaTek LLM script wrote no .pte under {mediatek / 'pte'}.")
    for pte in ptes:
        shutil.copy2(pte, out / pte.name)
    embeddings = sorted(weights.glob("embedding_*.bin"))
    for emb in embeddings:
        shutil.copy2(emb, out / emb.name)
    _copy_tokenizer(source, out)
    (out / "pte_config.json").write_text(json.dumps({
        "backend": "mediatek", "platform": MTK_PLATFORM, "precision": settings["precision"].upper(),
        "num_chunks": settings["num_chunks"], "prompt_tokens": settings["prompt_tokens"],
        "cache_size": settings["cache_size"], "pte": [p.name for p in ptes],
        "embedding": [e.name for e in embeddings]}, indent=2))
    return {"parity": parity_not_run("NeuroPilot", "a MediaTek phone's APU"),
            "quantization": {"neuropilot": settings["precision"].upper(), "method": "NeuropilotQuantizer (PT2E)"},
            "details": {"backend": "mediatek", "model_type": model_type, "platform": MTK_PLATFORM, **settings,
                        "export_seconds": round(time.time() - started, 1), "executorch_src": str(root)}}
