"""ExecuTorch on the host: runs the .pte of `make export FORMAT=executorch` (XNNPACK) through executorch's pybindings.

The .pte made by optimum-executorch takes (input_ids [1, T], cache_position [T]) and keeps
its KV cache inside the program, so a prompt is one multi-token call (a real prefill) and
each decode step one call at the next position; writing from position 0 again starts a
new sequence.  The kernels it uses (custom SDPA / KV cache, quantized embeddings) must be
registered before loading, hence the two imports in `_import_executorch`.

Tokens are chosen by runtimes/_decode.py (greedy / temperature, stop strings,
`Request.choices`, `Request.json_schema`).  The schema's token masks come from llguidance,
whose tokenizer is built from the very tokenizer that encodes the prompts (transformers' fast
tokenizer, serialised as tokenizer.json; for a checkpoint with only tokenizer.model, the one
transformers converted it to).
Needs executorch 1.5.1 (+ transformers for the tokenizer, llguidance for schemas): the
executorch toolchain env (export/requirements/executorch.txt) has them.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, missing_dependency

from ._decode import Engine, check_request, common_prefix, generate, grammar_tokenizer_from_json
from .base import Completion, Request, RuntimeInfo

INSTALL_HINT = "make export FORMAT=executorch"
INSTALL_NOTE = "it makes the executorch toolchain env this runtime runs in, from export/requirements/executorch.txt"


def _import_executorch() -> Any:
    try:
        import torch
        from executorch.extension.pybindings import portable_lib
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (custom SDPA / KV-cache kernels)
        import executorch.kernels.quantized  # noqa: F401  (quantized embedding kernels)
    except ModuleNotFoundError as exc:
        raise missing_dependency("The 'executorch' runtime", exc.name, INSTALL_HINT, INSTALL_NOTE) from exc
    return torch, portable_lib


class PteModel:
    """One .pte with its KV cache: prefill, step, and every position's logits (for parity)."""

    def __init__(self, pte: Path, max_seq_len: int | None = None) -> None:
        self.torch, portable_lib = _import_executorch()
        self.module = portable_lib._load_for_executorch(str(pte))
        methods = set(self.module.method_names())
        self.max_seq_len = int(self.module.run_method("get_max_seq_len")[0]) if "get_max_seq_len" in methods \
            else int(max_seq_len or 2048)
        # A .pte exported with dynamic shapes takes many tokens per call, up to `chunk` (the upper
        # bound of its input_ids; for Gemma 3's sliding-window cache it is at most the window).
        self.chunk = int(self.module.method_meta("forward").input_tensor_meta(0).sizes()[-1])
        self.parallel = self.chunk > 1

    def _forward(self, ids: list[int], start: int) -> Any:
        torch = self.torch
        if start + len(ids) > self.max_seq_len:
            raise HarnessError(f"The sequence needs {start + len(ids)} positions but the .pte was exported with "
                               f"max_seq_len={self.max_seq_len}; export with a larger max_seq_len.")
        out = self.module.forward((torch.tensor([ids], dtype=torch.long),
                                   torch.arange(start, start + len(ids), dtype=torch.long)))[0]
        return out.float().numpy()

    def all_logits(self, ids: list[int]) -> Any:
        """Logits at every position of `ids` (a new sequence), [len(ids), vocab]."""
        import numpy as np

        if self.parallel:
            parts = [self._forward(ids[i:i + self.chunk], i) for i in range(0, len(ids), self.chunk)]
            if all(p.ndim == 3 and p.shape[1] == min(self.chunk, len(ids) - k * self.chunk) for k, p in enumerate(parts)):
                return np.concatenate([p[0] for p in parts])
        # Only the last position's logits come back: one call per token (a fresh sequence from 0).
        rows = []
        for i, token in enumerate(ids):
            out = self._forward([token], i)
            rows.append(out.reshape(-1, out.shape[-1])[-1])
        return np.stack(rows)

    def prefill(self, ids: list[int], start: int = 0) -> Any:
        """Run `ids` at positions start, start+1, ... (0: a new sequence); the logits of the last one.

        A start above 0 keeps the KV cache of positions before it: the caller vouches that they
        hold the tokens it wants there (ExecuTorchRuntime's prefix reuse).
        """
        if self.parallel:
            for i in range(0, len(ids), self.chunk):
                out = self._forward(ids[i:i + self.chunk], start + i)
            return out.reshape(-1, out.shape[-1])[-1]
        out = None
        for i, token in enumerate(ids):
            out = self._forward([token], start + i)
        return out.reshape(-1, out.shape[-1])[-1]

    def step(self, token: int, position: int) -> Any:
        out = self._forward([token], position)
        return out.reshape(-1, out.shape[-1])[-1]


def _sliding_window(folder: Path) -> int | None:
    """The checkpoint's sliding window (config.json beside the .pte), None for a model without one.

    Without a config.json nothing is known, so 0: no prefix reuse past a changed token.
    """
    path = folder / "config.json"
    if not path.is_file():
        return 0
    config = json.loads(path.read_text())
    config = config.get("text_config", config)
    if not config.get("sliding_window") or config.get("use_sliding_window") is False:
        return None
    return int(config["sliding_window"])


class ExecuTorchRuntime:
    """ExecuTorch (XNNPACK .pte) on the CPU."""

    name = "executorch"

    def __init__(self, n_threads: int | None = None) -> None:
        torch, portable_lib = _import_executorch()
        if n_threads:
            torch.set_num_threads(int(n_threads))
            # XNNPACK's kernels run on ExecuTorch's own threadpool, not torch's.
            portable_lib._unsafe_reset_threadpool(int(n_threads))
        self.n_threads = int(portable_lib._threadpool_get_thread_count())
        self._model: PteModel | None = None
        self._load_ms: float | None = None
        self._grammar_tokenizer: Any = None

    def load(self, artifact: str) -> None:
        path = Path(artifact)
        folder = path.parent if path.is_file() else path
        pte = path if path.is_file() else folder / "model.pte"
        if not pte.is_file():
            raise HarnessError(f"No model.pte in {folder}. Run `make export MODEL=... FORMAT=executorch`.")
        try:
            import transformers
        except ModuleNotFoundError as exc:
            raise missing_dependency("The 'executorch' runtime's tokenizer", exc.name, INSTALL_HINT, INSTALL_NOTE) from exc
        start = time.perf_counter()
        config = json.loads((folder / "pte_config.json").read_text()) if (folder / "pte_config.json").is_file() else {}
        self._model = PteModel(pte, config.get("max_seq_len"))
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self._folder = folder
        self._grammar_tokenizer = None
        self._sequence: list[int] = []  # the tokens whose KV the .pte holds, at positions 0, 1, ...
        self._window = _sliding_window(folder)
        self._load_ms = (time.perf_counter() - start) * 1000.0
        eos = self._tokenizer.eos_token_id
        gen = folder / "generation_config.json"
        if gen.is_file():
            eos = json.loads(gen.read_text()).get("eos_token_id", eos)
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    def _reusable(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` the .pte's KV cache already holds, safely.

        The cache keeps the last sequence; positions after the shared prefix are overwritten as the
        new prompt goes in.  A sliding-window layer's cache is a ring (optimum-executorch's custom
        KV cache), where writing past the prefix also overwrites older positions the prefix still
        needs once the old sequence ran more than a window beyond it (measured on tiny-gemma3,
        window 16: exact at 16 tokens beyond, wrong at 20), so reuse stops there; and it starts
        at a multiple of the prefill chunk, where a fresh prefill would start a chunk too.
        """
        keep = min(common_prefix(self._sequence, ids), len(ids) - 1)  # at least one token is evaluated
        if self._window is not None:
            if len(self._sequence) - keep > self._window:
                return 0
            # And only from a chunk boundary: gemma-3-270m's 8da4w .pte gave logits 4-6% (relative)
            # off a one-call prefill when split at other positions past the window (exact at these).
            keep -= keep % self._model.chunk
        return keep

    def _engine(self) -> Engine:
        model = self._model
        state = {"reused": 0}

        def prefill(ids: list[int]) -> Any:
            keep = self._reusable(ids)
            self._sequence = []  # nothing is known to be cached if the forward fails
            logits = model.prefill(ids[keep:], start=keep)
            self._sequence = list(ids)
            state["reused"] = keep
            return logits

        def step(token: int) -> Any:
            logits = model.step(token, len(self._sequence))
            self._sequence.append(int(token))
            return logits

        return Engine(prefill=prefill, step=step,
                      encode=lambda text: list(self._tokenizer.encode(text, add_special_tokens=False)),
                      decode=lambda ids: self._tokenizer.decode(list(ids), skip_special_tokens=True),
                      eos=self._eos, grammar_tokenizer=self._grammar, reused=lambda: state["reused"])

    def _grammar(self, width: int) -> Any:
        """llguidance's tokenizer for JSON-schema masks, from the prompt tokenizer itself (built once)."""
        if self._grammar_tokenizer is None:
            backend = getattr(self._tokenizer, "backend_tokenizer", None)
            if backend is not None:
                backend = copy.copy(backend)  # serialised without padding / truncation, as llguidance expects
                backend.no_padding()
                backend.no_truncation()
                text = backend.to_str()
            elif (self._folder / "tokenizer.json").is_file():
                text = (self._folder / "tokenizer.json").read_text(encoding="utf-8")
            else:
                raise HarnessError(f"JSON-schema decoding needs a fast (tokenizer.json) tokenizer, which transformers "
                                   f"could not make for {self._folder}; use Request.choices or the llamacpp runtime.")
            self._grammar_tokenizer = grammar_tokenizer_from_json(text, self._eos, INSTALL_HINT)
        return self._grammar_tokenizer

    def generate(self, requests: list[Request]) -> list[Completion]:
        out = []
        for request in requests:
            check_request("executorch", self._model is not None, request)
            if request.prompt is not None:
                ids = list(self._tokenizer(request.prompt)["input_ids"])
            else:
                encoded = self._tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                              tokenize=True)
                if hasattr(encoded, "keys"):  # transformers 5 returns a BatchEncoding
                    encoded = encoded["input_ids"]
                ids = [int(t) for t in encoded]
            settings = request.settings
            room = self._model.max_seq_len - len(ids)
            if room < 1:
                raise HarnessError(f"The prompt has {len(ids)} tokens but the .pte holds {self._model.max_seq_len}; "
                                   "export with a larger max_seq_len or shorten the prompt.")
            if settings.max_tokens > room:
                settings = type(settings)(max_tokens=room, temperature=settings.temperature, seed=settings.seed,
                                          stop=settings.stop)
            out.append(generate(self._engine(), ids, settings, request.choices, self._load_ms, request.json_schema))
        return out

    @property
    def max_context(self) -> int | None:
        """Positions the .pte holds (its export's max_seq_len): prompt plus output."""
        return self._model.max_seq_len if self._model is not None else None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def info(self) -> RuntimeInfo:
        from importlib.metadata import version

        return RuntimeInfo(self.name, version("executorch"), {"backend": "xnnpack", "threads": self.n_threads})

    def close(self) -> None:
        self._model = None
