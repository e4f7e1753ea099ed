"""The llama.cpp runtime's KV cache across requests (runtimes/llamacpp.py).

The KV cache of the previous request stays in place, and a request whose tokens start with the
same tokens only evaluates the rest.  When a request names a `cache_prefix`, the KV state of
that prefix is also kept aside (`keep` of them, LRU), so requests that alternate between
prefixes still find theirs.  Relies on llama-cpp-python's private `_ctx`, `input_ids` and
`n_tokens` (pinned version, runtimes/versions.env).
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ._decode import common_prefix


@dataclass
class PrefixState:
    tokens: tuple[int, ...]
    data: bytes


class PrefixCache:
    """What the KV cache of one loaded `llama_cpp.Llama` holds, and snapshots of shared prefixes."""

    def __init__(self, lib: Any, llm: Any, keep: int) -> None:
        self._lib = lib
        self.llm = llm
        self.keep = keep
        self.snapshots: OrderedDict[tuple[int, ...], PrefixState] = OrderedDict()

    def reuse(self, tokens: list[int], prefix_len: int) -> int:
        """Prepare the KV cache for `tokens`; returns how many leading tokens are already in it."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        common = common_prefix(cached, tokens)
        # A snapshot of this request's cache_prefix beats a shorter live match.
        if prefix_len > common:
            snapshot = self.snapshots.get(tuple(tokens[:prefix_len]))
            if snapshot is not None and self._restore(snapshot):
                self.snapshots.move_to_end(snapshot.tokens)
                common = len(snapshot.tokens)
        # At least one token must be evaluated to have logits to sample from.
        common = min(common, len(tokens) - 1)
        if common > 0 and not self._holds(common):
            common = 0
        if common > 0 and llm._ctx.kv_cache_seq_rm(0, common, -1):
            llm.n_tokens = common
        else:
            common = 0
            self.forget()
        if hasattr(llm, "_requires_eval"):
            llm._requires_eval = True
        return common

    def _holds(self, n_past: int) -> bool:
        """Whether the KV cache still holds what decoding from position n_past needs.

        A sliding-window cache that is not full-size drops old positions; continuing from
        n_past then needs positions n_past - n_swa .. n_past - 1 (llama.cpp's server checks
        the same before reusing a slot).
        """
        lib = self._lib
        memory = lib.llama_get_memory(self.llm.ctx)
        pos_min = lib.llama_memory_seq_pos_min(memory, 0)
        n_swa = lib.llama_model_n_swa(self.llm.model)
        return pos_min <= 0 or (n_swa > 0 and pos_min <= max(0, n_past - n_swa))

    def save(self, tokens: list[int]) -> None:
        lib = self._lib
        ctx = self.llm.ctx
        size = lib.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        if not written:
            return
        key = tuple(tokens)
        self.snapshots[key] = PrefixState(key, bytes(buffer[:written]))
        self.snapshots.move_to_end(key)
        while len(self.snapshots) > self.keep:
            self.snapshots.popitem(last=False)

    def forget(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.llm.n_tokens = 0

    def _restore(self, snapshot: PrefixState) -> bool:
        lib = self._lib
        llm = self.llm
        llm._ctx.kv_cache_clear()
        buffer = (ctypes.c_uint8 * len(snapshot.data)).from_buffer_copy(snapshot.data)
        if lib.llama_state_seq_set_data(llm.ctx, buffer, len(snapshot.data), 0) != len(snapshot.data):
            self.forget()
            return False
        llm.input_ids[: len(snapshot.tokens)] = snapshot.tokens
        llm.n_tokens = len(snapshot.tokens)
        return True
