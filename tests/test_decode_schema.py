"""JSON-schema constrained decoding in runtimes/_decode.py (the loop of executorch, onnxruntime, mnn).

A fake engine whose logits push towards invalid JSON (end of text at once, stray brackets,
out-of-range numbers, endless whitespace, ids past the vocabulary) decodes over a real
tokenizer.json written here (byte-level BPE as in Qwen / Llama 3, and SentencePiece-style
Metaspace with byte fallback as in Llama 2 / Gemma), through llguidance, exactly as
runtimes/onnxruntime.py builds it.  The output must parse and validate against the
benchmark's schema.  The test's own decoder turns ids into text from the vocabulary it
wrote, independently of llguidance.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from eval.parse import parse_routines
from eval.schema import routines_json_schema
from runtimes._decode import Engine, generate, grammar_tokenizer_from_json, grammar_tokenizer_from_pieces
from runtimes.base import GenerationSettings

pytest.importorskip("llguidance", reason="llguidance is in the dev extra (pip install -e '.[dev]')")

SCHEMA = routines_json_schema(2, 2)
SPECIAL = ["<unk>", "<s>", "</s>"]
EOS = 2


def _schema_words(schema: Any) -> set[str]:
    """Property names and enum values of a schema: the model's 'words'."""
    words: set[str] = set()
    if isinstance(schema, dict):
        words.update(schema.get("properties", {}))
        words.update(str(v) for v in schema.get("enum", []))
        for value in schema.values():
            words |= _schema_words(value)
    elif isinstance(schema, list):
        for value in schema:
            words |= _schema_words(value)
    return words


# Pieces that make invalid JSON here, or out-of-range values: the fake model loves them.
BAD = ["garbage", "}}", "]]", ",,", "101", "999", "-1", "1.5", "null", "'", "NaN", "}\n", "{}"]
WHITESPACE = [" ", "  ", "\n", "\n\n    ", "\t"]


def _pieces() -> list[str]:
    words = sorted(_schema_words(SCHEMA))
    multi = [f'"{w}"' for w in words] + [f'"{w}' for w in words] + words
    multi += ['{"', '":', '",', '"}', '},', '}]', ']}', '":{', '":[', '"routines"', "true", "false", "10", "42"]
    return sorted(set(multi + BAD + WHITESPACE), key=lambda p: (len(p), p))


def _byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: printable bytes stand for themselves, the rest move past 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _added(ids: dict[str, int]) -> list[dict[str, Any]]:
    return [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for t in SPECIAL]


def byte_level_tokenizer() -> tuple[str, list[bytes]]:
    """A byte-level BPE tokenizer.json and each id's bytes (special ids: b"")."""
    alphabet = _byte_to_unicode()
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL)}
    raw: list[bytes] = [b""] * len(SPECIAL)
    for b in range(256):
        vocab[alphabet[b]] = len(raw)
        raw.append(bytes([b]))
    for piece in _pieces():
        data = piece.encode()
        if len(data) > 1:
            vocab["".join(alphabet[b] for b in data)] = len(raw)
            raw.append(data)
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(vocab),
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                      "merges": []}}
    return json.dumps(spec), raw


def metaspace_tokenizer() -> tuple[str, list[bytes]]:
    """A SentencePiece-style tokenizer.json ("▁" for spaces, <0xNN> byte fallback)."""
    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL)}
    raw: list[bytes] = [b""] * len(SPECIAL)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(raw)
        raw.append(bytes([b]))
    for piece in [chr(c) for c in range(ord("!"), ord("~") + 1)] + _pieces():
        if piece.strip(" ") and not piece.strip():  # only-whitespace pieces other than spaces: bytes do it
            continue
        key = piece.replace(" ", "▁")
        if key not in vocab:
            vocab[key] = len(raw)
            raw.append(piece.encode())
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(vocab),
            "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
            "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                      "merges": []}}
    return json.dumps(spec), raw


class FakeModel:
    """Logits that prefer invalid JSON: random, plus large biases for end of text, bad pieces, whitespace
    and ids past the vocabulary (a padded embedding)."""

    def __init__(self, raw: list[bytes], seed: int = 0, pad: int = 8, whitespace_bias: float = 4.0) -> None:
        self.raw = raw
        self.width = len(raw) + pad
        self.rng = np.random.default_rng(seed)
        self.bias = np.zeros(self.width, dtype=np.float32)
        self.bias[EOS] = 9.0
        self.bias[len(raw):] = 12.0
        text = [r.decode("utf-8", errors="replace") for r in raw]
        for i, piece in enumerate(text):
            if piece in BAD:
                self.bias[i] = 7.0
            elif piece and not piece.strip():
                self.bias[i] = whitespace_bias
        self.steps = 0

    def logits(self) -> np.ndarray:
        return self.rng.standard_normal(self.width).astype(np.float32) + self.bias

    def engine(self, grammar_tokenizer: Any) -> Engine:
        def step(token: int) -> np.ndarray:
            assert 0 <= token < len(self.raw), f"id {token} is past the vocabulary"
            self.steps += 1
            return self.logits()

        def encode(text: str) -> list[int]:  # greedy longest match, enough for choices' first tokens
            data, out = text.encode(), []
            while data:
                best = max((i for i, r in enumerate(self.raw) if r and data.startswith(r)), key=lambda i: len(self.raw[i]))
                out.append(best)
                data = data[len(self.raw[best]):]
            return out

        return Engine(prefill=lambda ids: self.logits(), step=step, encode=encode,
                      decode=lambda ids: b"".join(self.raw[i] for i in ids).decode("utf-8", errors="replace"),
                      eos={EOS}, grammar_tokenizer=grammar_tokenizer)


def _valid(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """The JSON-schema subset routines_json_schema uses; one sentence per violation."""
    errors: list[str] = []
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: {value!r} is not an integer"]
    elif kind in types and not isinstance(value, types[kind]):
        return [f"{where}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in enum")
    if kind == "object":
        props = schema.get("properties", {})
        errors += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key not in props:
                if schema.get("additionalProperties") is False:
                    errors.append(f"{where}: unexpected {key}")
            else:
                errors += _valid(item, props[key], f"{where}.{key}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            errors += _valid(item, schema["items"], f"{where}[{i}]")
    return errors


TOKENIZERS = {"byte-level": byte_level_tokenizer, "metaspace": metaspace_tokenizer}


def _grammar(kind: str) -> tuple[Any, list[bytes]]:
    spec, raw = TOKENIZERS[kind]()
    tokenizer = grammar_tokenizer_from_json(spec, {EOS}, "test")
    assert tokenizer.vocab_size == len(raw)
    return tokenizer, raw


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_the_test_tokenizer_is_read_as_written(kind):
    tokenizer, raw = _grammar(kind)
    for i, data in enumerate(raw):
        if data and data != b"\xff":  # 0xFF (never in UTF-8) is llguidance's marker for special tokens
            assert tokenizer.decode_bytes([i]) == data, i
    assert all(tokenizer.is_special_token(i) for i in range(len(SPECIAL)))


def test_without_the_schema_the_fake_model_writes_no_json():
    """The logits really are adversarial: unconstrained, the output is not the schema's JSON."""
    tokenizer, raw = _grammar("byte-level")
    model = FakeModel(raw)
    engine = model.engine(lambda width: tokenizer)
    engine.eos = set()  # else it stops at once
    model.bias[len(raw):] = 0.0
    completion = generate(engine, [1, 300], GenerationSettings(max_tokens=40), None, None)
    with pytest.raises(ValueError):
        json.loads(completion.text)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
@pytest.mark.parametrize("temperature,seed", [(0.0, 0), (1.0, 1), (1.5, 2), (0.7, 3)])
def test_schema_constrained_output_is_valid(kind, temperature, seed):
    tokenizer, raw = _grammar(kind)
    built: list[int] = []

    def grammar_tokenizer(width: int) -> Any:
        built.append(width)
        return tokenizer

    model = FakeModel(raw, seed=seed)
    settings = GenerationSettings(max_tokens=2000, temperature=temperature, seed=seed)
    completion = generate(model.engine(grammar_tokenizer), [1, 300], settings, None, 12.0, SCHEMA)
    assert completion.finish_reason == "stop", completion.text
    value = json.loads(completion.text)
    assert _valid(value, SCHEMA) == []
    assert len(value["routines"]) == 2  # minItems = maxItems = 2
    parsed = parse_routines(completion.text)
    assert len(parsed.routines) == 2 and parsed.errors == [] and parsed.dropped == 0 and parsed.repairs == []
    # The end is forced: no forward pass after the closing brace, and no end-of-text token in the text.
    t = completion.timings
    assert model.steps == t.generated_tokens - 1
    assert built == [model.width]
    assert t.sampling_ms > 0 and t.total_ms >= t.sampling_ms and t.load_ms == 12.0


def test_integer_enums_bounded_arrays_and_bounded_whitespace():
    """Numbers only from each enum however much the model wants 101, 999, -1 or 1.5; array length
    within minItems..maxItems; whitespace between tokens bounded (as llama.cpp bounds it) however
    much the model wants more."""
    def ints(lo: int, hi: int) -> dict[str, Any]:
        return {"type": "integer", "enum": list(range(lo, hi + 1))}

    schema = {"type": "object", "additionalProperties": False,
              "properties": {"volume": ints(0, 100), "temperature": ints(16, 30), "fan_speed": ints(0, 3),
                             "levels": {"type": "array", "items": ints(0, 100), "minItems": 2, "maxItems": 3}},
              "required": ["volume", "temperature", "fan_speed", "levels"]}
    tokenizer, raw = _grammar("byte-level")
    for seed in range(8):
        model = FakeModel(raw, seed=seed, whitespace_bias=30.0)
        completion = generate(model.engine(lambda width: tokenizer), [1, 300],
                              GenerationSettings(max_tokens=3000, temperature=1.0, seed=seed), None, None, schema)
        assert completion.finish_reason == "stop", completion.text
        value = json.loads(completion.text)
        assert _valid(value, schema) == [], completion.text
        assert 2 <= len(value["levels"]) <= 3
        assert not re.search(r"\s{22,}", completion.text), completion.text


def test_max_tokens_cut_gives_length_and_unfinished_text():
    tokenizer, raw = _grammar("metaspace")
    model = FakeModel(raw)
    completion = generate(model.engine(lambda width: tokenizer), [1, 300], GenerationSettings(max_tokens=5),
                          None, None, SCHEMA)
    assert completion.finish_reason == "length" and completion.timings.generated_tokens == 5
    assert completion.text.startswith("{")
    with pytest.raises(ValueError):
        json.loads(completion.text)
    assert parse_routines(completion.text).routines == []  # the parser copes, never raises


@pytest.mark.parametrize("dummy_prefix", [False, True])
def test_a_small_schema_and_the_pieces_builder(dummy_prefix):
    """The builder the mnn runtime uses (each id's bytes from the engine's own decoder).  Its encoder
    may put a space before the text (SentencePiece's dummy prefix, as MNN's does for tiny-llama):
    llguidance needs tokens that spell the bytes exactly, and gets them."""
    _, raw = byte_level_tokenizer()
    encode = FakeModel(raw).engine(None).encode
    tokenizer = grammar_tokenizer_from_pieces(raw, set(range(len(SPECIAL))), {EOS},
                                              (lambda text: encode(" " + text)) if dummy_prefix else encode, "test")
    # Closed (additionalProperties: false): an open object lets the random model add keys with
    # endless strings, which max_tokens=30 cuts.
    schema = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"],
              "additionalProperties": False}
    for seed in range(4):
        model = FakeModel(raw, seed=seed, whitespace_bias=0.0)
        completion = generate(model.engine(lambda width: tokenizer), [1, 300],
                              GenerationSettings(max_tokens=30, temperature=1.0, seed=seed), None, None, schema)
        value = json.loads(completion.text)
        assert completion.finish_reason == "stop" and set(value) == {"on"} and isinstance(value["on"], bool)


def test_choices_still_work_and_exclude_schema():
    tokenizer, raw = _grammar("byte-level")
    model = FakeModel(raw)
    choices = (" 12", " 15", " none")
    completion = generate(model.engine(lambda width: tokenizer), [1, 300], GenerationSettings(max_tokens=8),
                          choices, None)
    assert completion.text in choices
    from eval.errors import HarnessError

    with pytest.raises(HarnessError, match="not both"):
        generate(model.engine(lambda width: tokenizer), [1], GenerationSettings(), choices, None, SCHEMA)
    engine = model.engine(None)
    with pytest.raises(HarnessError, match="cannot build a tokenizer"):
        generate(engine, [1], GenerationSettings(), None, None, SCHEMA)
