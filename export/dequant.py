"""Turn a packaged GGUF (the default model, Gemma 3 270M Q4_K_M) into a Hugging Face checkpoint.

    python -m export.dequant --gguf FILE --out DIR        (runs in the gguf toolchain env)

transformers' GGUF loader dequantizes the weights to float32.  Two quirks, each handled here:
  - `save_pretrained` refuses a model loaded from GGUF until its quantizer and
    `config.quantization_config` are removed (the weights are plain float32 by then);
  - llama.cpp's converter reads a Gemma 3 vocabulary from a SentencePiece `tokenizer.model`
    (a tokenizer.json of this model has no pre-tokenizer hash it knows), so the GGUF's own
    vocabulary (pieces, scores, token types) is written back as one.
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


def dequantize(gguf_path: Path, out: Path) -> Path:
    import torch
    import transformers as tf

    out = Path(out)
    with staged_folder(out) as tmp:
        folder, name = str(gguf_path.parent), gguf_path.name
        model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        _write_sentencepiece(gguf_path, tmp)
        if model.config.model_type.startswith("gemma"):
            # transformers 4.57's GGUF tokenizer for Gemma 3 splits words into pieces llama.cpp
            # never makes ("The capital of France is": 10 tokens instead of 5); the fast
            # tokenizer built from the SentencePiece model above matches llama.cpp exactly.
            tokenizer = tf.GemmaTokenizerFast(vocab_file=str(tmp / "tokenizer.model"), bos_token="<bos>",
                                              eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
        else:
            tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # Loaded from GGUF, the model still names a quantizer; its weights are float32 now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
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
