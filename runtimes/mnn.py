"""MNN on the host: runs the folder of `make export FORMAT=mnn` through MNN.llm (pymnn).

Facts about MNN.llm's Python API (MNN 3.6.1) that shape this adapter:
  - `Llm.forward(ids)` returns the logits of the last position as a view of MNN's output
    buffer, which the next forward overwrites (copied here at once);
  - the adapter chooses tokens itself (runtimes/_decode.py), which gives `Request.choices`
    and `Request.json_schema`;
  - `Llm.generate(ids)` returns [] (not used);
  - reading the context after invalid UTF-8 output can crash, so nothing here reads it.
The import of MNN is guarded like the exporter's (runtimes/mnn_guard.py: block_telemetry), since
pymnn's tools send usage telemetry.
JSON schema: llguidance's token masks must be over MNN's own ids, and the artifact has only
MNN's tokenizer (tokenizer.mtok / .txt, no tokenizer.json), so the mask's tokenizer is built
from it: every id decoded by MNN (the same per-token decode that makes the output text), the
special ids (never text) and stop ids from the tokenizer file's header.  Built once per
model (0.15 s of decoding for Gemma 3's 262k ids, plus about 1 s in llguidance).
Needs MNN==3.6.1 (and llguidance for schemas): the mnn toolchain env (export/requirements/mnn.txt) has them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, missing_dependency

from .mnn_guard import block_telemetry
from ._decode import Engine, check_request, generate, grammar_tokenizer_from_pieces
from .base import Completion, Request, RuntimeInfo

INSTALL_HINT = "make export FORMAT=mnn"
INSTALL_NOTE = "it makes the mnn toolchain env this runtime runs in, from export/requirements/mnn.txt"


def _import_mnn() -> Any:
    block_telemetry()
    try:
        import MNN.llm as llm
    except ModuleNotFoundError as exc:
        raise missing_dependency("The 'mnn' runtime", exc.name, INSTALL_HINT, INSTALL_NOTE) from exc
    return llm


def tokenizer_header(path: Path) -> tuple[set[int], set[int]]:
    """(special ids, stop ids) from the header of a tokenizer.mtok / tokenizer.txt.

    Its first three lines are "magic type", "n_special n_stop n_prefix" and those ids (see
    export/mnn.py, _fix_prefix).
    """
    try:
        with path.open("rb") as handle:
            handle.readline()
            n_special, n_stop, _ = (int(x) for x in handle.readline().split())
            ids = [int(x) for x in handle.readline().split()]
    except (OSError, ValueError) as exc:
        raise HarnessError(f"Could not read the special tokens from {path} ({exc}); JSON-schema decoding needs them. "
                           "Re-export with `make export MODEL=... FORMAT=mnn`.") from exc
    return set(ids[:n_special]), set(ids[n_special:n_special + n_stop])


def render_llm_config_chat(folder: Path, messages: tuple[dict[str, str], ...]) -> str:
    """Chat messages as text through the chat template MNN's export writes into llm_config.json
    (jinja.chat_template, bos, eos); used when the folder has no tokenizer_config.json (the host
    adapter here and device_runner's phone path render the same text)."""
    path = folder / "llm_config.json"
    jinja = json.loads(path.read_text()).get("jinja", {}) if path.is_file() else {}
    template = jinja.get("chat_template")
    if not template:
        raise HarnessError(f"The model {folder} has no chat template; send a raw prompt.")
    import jinja2

    return jinja2.Environment().from_string(template).render(
        messages=list(messages), add_generation_prompt=True, bos_token=jinja.get("bos", ""),
        eos_token=jinja.get("eos", ""))


class MnnModel:
    """One MNN LLM folder: prefill / step with the KV cache, every position's logits, its tokenizer."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        import numpy as np

        self.np = np
        llm = _import_mnn()
        config = folder / "config.json"
        if not config.is_file():
            raise HarnessError(f"{folder} has no config.json; run `make export MODEL=... FORMAT=mnn`.")
        self.llm = llm.create(str(config))
        self.llm.load()
        # Greedy and high precision: the adapter picks tokens from the logits itself.
        self.llm.set_config({"thread_num": threads, "precision": "high", "sampler_type": "greedy"})

    def _logits(self, out: Any) -> Any:
        # read() is a view of MNN's output buffer, which the next forward overwrites: copy it.
        return self.np.array(out.read(), dtype=self.np.float32, copy=True).reshape(-1)

    def prefill(self, ids: list[int]) -> Any:
        self._sequence = [int(t) for t in ids]
        self.llm.reset()
        return self._logits(self.llm.forward(list(self._sequence)))

    def step(self, token: int) -> Any:
        self._sequence.append(int(token))
        return self._logits(self.llm.forward([int(token)]))  # continues the KV cache

    def all_logits(self, ids: list[int]) -> Any:
        """Logits at every position: a reset, then one forward per token (only the last position comes back)."""
        self.llm.reset()
        self._sequence = []
        rows = []
        for token in ids:
            self._sequence.append(int(token))
            rows.append(self._logits(self.llm.forward([int(token)])))
        return self.np.stack(rows)

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.llm.tokenizer_encode(text)]

    def pieces(self, count: int) -> list[bytes]:
        """The bytes of each of the first `count` ids, as decode() gives them one by one."""
        out = []
        for t in range(count):
            try:
                out.append(self.llm.tokenizer_decode(t).encode())
            except UnicodeDecodeError as exc:  # a byte-fallback token: its byte
                out.append(exc.object)
        return out

    def decode(self, ids: list[int]) -> str:
        # A byte-fallback token (one byte of a UTF-8 character) decodes to invalid UTF-8, which
        # pymnn raises as UnicodeDecodeError; its .object holds the bytes, joined here.
        pieces = []
        for t in ids:
            try:
                pieces.append(self.llm.tokenizer_decode(int(t)).encode())
            except UnicodeDecodeError as exc:
                pieces.append(exc.object)
        return b"".join(pieces).decode(errors="replace")


class MnnRuntime:
    """MNN (CPU) through MNN.llm."""

    name = "mnn"

    def __init__(self, n_threads: int = 1) -> None:
        _import_mnn()
        self.n_threads = n_threads
        self._model: MnnModel | None = None
        self._grammar_tokenizer: Any = None

    def load(self, artifact: str) -> None:
        folder = Path(artifact)
        folder = folder.parent if folder.is_file() else folder
        start = time.perf_counter()
        self._model = MnnModel(folder, self.n_threads)
        self._load_ms = (time.perf_counter() - start) * 1000.0
        self._folder = folder
        self._grammar_tokenizer = None
        llm_config = json.loads((folder / "llm_config.json").read_text()) if (folder / "llm_config.json").is_file() else {}
        self._jinja = llm_config.get("jinja", {})
        eos_text = self._jinja.get("eos")
        self._eos = set(self._model.tokenize(eos_text)[-1:]) if eos_text else set()

    def _engine(self) -> Engine:
        model = self._model
        # MNN's encode puts the tokenizer's prefix ids (BOS) before every text; Engine.encode has none.
        prefix = len(model.tokenize(""))
        return Engine(prefill=model.prefill, step=model.step,
                      encode=lambda text: model.tokenize(text)[prefix:], decode=model.decode, eos=self._eos,
                      grammar_tokenizer=self._grammar)

    def _grammar(self, width: int) -> Any:
        """llguidance's tokenizer for JSON-schema masks, from MNN's own tokenizer (built once per model)."""
        if self._grammar_tokenizer is None:
            model = self._model
            config = json.loads((self._folder / "config.json").read_text())
            special, stop = tokenizer_header(self._folder / config.get("tokenizer_file", "tokenizer.mtok"))
            prefix = len(model.tokenize(""))
            self._grammar_tokenizer = grammar_tokenizer_from_pieces(
                model.pieces(width), special | stop, self._eos or stop, lambda text: model.tokenize(text)[prefix:],
                INSTALL_HINT)
        return self._grammar_tokenizer

    def generate(self, requests: list[Request]) -> list[Completion]:
        out = []
        for request in requests:
            check_request("mnn", self._model is not None, request)
            if request.prompt is not None:
                text = request.prompt
            else:
                from .onnxruntime import render_chat

                text = render_chat(self._folder, request.messages) if (self._folder / "tokenizer_config.json").is_file() \
                    else self._render(request.messages)
            ids = self._model.tokenize(text)
            out.append(generate(self._engine(), ids, request.settings, request.choices, self._load_ms,
                                request.json_schema))
        return out

    def _render(self, messages: tuple[dict[str, str], ...]) -> str:
        return render_llm_config_chat(self._folder, messages)

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenize(text))

    def info(self) -> RuntimeInfo:
        from importlib.metadata import version

        return RuntimeInfo(self.name, version("MNN"), {"threads": self.n_threads})

    def close(self) -> None:
        self._model = None
