"""A decoding loop shared by engines whose Python API gives logits (ONNX Runtime GenAI, ExecuTorch, MNN).

The engine supplies `prefill(ids) -> logits of the last position` and `step(token) -> logits`,
and a tokenizer (`encode`, `decode`).  This module does greedy / temperature sampling, stop
strings, `Request.choices` (the output is exactly one of the given strings: at each step
only tokens that keep the text a prefix of some choice may win), `Request.json_schema` and
the timings.

JSON schema: llguidance (PyPI `llguidance`, pinned in LLGUIDANCE) compiles the schema and,
at each step, gives the set of tokens that keep the output a prefix of a valid document;
every other logit is set to -inf before the token is chosen (greedy or temperature).  The
mask needs every token's bytes: `Engine.grammar_tokenizer` builds llguidance's tokenizer from
what the runtime has (a tokenizer.json, or each token decoded by the engine's own tokenizer),
once per model.  Generation stops when the grammar is complete (nothing may follow: the end
is forced) or when the model picks an end-of-text token where the grammar allows the end;
max_tokens cuts it with finish_reason "length", and the text may then be unfinished JSON.
Whitespace between JSON tokens is bounded as llama.cpp's schema converter bounds it.
Computing the masks, and building the tokenizer on the first schema request, count in
`Timings.sampling_ms`.

Text is decoded relative to the last prompt token (decode(anchor + generated) minus
decode(anchor)), so a SentencePiece "▁word" keeps its leading space as it does in a
continuation, and choices with a leading space (" 47") compare as the model writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eval.errors import HarnessError

from ._proc import peak_rss_mb
from .base import Completion, GenerationSettings, Request, Timings
from .versions import LLGUIDANCE_VERSION

# Tokens to try, best first, when none of the choice-derived candidates keeps a prefix.
CHOICE_SCAN = 2048
# The JSON-schema engine (runtimes/versions.env; the requirements files pin the same version).
LLGUIDANCE = f"llguidance=={LLGUIDANCE_VERSION}"
# Whitespace allowed between JSON tokens: none, one space, or a newline and up to 20 spaces or
# tabs (what llama.cpp's schema converter allows).  Unbounded, a model can pad until max_tokens.
JSON_WHITESPACE = r"(?: |\n[ \t]{0,20})?"


@dataclass
class Engine:
    prefill: Callable[[list[int]], Any]  # prompt ids -> logits of the last position (1-D)
    step: Callable[[int], Any]  # one token -> logits of it (1-D)
    encode: Callable[[str], list[int]]  # text -> ids, no BOS
    decode: Callable[[Sequence[int]], str]
    eos: set[int]
    # Logits width -> llguidance.LLTokenizer over the same ids (for Request.json_schema); the
    # runtime builds it once per model (see grammar_tokenizer_from_json / _from_pieces).
    grammar_tokenizer: Callable[[int], Any] | None = None
    # How many prompt tokens the last prefill took from the engine's KV cache instead of evaluating.
    reused: Callable[[], int] = lambda: 0


class _Text:
    """Generated text, decoded relative to an anchor token."""

    def __init__(self, engine: Engine, anchor: int | None) -> None:
        self.engine = engine
        self.anchor = [anchor] if anchor is not None else []
        self.base = engine.decode(self.anchor) if self.anchor else ""

    def of(self, generated: Sequence[int]) -> str:
        text = self.engine.decode([*self.anchor, *generated])
        return text[len(self.base):] if text.startswith(self.base) else text


def _choose(logits: Any, np: Any, settings: GenerationSettings, rng: Any) -> int:
    if settings.temperature <= 0:
        return int(np.argmax(logits))
    scaled = (logits - logits.max()) / settings.temperature
    probs = np.exp(scaled)
    probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def common_prefix(a: Any, b: list[int]) -> int:
    """Length of the common prefix of two token sequences (how much of a kept KV cache a prompt can reuse)."""
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(differ[0]) if differ.size else n


def check_request(runtime: str, loaded: bool, request: Request) -> None:
    """What these engines refuse: a request before load()."""
    if not loaded:
        raise HarnessError(f"Load a model into the '{runtime}' runtime first (runtime.load(path)).")


def import_llguidance(where: str) -> Any:
    """The llguidance module, or a HarnessError saying how to install it in `where`."""
    try:
        import llguidance
    except ModuleNotFoundError as exc:
        raise HarnessError(
            f"JSON-schema constrained decoding needs the Python package llguidance, which is not installed "
            f"here. Install it with `pip install '{LLGUIDANCE}'` ({where})."
        ) from exc
    return llguidance


def grammar_tokenizer_from_json(tokenizer_json: str, eos: set[int], where: str) -> Any:
    """llguidance's tokenizer from the text of a Hugging Face tokenizer.json (no transformers needed)."""
    llguidance = import_llguidance(where)
    try:
        return llguidance.LLTokenizer(tokenizer_json, eos_token=sorted(eos) if eos else None)
    except Exception as exc:  # llguidance raises plain exceptions for tokenizers it cannot read
        raise HarnessError(f"llguidance could not read the model's tokenizer.json for JSON-schema decoding ({exc}); "
                           "use Request.choices or the llamacpp runtime for this model.") from exc


class _Pieces:
    """What llguidance.TokenizerWrapper reads: every token's bytes, the special ids and an encoder.

    llguidance requires the encoder's tokens to spell exactly the bytes it was given.  A
    SentencePiece encoder with a dummy prefix does not ("{" -> "▁{"), so then the bytes are
    covered greedily, longest piece first, from the same vocabulary.
    """

    def __init__(self, pieces: Sequence[bytes], special: set[int], eos: set[int],
                 encode: Callable[[str], list[int]]) -> None:
        self.tokens = list(pieces)
        self.special_token_ids = sorted(t for t in special if t < len(self.tokens))
        self.eos_token_id = min(eos)
        self.bos_token_id = None
        self._encode = encode
        self._ids: dict[bytes, int] = {}
        for i, piece in enumerate(self.tokens):
            if piece and i not in special:
                self._ids.setdefault(piece, i)
        self._longest = max((len(p) for p in self._ids), default=1)

    def __call__(self, text: str | bytes) -> list[int]:
        data = text if isinstance(text, bytes) else text.encode()
        try:
            ids = self._encode(data.decode())
        except UnicodeDecodeError:
            ids = None
        if ids is not None and all(0 <= t < len(self.tokens) for t in ids) \
                and b"".join(self.tokens[t] for t in ids) == data:
            return ids
        out, at = [], 0
        while at < len(data):
            for n in range(min(self._longest, len(data) - at), 0, -1):
                token = self._ids.get(data[at:at + n])
                if token is not None:
                    out.append(token)
                    at += n
                    break
            else:
                raise ValueError(f"no token of the vocabulary spells byte {data[at]:#04x}")
        return out


def grammar_tokenizer_from_pieces(pieces: Sequence[bytes], special: set[int], eos: set[int],
                                  encode: Callable[[str], list[int]], where: str) -> Any:
    """llguidance's tokenizer from each token's bytes (as the runtime's own tokenizer decodes it).

    Special tokens (BOS, EOS, chat markers) are never text: they are only allowed as the end.
    """
    llguidance = import_llguidance(where)
    if not eos:
        raise HarnessError("JSON-schema decoding needs the model's end-of-text token ids, which its tokenizer does "
                           "not name; re-export the model.")
    try:
        wrapper = llguidance.TokenizerWrapper(_Pieces(pieces, special, eos, encode))
        return llguidance.LLTokenizer(wrapper, eos_token=sorted(eos))
    except Exception as exc:  # llguidance raises plain exceptions for vocabularies it cannot use
        raise HarnessError(f"llguidance could not use the model's vocabulary for JSON-schema decoding ({exc}); "
                           "use Request.choices or the llamacpp runtime for this model.") from exc


class _Schema:
    """A JSON schema as token masks over the engine's vocabulary (llguidance's LLMatcher)."""

    def __init__(self, engine: Engine, schema: dict[str, Any], width: int, np: Any) -> None:
        tokenizer = engine.grammar_tokenizer(width)
        import llguidance
        from llguidance.numpy import allocate_token_bitmask

        self.np = np
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                schema, overrides={"whitespace_flexible": True, "whitespace_pattern": JSON_WHITESPACE})
        except ValueError as exc:
            raise HarnessError(f"The request's JSON schema is not a JSON object llguidance accepts ({exc}); "
                               "fix the schema.") from exc
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise HarnessError(f"llguidance could not compile the request's JSON schema: {self.matcher.get_error()} "
                               "Simplify the schema (or use the llamacpp runtime).")
        self.vocab = int(tokenizer.vocab_size)
        self.width = width
        self.eos = set(engine.eos) | set(int(t) for t in tokenizer.eos_tokens)
        self.bitmask = allocate_token_bitmask(1, self.vocab)

    def finished(self) -> bool:
        """True when nothing may follow: the document is complete."""
        if self.matcher.is_error():
            raise HarnessError(f"JSON-schema decoding stopped: {self.matcher.get_error()} Simplify the schema "
                               "(or use the llamacpp runtime).")
        return bool(self.matcher.is_stopped())

    def mask(self, logits: Any) -> Any:
        """The logits with every token the schema does not allow next set to -inf."""
        from llguidance.numpy import fill_next_token_bitmask

        np = self.np
        fill_next_token_bitmask(self.matcher, self.bitmask)
        if self.matcher.is_error():
            raise HarnessError(f"JSON-schema decoding failed: {self.matcher.get_error()}")
        bits = np.unpackbits(self.bitmask[0].view(np.uint8), bitorder="little")
        allowed = np.zeros(len(logits), dtype=bool)
        n = min(len(logits), self.vocab)
        allowed[:n] = bits[:n]
        if not allowed.any():
            raise HarnessError("No token of this model's vocabulary continues the JSON the schema asks for; "
                               "check that the artifact's tokenizer matches its model.")
        return np.where(allowed, logits, np.float32(-np.inf))

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise HarnessError(f"JSON-schema decoding refused token {token}: {self.matcher.get_error()}")


def generate(engine: Engine, prompt_ids: list[int], settings: GenerationSettings,
             choices: tuple[str, ...] | None, load_ms: float | None,
             json_schema: dict[str, Any] | None = None) -> Completion:
    import numpy as np

    if json_schema is not None and choices is not None:
        raise HarnessError("A request takes choices or a JSON schema, not both.")
    if json_schema is not None and engine.grammar_tokenizer is None:
        raise HarnessError("This engine cannot build a tokenizer for JSON-schema decoding; use Request.choices "
                           "or the llamacpp runtime.")
    rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    logits = np.asarray(engine.prefill(prompt_ids), dtype=np.float32)
    prefill_s = time.perf_counter() - start
    reused = engine.reused()
    text_of = _Text(engine, prompt_ids[-1] if prompt_ids else None)
    generated: list[int] = []
    first_at = last_at = None
    finish = "length"
    text = ""
    sampling_s = 0.0
    schema = None
    eos = engine.eos
    if json_schema is not None:
        # Building the tokenizer (first schema request only) and compiling the grammar: sampling time.
        setup_start = time.perf_counter()
        schema = _Schema(engine, json_schema, len(logits), np)
        eos = schema.eos
        sampling_s += time.perf_counter() - setup_start
    budget = settings.max_tokens
    while len(generated) < budget:
        pick_start = time.perf_counter()
        if choices is not None:
            token, done = _choice_token(engine, text_of, generated, logits, choices, np)
        elif schema is not None:
            done = False
            token = None if schema.finished() else _choose(schema.mask(logits), np, settings, rng)
            if token is not None and token not in eos:
                schema.consume(token)
        else:
            token, done = _choose(logits, np, settings, rng), False
        now = time.perf_counter()
        sampling_s += now - pick_start
        if token is None or (choices is None and token in eos):
            finish = "stop"
            break
        generated.append(token)
        first_at = first_at or now
        last_at = now
        text = text_of.of(generated)
        if choices is not None and done:
            finish = "stop"
            break
        if settings.stop:
            cut = min((i for i in (text.find(s) for s in settings.stop) if i >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                finish = "stop"
                break
        if schema is not None and schema.finished():  # the document is complete: nothing may follow
            finish = "stop"
            break
        if len(generated) >= budget:
            break
        logits = np.asarray(engine.step(token), dtype=np.float32)
    end = time.perf_counter()
    if choices is not None and text not in choices:
        raise HarnessError(
            f"Constrained decoding ended on {text!r}, which is none of the {len(choices)} choices "
            f"(max_tokens={budget} may be too small for the longest choice)."
        )
    decode_s = (last_at - first_at) if first_at is not None and last_at is not None else 0.0
    n = len(generated)
    return Completion(text=text, finish_reason=finish, timings=Timings(
        load_ms=load_ms, ttft_ms=(first_at - start) * 1000.0 if first_at is not None else None,
        prefill_tps=(len(prompt_ids) - reused) / prefill_s if prefill_s > 0 and len(prompt_ids) > reused else None,
        decode_tps=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
        prompt_tokens=len(prompt_ids), prompt_tokens_evaluated=len(prompt_ids) - reused, generated_tokens=n,
        peak_rss_mb=peak_rss_mb(), sampling_ms=sampling_s * 1000.0, total_ms=(end - start) * 1000.0,
    ))


def _choice_token(engine: Engine, text_of: _Text, generated: list[int], logits: Any,
                  choices: tuple[str, ...], np: Any) -> tuple[int | None, bool]:
    """The best token that keeps the text a prefix of some choice; (token, text now complete)."""
    current = text_of.of(generated) if generated else ""
    live = [c for c in choices if c.startswith(current)]
    if current in choices and not any(len(c) > len(current) for c in live):
        return None, True
    # Candidates: the first token of each choice's remainder (as encoded alone, with and
    # without its leading space), then the most likely tokens of the whole vocabulary.
    candidates: list[int] = []
    for choice in live:
        rest = choice[len(current):]
        for variant in (rest, rest.lstrip(" ")):
            if variant:
                ids = engine.encode(variant)
                if ids:
                    candidates.append(ids[0])
    ordered = sorted(set(candidates), key=lambda t: -float(logits[t]))
    if current in choices:
        # The text is already a choice; stopping competes with going on to a longer one.
        eos = max(engine.eos, key=lambda t: float(logits[t])) if engine.eos else None
        best_go = next((t for t in ordered if _keeps(text_of, generated, t, live)), None)
        if best_go is None or (eos is not None and float(logits[eos]) >= float(logits[best_go])):
            return None, True
        return best_go, text_of.of([*generated, best_go]) in choices
    for token in ordered:
        if _keeps(text_of, generated, token, live):
            return token, text_of.of([*generated, token]) in choices and _final(text_of, generated, token, live)
    top = np.argsort(-logits)[:CHOICE_SCAN]
    for token in top:
        token = int(token)
        if token not in candidates and _keeps(text_of, generated, token, live):
            return token, text_of.of([*generated, token]) in choices and _final(text_of, generated, token, live)
    raise HarnessError(f"No token continues the text {current!r} towards any of the choices {list(live)[:5]}.")


def _keeps(text_of: _Text, generated: list[int], token: int, live: list[str]) -> bool:
    text = text_of.of([*generated, token])
    return bool(text) and len(text) > len(text_of.of(generated)) and any(c.startswith(text) for c in live)


def _final(text_of: _Text, generated: list[int], token: int, live: list[str]) -> bool:
    text = text_of.of([*generated, token])
    return not any(len(c) > len(text) and c.startswith(text) for c in live)
