"""Near ties between two greedy answers: where two runs of the same model on the same requests
(another CPU's kernels, another engine's batch splits) answer differently, the host model's logits
at the point where the answers part must be within TIE_LOGITS of each other; a build that
computes wrong logits differs where the model is sure, and fails.  (tests/test_arm64.py,
tests/test_ew_llama.py)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Two choices whose logits are this close are a tie that rounding may break either way: the
# phones' kernels differ by thousandths (0.003 measured), the host's other batch splits by more
# (a 0.12 tie once broken the other way, session 3); a wrong build by whole units.
TIE_LOGITS = 0.25


class Ties:
    """The host model's logits where two answers to the same prompt part (llama-cpp-python)."""

    def __init__(self, model: Path | None, n_ctx: int = 2048) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(str(model), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)

    def gap(self, prompt: str, a: str, b: str) -> float:
        """|logit(a's next token) - logit(b's next token)| after prompt + their common prefix."""
        common = os.path.commonprefix([a, b])
        llm = self.llm
        tokens = llm.tokenize((prompt + common).encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(tokens)
        logits = llm.scores[llm.n_tokens - 1]
        first_a, first_b = (llm.tokenize(rest[len(common):].encode(), add_bos=False, special=False)[0]
                            for rest in (a, b))
        return abs(float(logits[first_a]) - float(logits[first_b]))

    def check(self, plan: Any, ours: list[str], theirs: list[str]) -> list[tuple[str, str, float]]:
        """The incremental answers (output lines "session <TAB> field <TAB> value") that differ,
        each with the host's logit gap; fails on one that is no tie."""
        assert len(ours) == len(theirs) == len(plan.requests), (ours, theirs)
        differ = []
        for request, a, b in zip(plan.requests, ours, theirs):
            if a == b:
                continue
            assert a.rsplit("\t", 1)[0] == b.rsplit("\t", 1)[0], (a, b)  # the same question
            by_text = {c.strip(): c for c in request.choices}
            choice_a, choice_b = by_text[a.rsplit("\t", 1)[1]], by_text[b.rsplit("\t", 1)[1]]
            gap = self.gap(request.prompt, choice_a, choice_b)
            differ.append((a, b, round(gap, 4)))
            assert gap <= TIE_LOGITS, f"{a!r} and {b!r} differ where the model is not tied (logit gap {gap:.3f})"
        return differ
