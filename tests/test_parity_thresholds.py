"""Parity thresholds per format and variant (export/catalogue.py) catch a broken quantization.

A tiny model (a random bigram model: embedding -> output matrix, a 384-token vocabulary like
the tiny checkpoints) goes through export/parity.py's own `check` twice: with its output matrix
quantized correctly at 8 bits per 32-weight block (what a Q8_0 export should be), and with the
same matrix silently quantized at 3 bits (a broken export: the variant says Q8_0, the weights
are not).  The recipe's measured threshold for tiny GGUF Q8_0 passes the first and fails the
second; the old blanket 0.6 passed both.
"""

from __future__ import annotations

import numpy as np
import pytest

from export.catalogue import UNMEASURED_MIN_TOP1, get_recipe, min_top1
from export.parity import check

VOCAB, HIDDEN, BLOCK = 384, 64, 32


class _Prompt:
    def __init__(self, name: str, ids: list[int]) -> None:
        self.name, self.text, self.ids = name, "", ids


class _Bigram:
    """A tiny model: next-token logits depend on the current token only."""

    def __init__(self, embedding: np.ndarray, output: np.ndarray, prompts: list[_Prompt]) -> None:
        self.embedding, self.output, self.prompts, self.window = embedding, output, prompts, 0

    def _logits(self, ids: list[int]) -> np.ndarray:
        return self.embedding[ids] @ self.output

    def logits(self, arg):  # Reference.logits(i) and Candidate.logits(ids)
        return self._logits(self.prompts[arg].ids if isinstance(arg, int) else arg)

    def greedy(self, arg, n: int = 16) -> list[int]:
        ids = list(self.prompts[arg].ids if isinstance(arg, int) else arg)
        out = []
        for _ in range(n):
            out.append(int(self._logits(ids[-1:])[-1].argmax()))
            ids.append(out[-1])
        return out

    def tokenize(self, text: str) -> None:
        return None


def _quantized(weights: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric absmax quantization per block of 32 weights (Q8_0's scheme at `bits`)."""
    blocks = weights.reshape(-1, BLOCK)
    levels = 2 ** (bits - 1) - 1
    scale = np.abs(blocks).max(axis=1, keepdims=True) / levels
    return (np.round(blocks / scale) * scale).reshape(weights.shape)


@pytest.fixture()
def tiny() -> tuple[np.ndarray, np.ndarray, list[_Prompt]]:
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)
    output = (rng.normal(size=(HIDDEN, VOCAB)) / 8).astype(np.float32)
    prompts = [_Prompt(f"p{i}", [int(t) for t in rng.integers(0, VOCAB, size=100)]) for i in range(3)]
    return embedding, output, prompts


def test_a_broken_quantization_fails_the_measured_threshold(tiny):
    embedding, output, prompts = tiny
    reference = _Bigram(embedding, output, prompts)
    recipe = get_recipe("tiny-llama")
    threshold, measured = min_top1(recipe.format_options("gguf"), "Q8_0")
    assert measured and threshold == 0.88

    good = check(reference, _Bigram(embedding, _quantized(output, 8), prompts), exact=False, min_top1=threshold)
    broken = check(reference, _Bigram(embedding, _quantized(output, 3), prompts), exact=False, min_top1=threshold)
    assert good["passed"] and good["top1_agreement"] >= 0.97
    assert not broken["passed"] and 0.6 <= broken["top1_agreement"] < threshold
    # The old blanket threshold let the broken export through.
    assert check(reference, _Bigram(embedding, _quantized(output, 3), prompts), exact=False,
                 min_top1=UNMEASURED_MIN_TOP1)["passed"]


def test_thresholds_are_per_format_and_variant():
    phone = get_recipe("gemma-3-270m")
    assert min_top1(phone.format_options("gguf"), "Q4_K_M") == (0.94, True)
    assert min_top1(phone.format_options("onnx"), "int4-qnn") == (0.90, True)  # the EP suffix is not a variant
    assert min_top1(phone.format_options("executorch"), "8da4w") == (0.85, True)
    assert min_top1(phone.format_options("mnn"), "int4") == (0.90, True)
    # A variant nobody measured keeps the old floor, and says so.
    assert min_top1(phone.format_options("gguf"), "Q2_K") == (UNMEASURED_MIN_TOP1, False)
    assert min_top1({"min_top1": 0.5}, "anything") == (0.5, True)  # an explicit number applies to every variant
