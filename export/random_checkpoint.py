"""Random-weight checkpoints with a recipe's real architecture: for measuring export at real size.

    python -m export random-checkpoint --model gemma-3-4b --out DIR     (core venv; runs this in the gguf env)
    python -m export.random_checkpoint --model KEY --out DIR [--tiny]   (the gguf toolchain env)

The hub is unreachable here, so each config is written from the architecture's published
hyper-parameters (below).  The weights are random, drawn in bf16 one tensor at a time and
written into several safetensors shards with an index, so nothing near the whole model is ever
in memory (the names and shapes come from the model built on the meta device).  The numbers a
random model gives say nothing about accuracy: the folder's README.md and random_checkpoint.json
say so, and an export from it records `source.kind: "random"` in its manifest.

Tokenizers: Gemma 3's real 262k vocabulary, rebuilt from the packaged gemma-3-270m GGUF (the
same vocabulary; export/dequant.py); the other architectures get the small SentencePiece
stand-in export/tiny.py trains (their real tokenizers are byte-level BPE files on the hub),
with the config's real vocab_size (the converters pad the vocabulary to it).

`--tiny` shrinks the config (hidden 64, 2 layers, vocab kept small) for the unit test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .staging import staged_folder

SEED = 0
INIT_STD = 0.02  # transformers' default initializer_range
SHARD_BYTES = 2 << 30  # at most ~2 GiB per shard (a tensor bigger than that gets a shard of its own)
NOTE = ("Random weights with the recipe's architecture: for measuring export (size, memory, time) at real "
        "size, never for accuracy. Its outputs are meaningless; parity figures from it only say that an "
        "artifact computes what the checkpoint computes.")

# Published hyper-parameters (each model's config.json on the hub; written here from them, not downloaded).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # google/gemma-3-4b-it, its text_config (the checkpoint is Gemma3ForConditionalGeneration; this is
    # its language model alone, as Gemma3ForCausalLM): 3.88 B parameters.
    "gemma-3-4b": dict(
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=262208, hidden_size=2560,
        intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
        query_pre_attn_scalar=256, sliding_window=1024, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
        rope_scaling={"factor": 8.0, "rope_type": "linear"}, max_position_embeddings=131072, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None, attn_logit_softcapping=None,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)]),
    # Qwen/Qwen2.5-3B-Instruct: 3.09 B parameters.
    "qwen-2.5-3b": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=151936, hidden_size=2048,
        intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu",
        use_sliding_window=False, sliding_window=32768, max_window_layers=70, tie_word_embeddings=True,
        bos_token_id=151643, eos_token_id=151645),
    # meta-llama/Llama-3.2-3B-Instruct: 3.21 B parameters.
    "llama-3.2-3b": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=3072,
        intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5, hidden_act="silu",
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    # microsoft/Phi-4-mini-instruct: 3.84 B parameters.  Its LongRoPE short/long factors (48 each)
    # are placeholders (1.0): the shapes and code path are the real ones, the values are not.
    "phi-4-mini": dict(
        model_type="phi3", architectures=["Phi3ForCausalLM"], vocab_size=200064, hidden_size=3072,
        intermediate_size=8192, num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
        max_position_embeddings=131072, original_max_position_embeddings=4096, partial_rotary_factor=0.75,
        rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu", sliding_window=262144,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.0] * 48},
        tie_word_embeddings=True, bos_token_id=199999, eos_token_id=199999, pad_token_id=199999),
}
_TINY = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def config_dict(key: str, tiny: bool = False) -> dict[str, Any]:
    if key not in ARCHITECTURES:
        from eval.errors import unknown_name

        raise unknown_name("model", key, ARCHITECTURES)
    config = dict(ARCHITECTURES[key])
    if tiny:
        config.update(_TINY)
        if key == "gemma-3-4b":
            config.update(head_dim=16, query_pre_attn_scalar=16, sliding_window=16, num_hidden_layers=6,
                          layer_types=config["layer_types"][:6])
        else:  # the stand-in tokenizer's ids
            config.update(bos_token_id=1, eos_token_id=2, **({"pad_token_id": 2} if "pad_token_id" in config else {}))
        if key == "llama-3.2-3b":
            config.update(head_dim=16)
        if key == "phi-4-mini":  # rotary dims: head_dim 16 * 0.75 / 2 = 6 factors
            config["rope_scaling"] = {"type": "longrope", "short_factor": [1.0] * 6, "long_factor": [1.0] * 6}
    config["torch_dtype"] = "bfloat16"
    return config


def bf16_bytes(key: str) -> int:
    """The weights' size in bf16, from the config alone (no torch: the disk check before making it)."""
    c = config_dict(key)
    hidden, layers, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    head_dim = c.get("head_dim") or hidden // c["num_attention_heads"]
    attn = hidden * head_dim * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"])
    embed = c["vocab_size"] * hidden * (1 if c.get("tie_word_embeddings") else 2)
    return 2 * (embed + layers * (attn + 3 * hidden * inter + 4 * hidden))


def _config(key: str, tiny: bool):
    import transformers as tf

    values = config_dict(key, tiny)
    return tf.AutoConfig.for_model(values.pop("model_type"), **values)


def _init(name: str, shape: tuple[int, ...], gemma: bool, generator) -> Any:
    """One tensor in bf16: norms at unit scale (Gemma stores weight - 1), biases zero, the rest N(0, std)."""
    import torch

    if len(shape) == 1:
        if "norm" in name:
            return (torch.zeros if gemma else torch.ones)(shape, dtype=torch.bfloat16)
        return torch.zeros(shape, dtype=torch.bfloat16)
    return torch.randn(shape, generator=generator, dtype=torch.bfloat16).mul_(INIT_STD)


def write_weights(config, out: Path, shard_bytes: int = SHARD_BYTES) -> dict[str, Any]:
    """Random bf16 weights for `config`, tensor by tensor, into model-0000i-of-0000n.safetensors + index."""
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    del model
    if getattr(config, "tie_word_embeddings", False):
        shapes.pop("lm_head.weight", None)  # tied: stored once, as the embedding
    gemma = config.model_type.startswith("gemma")
    generator = torch.Generator().manual_seed(SEED)
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():  # shard plan first, so names are final before writing
        nbytes = 2 * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map: dict[str, str] = {}
    total = 0
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: _init(name, shapes[name], gemma, generator) for name in names}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({name: file for name in names})
        del tensors
        print(f"[random-checkpoint] wrote {file} ({len(names)} tensors)", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return {"parameters": total // 2, "bytes": total, "shards": len(groups)}


def _gemma_tokenizer(out: Path) -> str:
    """Gemma 3's vocabulary from the packaged gemma-3-270m GGUF, as dequant.py rebuilds it."""
    import transformers as tf

    from .catalogue import get_recipe, packaged_model_path
    from .dequant import _write_sentencepiece
    from .tiny import _GEMMA

    gguf = packaged_model_path(get_recipe("gemma-3-270m"))
    _write_sentencepiece(gguf, out)
    tokenizer = tf.GemmaTokenizerFast(vocab_file=str(out / "tokenizer.model"), bos_token="<bos>", eos_token="<eos>",
                                      unk_token="<unk>", pad_token="<pad>")
    tokenizer.chat_template = _GEMMA
    tokenizer.save_pretrained(out)
    return f"Gemma 3's real 262,144-token vocabulary, from {gguf.name} (the packaged gemma-3-270m)"


def _stand_in_tokenizer(key: str, out: Path) -> str:
    from .tiny import _tokenizer_config, _train_tokenizer

    _train_tokenizer(out, gemma=False)
    arch = {"phi-4-mini": "phi3"}.get(key, "llama")
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(arch), indent=2))
    return ("a stand-in: export/tiny.py's SentencePiece tokenizer (384 pieces) trained here offline; the "
            "model's real tokenizer is not available offline (the converters pad the vocabulary to vocab_size)")


def make_random_checkpoint(key: str, out: Path, tiny: bool = False, shard_bytes: int = SHARD_BYTES) -> Path:
    import time

    import transformers as tf

    started = time.monotonic()
    out = Path(out)
    config = _config(key, tiny)
    with staged_folder(out) as tmp:
        if key.startswith("gemma") and not tiny:
            tokenizer = _gemma_tokenizer(tmp)
        elif key.startswith("gemma"):
            from .tiny import _tokenizer_config, _train_tokenizer

            _train_tokenizer(tmp, gemma=True)
            (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config("gemma3"), indent=2))
            tokenizer = "a stand-in (tiny test checkpoint): export/tiny.py's SentencePiece tokenizer"
        else:
            tokenizer = _stand_in_tokenizer(key, tmp)
        config.save_pretrained(tmp)
        weights = write_weights(config, tmp, shard_bytes)
        info = {"purpose": NOTE, "model": key, "tiny": tiny, "seed": SEED, "init_std": INIT_STD, "dtype": "bfloat16",
                "config_from": "the architecture's published hyper-parameters (export/random_checkpoint.py)",
                "tokenizer": tokenizer, **weights, "transformers": tf.__version__,
                "seconds": round(time.monotonic() - started, 1)}
        (tmp / "random_checkpoint.json").write_text(json.dumps(info, indent=2))
        (tmp / "README.md").write_text(
            f"# Random-weight {key} checkpoint\n\n{NOTE}\n\n- architecture: {config.architectures[0]}, "
            f"{weights['parameters'] / 1e9:.2f} B parameters, bf16, {weights['shards']} safetensors shards\n"
            f"- tokenizer: {tokenizer}\n- made by `python -m export random-checkpoint --model {key}`\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tiny", action="store_true", help="a tiny config of the same architecture (tests)")
    parser.add_argument("--shard-mb", type=int, default=SHARD_BYTES >> 20)
    args = parser.parse_args(argv)
    print(make_random_checkpoint(args.model, args.out, args.tiny, args.shard_mb << 20))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
