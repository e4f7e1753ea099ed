"""Turn a packaged GGUF (Gemma 3 270M Q4_K_M, SmolLM2 135M Q4_1) into a Hugging Face checkpoint.

    python -m export.dequant --gguf FILE --out DIR        (runs in the gguf toolchain env)

transformers' GGUF loader dequantizes the weights to float32.  Two quirks, each handled here:
  - `save_pretrained` refuses a model loaded from GGUF until its quantizer and
    `config.quantization_config` are removed (the weights are plain float32 by then);
  - llama.cpp's converter reads a Gemma 3 vocabulary from a SentencePiece `tokenizer.model`
    (a tokenizer.json of this model has no pre-tokenizer hash it knows), so for Gemma the GGUF's
    own vocabulary (pieces, scores, token types) is written back as one.  A byte-level BPE
    vocabulary (SmolLM2, GPT-2 style) has no SentencePiece form: its tokenizer.json is enough.
The result is cached by export.sources; every format is then exported from real weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .staging import staged_folder


def _write_sentencepiece(gguf_path: Path, out: Path) -> None:
    """Write the GGUF's vocabulary as a SentencePiece BPE model (tokenizer.model)."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = GGUFReader(str(gguf_path))

    def field(name: str):
        f = reader.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in field("tokenizer.ggml.token_type")]
    # gguf token types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte.
    kinds = {1: pb.ModelProto.SentencePiece.NORMAL, 2: pb.ModelProto.SentencePiece.UNKNOWN,
             3: pb.ModelProto.SentencePiece.CONTROL, 4: pb.ModelProto.SentencePiece.USER_DEFINED,
             5: pb.ModelProto.SentencePiece.UNUSED, 6: pb.ModelProto.SentencePiece.BYTE}
    model = pb.ModelProto()
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.trainer_spec.vocab_size = len(tokens)
    model.trainer_spec.byte_fallback = True
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    for text, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add()
        piece.piece = text
        piece.score = score
        piece.type = kinds.get(kind, pb.ModelProto.SentencePiece.NORMAL)
    for name, attr in (("unknown", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id"), ("padding", "pad_id")):
        key = f"tokenizer.ggml.{name}_token_id"
        if key in reader.fields:
            setattr(model.trainer_spec, attr, int(field(key)[0][0]))
    (out / "tokenizer.model").write_bytes(model.SerializeToString())


def _bpe_tokenizer(gguf_path: Path) -> object | None:
    """A fast tokenizer rebuilt from a byte-level BPE GGUF vocabulary (tokens + merges), for the
    pre-tokenizers known here; None for others.  transformers' GGUF loader reads SmolLM2's
    vocabulary as a Llama SentencePiece one (its tokenizer.json then has no "Ċ" for a newline, and
    llama.cpp's converter crashed on it), so the vocabulary is rebuilt as the model's own
    tokenizer.json is: BPE with byte-level pre-tokenizing, digits one by one (llama.cpp's "smollm").
    """
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf_path))

    def strings(name: str) -> list[str]:
        f = reader.fields[name]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def number(name: str) -> int | None:
        return int(reader.fields[name].parts[reader.fields[name].data[0]][0]) if name in reader.fields else None

    if strings("tokenizer.ggml.model") != ["gpt2"] or strings("tokenizer.ggml.pre") != ["smollm"]:
        return None
    tokens = strings("tokenizer.ggml.tokens")
    types = [int(reader.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in
             reader.fields["tokenizer.ggml.token_type"].data]
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    special = [t for t, kind in zip(tokens, types) if kind == 3]  # gguf token type 3: control
    tokenizer.add_special_tokens(special)

    def name_of(key: str) -> str | None:
        index = number(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None else None

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=name_of("bos"), eos_token=name_of("eos"),
                                   unk_token=name_of("unknown"), pad_token=name_of("padding"))
    if "tokenizer.chat_template" in reader.fields:
        fast.chat_template = strings("tokenizer.chat_template")[0]
    return fast


def dequantize(gguf_path: Path, out: Path) -> Path:
    import torch
    import transformers as tf

    out = Path(out)
    with staged_folder(out) as tmp:
        folder, name = str(gguf_path.parent), gguf_path.name
        model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        if model.config.model_type.startswith("gemma"):
            _write_sentencepiece(gguf_path, tmp)
            # transformers 4.57's GGUF tokenizer for Gemma 3 splits words into pieces llama.cpp
            # never makes ("The capital of France is": 10 tokens instead of 5); the fast
            # tokenizer built from the SentencePiece model above matches llama.cpp exactly.
            tokenizer = tf.GemmaTokenizerFast(vocab_file=str(tmp / "tokenizer.model"), bos_token="<bos>",
                                              eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
        else:
            tokenizer = _bpe_tokenizer(gguf_path) or tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # Loaded from GGUF, the model still names a quantizer; its weights are float32 now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not model.config.model_type.startswith("gemma"):
            # transformers saves the GGUF file itself as the slow tokenizer's "tokenizer.model";
            # llama.cpp's converter would read it as SentencePiece.  tokenizer.json is the tokenizer.
            (tmp / "tokenizer.model").unlink(missing_ok=True)
        (tmp / "dequantized_from.json").write_text(json.dumps(
            {"gguf": gguf_path.name, "transformers": tf.__version__, "dtype": "float32"}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    print(dequantize(args.gguf, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
