"""Tiny random checkpoints of the four architectures the recipes cover (DESIGN.md, rule 6).

    python -m export.tiny --arch llama --out DIR        (runs in a toolchain env: needs torch,
                                                          transformers, sentencepiece)

Each is a real transformers checkpoint (config.json + model.safetensors) with hidden size 64
and a few layers, plus a SentencePiece `tokenizer.model` trained here, offline, on a fixed
text.  Tokenizer choices that matter to the converters (facts seen with llama.cpp's
convert_hf_to_gguf.py):
  - SentencePiece, not a custom BPE tokenizer.json: the converter recognises BPE
    pre-tokenizers by hashing known ones and refuses an unknown one;
  - tokenizer.model only, no tokenizer.json beside it (Qwen2 would then tokenize with the
    fast tokenizer.json in transformers and with the SentencePiece model in llama.cpp);
  - llama.cpp's vocab loader treats a model whose name contains "phi3" specially and looks
    up `</s>`, `<unk>`, `<s>` and `<|endoftext|>`: every tiny vocabulary has all four.
Gemma3 is text-only (Gemma3ForCausalLM) with its real 5:1 sliding/full layer pattern and a
sliding window of 16 tokens, so a test prompt longer than that exercises the hybrid cache.

`ensure_tiny(arch)` (export.sources) makes each once into ~/.cache/edgewise-harness/tiny/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .staging import staged_folder

ARCHES = ("llama", "qwen2", "gemma3", "phi3")
VOCAB = 384
HIDDEN = 64
SEED = 0
SLIDING_WINDOW = 16
# Positions the tiny models hold: the benchmark's prompts (the recipes' context_length in
# export/catalogue.py) must fit, with this tokenizer's short pieces (VOCAB) several times
# more tokens than a real model's for the same text.
MAX_POSITIONS = 2048
# Random weights drawn with transformers' default std (0.02) give logits so close together
# that any two correct implementations disagree on the argmax; a wider init separates them.
INIT_STD = 0.3

# Text the tokenizer is trained on: fixed, varied enough for a few hundred pieces.
_CORPUS = """\
The living room lights turn on at seven in the evening when the user comes home from work.
On cold mornings the thermostat is set to twenty two degrees and the kettle starts at six.
When it rains, the user closes the blinds in the bedroom and plays jazz at volume twelve.
Security cameras switch to night mode after eleven; the front door locks automatically.
On weekends the coffee machine waits until nine, and the robot vacuum cleans the kitchen.
Tell me about your routine: what do you do when the sun sets, and which devices follow you?
The TV volume is usually fifteen during the news, and the air purifier runs on auto mode.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 30 45 60 90.
JSON: {"triggers": {"time_of_day": "evening", "weather": "rainy"}, "actions": {"tv": {"volume": 12}}}
User: set the lights to warm white. Assistant: Done, the lights are warm white now.
"""


def _train_tokenizer(out: Path, gemma: bool) -> None:
    """Train a byte-fallback BPE SentencePiece model into out/tokenizer.model."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp, "corpus.txt")
        corpus.write_text(_CORPUS * 4)
        if gemma:
            # Gemma's own layout: <pad>=0, <eos>=1, <bos>=2, <unk>=3, no dummy prefix space.
            ids = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                       bos_piece="<bos>", unk_piece="<unk>")
            extra = ["<start_of_turn>", "<end_of_turn>", "<s>", "</s>", "<|endoftext|>"]
        else:
            ids = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
            extra = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|user|>", "<|assistant|>", "<|end|>"]
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=VOCAB, model_type="bpe",
            byte_fallback=True, character_coverage=1.0, user_defined_symbols=extra,
            add_dummy_prefix=not gemma, remove_extra_whitespaces=False, split_digits=True,
            num_threads=1, minloglevel=2, **ids,
        )
        (out / "tokenizer.vocab").unlink(missing_ok=True)


_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_PHI = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
_GEMMA = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
          "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _config(arch: str):  # -> transformers.PretrainedConfig
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS, initializer_range=INIT_STD,
                  tie_word_embeddings=False)
    if arch == "llama":
        return tf.LlamaConfig(num_hidden_layers=2, bos_token_id=1, eos_token_id=2, rope_theta=10000.0,
                              architectures=["LlamaForCausalLM"], **common)
    if arch == "qwen2":
        return tf.Qwen2Config(num_hidden_layers=2, bos_token_id=1, eos_token_id=2, rope_theta=10000.0,
                              architectures=["Qwen2ForCausalLM"], **common)
    if arch == "phi3":
        # original_max_position_embeddings equal to max_position_embeddings: plain RoPE (the
        # default 4096 would make converters take the LongRoPE path, which needs rope_scaling).
        return tf.Phi3Config(num_hidden_layers=2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                             rope_theta=10000.0, original_max_position_embeddings=MAX_POSITIONS,
                             architectures=["Phi3ForCausalLM"], **common)
    if arch == "gemma3":
        layers = 6  # Gemma 3's pattern: five sliding-window layers, then one global layer
        return tf.Gemma3TextConfig(
            num_hidden_layers=layers, head_dim=16, query_pre_attn_scalar=16, sliding_window=SLIDING_WINDOW,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, pad_token_id=0, eos_token_id=1, bos_token_id=2,
            architectures=["Gemma3ForCausalLM"], **{**common, "tie_word_embeddings": True},
        )
    raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHES)}")


def _tokenizer_config(arch: str) -> dict:
    if arch == "gemma3":
        return {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
                "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False,
                "chat_template": _GEMMA, "model_max_length": MAX_POSITIONS, "clean_up_tokenization_spaces": False}
    template = _PHI if arch == "phi3" else _CHATML
    return {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "add_bos_token": True, "add_eos_token": False, "legacy": False, "chat_template": template,
            "model_max_length": MAX_POSITIONS, "clean_up_tokenization_spaces": False}


def make_tiny(arch: str, out: Path) -> Path:
    """Write the tiny `arch` checkpoint to `out` (through a temporary folder, then renamed)."""
    import torch
    import transformers as tf

    out = Path(out)
    with staged_folder(out) as tmp:
        _train_tokenizer(tmp, gemma=arch == "gemma3")
        (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(arch), indent=2))
        torch.manual_seed(SEED)
        config = _config(arch)
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        if hasattr(model, "generation_config"):
            (tmp / "generation_config.json").unlink(missing_ok=True)  # greedy defaults everywhere
        (tmp / "tiny.json").write_text(json.dumps({"arch": arch, "seed": SEED, "init_std": INIT_STD,
                                                   "transformers": tf.__version__}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=ARCHES)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    print(make_tiny(args.arch, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
