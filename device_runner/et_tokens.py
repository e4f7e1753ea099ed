"""The host's tokenization for ew_et (android/runners/executorch), run in the executorch toolchain env.

The executorch wheel ships no C++ tokenizer, so the phone gets what the host runtime
(runtimes/executorch.py) would compute with its own tokenizer (transformers' AutoTokenizer of the
artifact folder):
- each request's prompt ids (a raw prompt with the tokenizer's special tokens, chat messages
  through its chat template), written as ID.tokens;
- for choices, the first token of every choice's remaining text as _decode._choice_token encodes
  it (the rest alone, and without its leading space), keyed by the byte length of the text so far
  (G.choices.first);
- once per model, ew_et.vocab: each token id's bytes (special tokens: none; SentencePiece's byte
  tokens marked, for the decoder's U+FFFD rule), the end-of-text ids,
  the sliding window (for _reusable) and the export's max_seq_len.  Decoding by concatenating those
  bytes is checked here against the tokenizer's own decode; a tokenizer it cannot reproduce is
  refused with a sentence.

Usage (device_runner/phone_runtime.py keeps one running per phone runtime): python device_runner/et_tokens.py,
then one JSON job per line on stdin ({"folder", "requests", "choices", "count", "vocab"}), one answer
per line ("count": texts whose tokens the host runtime's count_tokens counts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Sample texts whose decoding by concatenated token bytes must equal the tokenizer's own.
_CHECKS = ("The TV volume is 47", " none", '{"on": true, "level": 12}', "Lights: dim\n- 18:30", "café niño 温度 ✓")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def _decoder_kinds(spec: Any) -> set[str]:
    if not isinstance(spec, dict):
        return set()
    kinds = {str(spec.get("type"))}
    for inner in spec.get("decoders") or []:
        kinds |= _decoder_kinds(inner)
    return kinds


def token_bytes(tokenizer: Any) -> list[bytes]:
    """Every token id's bytes as the tokenizer decodes it in a continuation (special tokens: b"")."""
    backend = tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    kinds = _decoder_kinds(spec.get("decoder"))
    special = set(tokenizer.all_special_ids)
    for added in spec.get("added_tokens") or []:
        if added.get("special"):
            special.add(int(added["id"]))
    size = max(backend.get_vocab_size(with_added_tokens=True), len(tokenizer))
    byte_level = "ByteLevel" in kinds
    table = _byte_decoder() if byte_level else {}
    out: list[bytes] = []
    for i in range(size):
        piece = backend.id_to_token(i)
        if piece is None or i in special:
            out.append(b"")
        elif byte_level:
            out.append(bytes(table[c] for c in piece) if all(c in table for c in piece) else piece.encode())
        elif "ByteFallback" in kinds and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("\u2581", " ").encode())
    return out


def _byte_fallback_ids(tokenizer: Any) -> set[int]:
    """Ids of SentencePiece's byte tokens (<0xNN>) where the decoder has ByteFallback: a run of them
    that is not whole UTF-8 decodes to one U+FFFD per token, which ew_et reproduces."""
    backend = tokenizer.backend_tokenizer
    if "ByteFallback" not in _decoder_kinds(json.loads(backend.to_str()).get("decoder")):
        return set()
    return {i for i in range(backend.get_vocab_size(with_added_tokens=True))
            if (piece := backend.id_to_token(i)) and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")}


def _check(tokenizer: Any, pieces: list[bytes]) -> None:
    anchor = tokenizer.encode("Answer:", add_special_tokens=False)[-1:]
    base = tokenizer.decode(anchor, skip_special_tokens=True)
    for sample in _CHECKS:
        ids = tokenizer.encode(sample, add_special_tokens=False)
        full = tokenizer.decode([*anchor, *ids], skip_special_tokens=True)
        want = full[len(base):] if full.startswith(base) else full
        got = b"".join(pieces[t] for t in ids).decode("utf-8", "replace")
        if got != want:
            raise SystemExit(f"ew_et cannot decode this tokenizer by joining token bytes ({sample!r} decodes to "
                             f"{want!r} but the joined bytes give {got!r}); run this model with --device host.")


def vocab_text(folder: Path, tokenizer: Any) -> str:
    from runtimes.executorch import _sliding_window

    pieces = token_bytes(tokenizer)
    _check(tokenizer, pieces)
    eos = tokenizer.eos_token_id
    gen = folder / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id", eos)
    eos_ids = sorted(set(eos if isinstance(eos, list) else [eos]) - {None})
    config = json.loads((folder / "pte_config.json").read_text()) if (folder / "pte_config.json").is_file() else {}
    window = _sliding_window(folder)
    lines = [f"ew_et-vocab 1 {len(pieces)}", f"eos {','.join(str(t) for t in eos_ids) or '-'}",
             f"window {'none' if window is None else window}", f"max_seq_len {int(config.get('max_seq_len') or 0)}",
             ":"]
    byte_tokens = _byte_fallback_ids(tokenizer)
    lines += [("b" if i in byte_tokens else "") + p.hex() for i, p in enumerate(pieces)]
    return "\n".join(lines) + "\n"


def prompt_ids(tokenizer: Any, request: dict[str, Any]) -> list[int]:
    """runtimes/executorch.py ExecuTorchRuntime.generate's ids."""
    if request.get("prompt") is not None:
        return [int(t) for t in tokenizer(request["prompt"])["input_ids"]]
    encoded = tokenizer.apply_chat_template(list(request["messages"]), add_generation_prompt=True, tokenize=True)
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]


def first_tokens(tokenizer: Any, choices: list[str]) -> list[list[int]]:
    """[choice index, byte offset, first id of the rest, first id of the rest without its leading space]."""
    rows = []
    for index, choice in enumerate(choices):
        for k in range(len(choice)):
            rest = choice[k:]
            ids = []
            for variant in (rest, rest.lstrip(" ")):
                encoded = tokenizer.encode(variant, add_special_tokens=False) if variant else []
                ids.append(int(encoded[0]) if encoded else -1)
            rows.append([index, len(choice[:k].encode()), *ids])
    return rows


def answer(tokenizers: dict[Path, Any], job: dict[str, Any]) -> dict[str, Any]:
    import transformers

    folder = Path(job["folder"])
    if folder not in tokenizers:
        if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            raise SystemExit(f"no tokenizer.json, tokenizer.model or tokenizer_config.json in {folder}")
        tokenizers[folder] = transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer = tokenizers[folder]
    out: dict[str, Any] = {"ids": [prompt_ids(tokenizer, r) for r in job.get("requests", [])],
                           "first": [first_tokens(tokenizer, list(c)) for c in job.get("choices", [])],
                           "counts": [len(tokenizer.encode(t, add_special_tokens=False)) for t in job.get("count", [])]}
    if job.get("vocab"):
        out["vocab"] = vocab_text(folder, tokenizer)
    return out


def main() -> int:
    """One job per line on stdin, one answer per line on stdout ({"error": sentence} for a job it
    cannot do), until stdin closes: the tokenizer is loaded once per process."""
    tokenizers: dict[Path, Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = answer(tokenizers, json.loads(line))
        except SystemExit as exc:  # a sentence of _check
            out = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a sentence
            out = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
