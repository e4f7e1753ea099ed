"""llama.cpp sampling for the host runtime (runtimes/llamacpp.py): grammars and the sampler.

- `schema_grammar` / `choices_grammar`: GBNF for a request's JSON schema or its choices (the
  phone runner sends the same grammars to llama.cpp's tools).
- `Sampler`: one sampling setup over a llama.cpp sampler chain, with the grammar fast path.
- `TokenArray`: a llama_token_data_array over a buffer, also seen as a numpy array.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

from eval.errors import HarnessError


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema, by llama-cpp-python's converter (the same llama.cpp's tools use)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:
        raise HarnessError(
            f"llama-cpp-python could not turn the JSON schema into a grammar ({exc}). "
            "Use a schema without $ref and with integer bounds as enums (see eval/schema.py)."
        ) from exc


def choices_grammar(choices: tuple[str, ...]) -> str:
    """GBNF that admits exactly one of the strings (each a literal; JSON escaping is GBNF's)."""
    return "root ::= " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in choices)


# --- sampling ------------------------------------------------------------------------------


class Sampler:
    """One sampling setup (grammar or none, greedy or temperature) over a llama.cpp sampler chain.

    llama-cpp-python applies the grammar to every token of the vocabulary at every step
    (Gemma: 262k tokens, tens of ms per token on a laptop core).  With `fast_path` this
    does what llama.cpp's own common sampler does instead: choose a token without the
    grammar, then ask the grammar about that one token.  Only when it is rejected:
      - greedy: the grammar looks at the most likely tokens (FAST_TOP_K) and the best one it
        allows wins, which is exactly the constrained argmax; the whole vocabulary only if
        it allows none of them;
      - temperature: the grammar filters the whole vocabulary and the token is drawn again,
        which samples exactly the constrained distribution.
    `fast_path=False` keeps llama-cpp-python's behaviour, for comparison.
    """

    # Candidate counts tried, in order, before the whole vocabulary.
    FAST_TOP_K = (64, 4096)

    def __init__(self, lib: Any, llm: Any, grammar: str | None, temperature: float, seed: int,
                 fast_path: bool) -> None:
        self._lib = lib
        self.n_vocab = llm.n_vocab()
        self.greedy = temperature <= 0
        self.fast_path = fast_path
        self.grammar = None
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        self.chain = lib.llama_sampler_chain_init(params)
        if self.greedy:
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_temp(float(temperature)))
            lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        if grammar is not None:
            self.grammar = lib.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
            if not self.grammar:
                self.close()
                raise HarnessError(
                    "llama.cpp rejected the grammar made from the request's JSON schema. "
                    "Simplify the schema (no $ref, integer bounds as enums, see eval/schema.py)."
                )
            import numpy as np

            self._np = np
            self._all = TokenArray(lib, self.n_vocab)
            self._all_ids = np.arange(self.n_vocab, dtype=np.int32)
            self._few = TokenArray(lib, min(max(self.FAST_TOP_K), self.n_vocab))
        self.full_grammar_passes = 0  # steps where the grammar had to filter the whole vocabulary

    def reset(self) -> None:
        self._lib.llama_sampler_reset(self.chain)
        if self.grammar is not None:
            self._lib.llama_sampler_reset(self.grammar)
        self.full_grammar_passes = 0

    def sample(self, ctx: Any) -> int:
        lib = self._lib
        if self.grammar is None:
            return int(lib.llama_sampler_sample(self.chain, ctx, -1))  # accepts the token too
        np = self._np
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,))
        token = -1
        if self.fast_path and self.greedy:
            best = int(np.argmax(logits))
            if self._allowed(best, logits):
                token = best
            else:
                token = self._best_allowed(logits)
        elif self.fast_path:
            self._all.load(self._all_ids, logits)
            token = self._choose(self._all)
            if not self._allowed(token, logits):
                token = -1
        if token < 0:
            self.full_grammar_passes += 1
            self._all.load(self._all_ids, logits)
            lib.llama_sampler_apply(self.grammar, self._all.ref)
            token = self._choose(self._all)
        lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.chain, token)
        return token

    def _best_allowed(self, logits: Any) -> int:
        """The most likely token the grammar allows among the top FAST_TOP_K tiers; -1 if none."""
        np = self._np
        lib = self._lib
        for k in self.FAST_TOP_K:
            if k >= self.n_vocab:  # a small vocabulary (a tiny test model): the whole pass below
                break
            top = np.argpartition(logits, -k)[-k:]
            top = top[np.lexsort((top, -logits[top]))]  # by logit, ties by id, as greedy breaks them
            self._few.load(top, logits[top])
            lib.llama_sampler_apply(self.grammar, self._few.ref)
            ok = np.isfinite(self._few.np["logit"][:k])
            if ok.any():
                return int(self._few.np["id"][int(np.argmax(ok))])
        return -1

    def _allowed(self, token: int, logits: Any) -> bool:
        """Whether the grammar allows `token` next."""
        self._few.load([token], [logits[token]])
        self._lib.llama_sampler_apply(self.grammar, self._few.ref)
        return bool(self._np.isfinite(self._few.np["logit"][0]))

    def _choose(self, tokens: TokenArray) -> int:
        self._lib.llama_sampler_apply(self.chain, tokens.ref)
        # Samplers may reorder or shrink the array; the id travels with the entry.
        return int(tokens.np["id"][tokens.arr.selected])

    def close(self) -> None:
        if getattr(self, "grammar", None):
            self._lib.llama_sampler_free(self.grammar)
            self.grammar = None
        if getattr(self, "chain", None):
            self._lib.llama_sampler_free(self.chain)
            self.chain = None


class TokenArray:
    """A llama_token_data_array over a buffer of `capacity` entries, also seen as a numpy array."""

    def __init__(self, lib: Any, capacity: int) -> None:
        import numpy as np

        self.buffer = (lib.llama_token_data * capacity)()
        self.np = np.ctypeslib.as_array(self.buffer)
        self.arr = lib.llama_token_data_array(
            data=ctypes.cast(self.buffer, lib.llama_token_data_p), size=capacity, selected=-1, sorted=False,
        )
        self.ref = ctypes.byref(self.arr)

    def load(self, ids: Any, logits: Any) -> None:
        n = len(ids)
        self.np["id"][:n] = ids
        self.np["logit"][:n] = logits
        self.np["p"][:n] = 0.0
        self.arr.size = n
        self.arr.selected = -1
        self.arr.sorted = False
