"""ONNX Runtime GenAI on the host (`make install-onnxruntime`): runs the artifacts of `make export FORMAT=onnx`.

The adapter drives onnxruntime-genai's Generator token by token (append_tokens / get_logits)
and chooses tokens itself (runtimes/_decode.py), so `Request.choices` and `Request.json_schema`
work the same as on the other engines.  The schema's token masks come from llguidance, whose
tokenizer is built from the artifact's tokenizer.json (the file onnxruntime-genai tokenizes
with) in Rust: the core venv needs neither transformers nor torch for it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, missing_dependency

from ._decode import Engine, check_request, common_prefix, generate, grammar_tokenizer_from_json
from .base import Completion, Request, RuntimeInfo

INSTALL_HINT = "make install-onnxruntime"


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "genai_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def encode_prompt(tokenizer: Any, folder: Path, text: str) -> list[int]:
    """Token ids of a prompt as the model was trained to see them.

    onnxruntime-genai's tokenizer does not add the BOS token that tokenizer_config.json asks
    for (seen with SentencePiece Llama tokenizers), so it is added here when missing.
    """
    ids = [int(t) for t in tokenizer.encode(text)]
    bos = _config(folder).get("model", {}).get("bos_token_id")
    if isinstance(bos, list):
        bos = bos[0] if bos else None
    if bos is not None and _tokenizer_config(folder).get("add_bos_token", False) and (not ids or ids[0] != bos):
        ids.insert(0, int(bos))
    return ids


def render_chat(folder: Path, messages: tuple[dict[str, str], ...]) -> str:
    """The chat template of the artifact (chat_template.jinja or tokenizer_config.json) applied to messages."""
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    config = _tokenizer_config(folder)
    template = template or config.get("chat_template")
    if not template:
        raise HarnessError(f"The model {folder} has no chat template; send a raw prompt (Request(prompt=...)).")
    try:
        import jinja2
    except ModuleNotFoundError as exc:
        raise missing_dependency("Chat templates", "jinja2", INSTALL_HINT) from exc
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise HarnessError(f"The model's chat template refused these messages: {message}")

    env.globals["raise_exception"] = raise_exception

    def token(name: str) -> str:
        value = config.get(name) or ""
        return value.get("content", "") if isinstance(value, dict) else value

    return env.from_string(template).render(messages=list(messages), add_generation_prompt=True,
                                            bos_token=token("bos_token"), eos_token=token("eos_token"))


class OnnxRuntimeGenaiRuntime:
    """onnxruntime-genai on the CPU.  Options: `execution_provider` ("cpu" only on a host)."""

    name = "onnxruntime"

    def __init__(self, execution_provider: str = "cpu", n_threads: int | None = None,
                 cache_tokens: int = 4096) -> None:
        try:
            import numpy as np
            import onnxruntime_genai as og
        except ModuleNotFoundError as exc:
            raise missing_dependency("The 'onnxruntime' runtime", exc.name, INSTALL_HINT) from exc
        self._og = og
        self._np = np
        self.execution_provider = execution_provider
        self.n_threads = n_threads  # ORT's intra-op threads (None: its default)
        # Positions of the KV cache kept across requests (more only when a request needs them).
        self.cache_tokens = int(cache_tokens)
        self._forget()
        self._model = None
        self._folder: Path | None = None
        self._load_ms: float | None = None
        self._grammar_tokenizer: Any = None

    def load(self, artifact: str) -> None:
        folder = Path(artifact)
        if folder.is_file():
            folder = folder.parent
        if not (folder / "genai_config.json").is_file():
            raise HarnessError(f"{folder} is not an onnxruntime-genai model folder (no genai_config.json). "
                               "Run `make export MODEL=... FORMAT=onnx`.")
        start = time.perf_counter()
        config = self._og.Config(str(folder))
        if self.execution_provider != "cpu":
            config.clear_providers()
            config.append_provider(self.execution_provider)
        if self.n_threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": int(self.n_threads)}}}}))
        self._forget()
        self._model = self._og.Model(config)
        self._tokenizer = self._og.Tokenizer(self._model)
        self._folder = folder
        self._grammar_tokenizer = None
        self._load_ms = (time.perf_counter() - start) * 1000.0
        model = _config(folder).get("model", {})
        eos = model.get("eos_token_id", [])
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self._context = int(model.get("context_length") or 4096)

    def _forget(self) -> None:
        """Drop the kept generator (its KV cache) and the tokens it held."""
        self._generator: Any = None
        self._generator_length = 0
        self._sequence: list[int] = []

    def _engine(self, needed: int) -> Engine:
        """One request's view of the kept generator (`needed`: prompt + max_tokens + 1 positions).

        The generator is kept across requests with the tokens in its KV cache: a prompt that starts
        like them continues after the shared part (rewind_to), as llama.cpp's prefix reuse does,
        so the incremental strategy's fixed instructions are evaluated once.  Gemma 3's sliding
        window lives in the ONNX graph over a full-length cache, so rewinding is exact there too
        (tests/test_export_onnx.py compares the logits with a fresh generator's).
        """
        og, np = self._og, self._np
        state = {"reused": 0}

        def prefill(ids: list[int]) -> Any:
            keep = 0
            if self._generator is not None and needed <= self._generator_length:
                # At least one token is evaluated, for its logits.
                keep = min(common_prefix(self._sequence, ids), len(ids) - 1)
            if keep == 0:
                length = min(self._context, max(needed, self.cache_tokens))
                params = og.GeneratorParams(self._model)
                params.set_search_options(max_length=length, do_sample=False)
                self._forget()
                self._generator = og.Generator(self._model, params)
                self._generator_length = length
            elif keep < len(self._sequence):
                self._generator.rewind_to(keep)
                del self._sequence[keep:]
            self._generator.append_tokens(np.asarray(ids[keep:], dtype=np.int32))
            self._sequence.extend(ids[keep:])
            state["reused"] = keep
            return self._generator.get_logits()[0, -1]

        def step(token: int) -> Any:
            self._generator.append_tokens(np.asarray([token], dtype=np.int32))
            self._sequence.append(int(token))
            return self._generator.get_logits()[0, -1]

        return Engine(prefill=prefill, step=step,
                      encode=lambda text: [int(t) for t in self._tokenizer.encode(text)],
                      decode=lambda ids: self._tokenizer.decode(np.asarray(list(ids), dtype=np.int32)),
                      eos=self._eos, grammar_tokenizer=self._grammar, reused=lambda: state["reused"])

    def _grammar(self, width: int) -> Any:
        """llguidance's tokenizer for JSON-schema masks, from the artifact's tokenizer.json (built once)."""
        if self._grammar_tokenizer is None:
            path = self._folder / "tokenizer.json"
            if not path.is_file():
                raise HarnessError(f"JSON-schema decoding needs the model's tokenizer.json, which {self._folder} lacks; "
                                   "re-export with `make export MODEL=... FORMAT=onnx` or use Request.choices.")
            self._grammar_tokenizer = grammar_tokenizer_from_json(path.read_text(encoding="utf-8"), self._eos,
                                                                  INSTALL_HINT + " installs it")
        return self._grammar_tokenizer

    def generate(self, requests: list[Request]) -> list[Completion]:
        out = []
        for request in requests:
            check_request("onnxruntime", self._model is not None, request)
            text = request.prompt if request.prompt is not None else render_chat(self._folder, request.messages)
            ids = encode_prompt(self._tokenizer, self._folder, text)
            settings = request.settings
            if len(ids) + 1 >= self._context:
                raise HarnessError(f"The prompt has {len(ids)} tokens but the model's context holds {self._context}; "
                                   "shorten the prompt.")
            needed = min(self._context, len(ids) + settings.max_tokens + 1)
            out.append(generate(self._engine(needed), ids, settings, request.choices, self._load_ms,
                                request.json_schema))
        return out

    @property
    def max_context(self) -> int | None:
        """The model's context_length from genai_config.json: prompt plus output."""
        return self._context if self._model is not None else None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text))

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(self.name, getattr(self._og, "__version__", "unknown"),
                           {"execution_provider": self.execution_provider, "threads": self.n_threads})

    def close(self) -> None:
        self._forget()
        self._model = None
        self._tokenizer = None
