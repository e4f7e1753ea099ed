"""A decoding loop shared by engines whose Python API gives logits (ONNX Runtime GenAI, ExecuTorch, MNN).

The engine supplies `prefill(ids) -> logits of the last position` and `step(token) -> logits`,
and a tokenizer (`encode`, `decode`).  This module does greedy / temperature sampling, stop
strings, `Request.choices` (the output is exactly one of the given strings: at each step
only tokens that keep the text a prefix of some choice may win) and the timings.

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

# Tokens to try, best first, when none of the choice-derived candidates keeps a prefix.
CHOICE_SCAN = 2048


@dataclass
class Engine:
    prefill: Callable[[list[int]], Any]  # prompt ids -> logits of the last position (1-D)
    step: Callable[[int], Any]  # one token -> logits of it (1-D)
    encode: Callable[[str], list[int]]  # text -> ids, no BOS
    decode: Callable[[Sequence[int]], str]
    eos: set[int]


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


def check_request(runtime: str, loaded: bool, request: Request) -> None:
    """What these engines refuse: a request before load(), and JSON-schema decoding (choices work)."""
    if not loaded:
        raise HarnessError("Load a model first (runtime.load(path)).")
    if request.json_schema is not None:
        raise HarnessError(
            f"The '{runtime}' runtime does not support JSON-schema constrained decoding yet. Use --runtime "
            "llamacpp for schema-constrained strategies, or a strategy that uses choices (incremental)."
        )


def generate(engine: Engine, prompt_ids: list[int], settings: GenerationSettings,
             choices: tuple[str, ...] | None, load_ms: float | None) -> Completion:
    import numpy as np

    rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    logits = np.asarray(engine.prefill(prompt_ids), dtype=np.float32)
    prefill_s = time.perf_counter() - start
    text_of = _Text(engine, prompt_ids[-1] if prompt_ids else None)
    generated: list[int] = []
    first_at = last_at = None
    finish = "length"
    text = ""
    sampling_s = 0.0
    budget = settings.max_tokens
    while len(generated) < budget:
        pick_start = time.perf_counter()
        if choices is not None:
            token, done = _choice_token(engine, text_of, generated, logits, choices, np)
        else:
            token, done = _choose(logits, np, settings, rng), False
        now = time.perf_counter()
        sampling_s += now - pick_start
        if token is None or (choices is None and token in engine.eos):
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
        prefill_tps=len(prompt_ids) / prefill_s if prefill_s > 0 else None,
        decode_tps=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
        prompt_tokens=len(prompt_ids), prompt_tokens_evaluated=len(prompt_ids), generated_tokens=n,
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
