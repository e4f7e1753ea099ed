"""llama.cpp on the host, through llama-cpp-python (`make install-llamacpp`): the adapter.

The adapter runs its own prefill/sample/decode loop on top of `llama_cpp.Llama` (model
loading, tokenizer, batched `eval`) instead of `Llama.create_completion`, because the
benchmark needs what the high-level call hides: prefill and decode time apart, the time
spent in sampling (grammar included), and how many prompt tokens the KV cache spared.

Sampling and grammars live in runtimes/llamacpp_sampler.py, the KV cache across requests
(prefix reuse and snapshots) in runtimes/llamacpp_kv.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, missing_dependency

from ._decode import common_prefix
from .llamacpp_kv import PrefixCache
from .llamacpp_sampler import Sampler, choices_grammar, schema_grammar
from ._proc import peak_rss_mb, physical_cores
from .base import Completion, Request, RuntimeInfo, Timings

INSTALL_HINT = "make install-llamacpp"
DEFAULT_N_CTX = 8192
# Default threads: physical cores less one (at most 8), so 1 on a 2-core machine.  Measured
# there with Gemma 3 270M Q4_K_M: 2 threads beat 1 only while nothing else runs (prefill
# ~425 vs ~233 tok/s, decode ~39 vs ~24 tok/s); with one other busy process, ggml's
# spinning barriers made 2 threads 3-5x slower at decoding than 1 (~4-8 vs ~14-23 tok/s).
# Pass n_threads= to override.
MAX_DEFAULT_THREADS = 8
# How many cache_prefix KV snapshots to keep (each holds n_prefix_tokens of KV cache).
PREFIX_SNAPSHOTS = 2
# Sampler chains kept (one per schema/temperature/seed; a grammar one holds ~3 MB of buffers).
SAMPLER_CACHE = 8
GGUF_TEMPLATE = "gguf"  # `chat_format` value reported when the GGUF's own template is used


def default_threads() -> int:
    """Physical cores less one, at least 1 and at most MAX_DEFAULT_THREADS."""
    return max(1, min(physical_cores() - 1, MAX_DEFAULT_THREADS))


# --- importing llama_cpp -------------------------------------------------------------------


def _links_openmp() -> bool:
    """Whether the installed llama.cpp libraries link an OpenMP runtime (checked without loading them)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for lib in Path(location, "lib").glob("lib*.so*"):
            try:
                data = lib.read_bytes()
            except OSError:
                continue
            if b"libgomp.so" in data or b"libomp.so" in data or b"libiomp5.so" in data:
                return True
    return False


_LLAMA_CPP: Any = None
_OPENMP = False


def _import_llama_cpp() -> Any:
    global _LLAMA_CPP, _OPENMP
    if _LLAMA_CPP is not None:
        return _LLAMA_CPP
    if "llama_cpp" not in sys.modules:
        try:
            _OPENMP = _links_openmp()
        except Exception:  # a check that fails must not stop the import
            _OPENMP = False
        if _OPENMP:
            # OpenMP workers spin-wait between parallel regions by default; on a small
            # machine that runs anything else too, that made decoding ~10x slower.  The
            # runtime reads the variable once, when the library loads, hence before import.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
        import llama_cpp.llama_chat_format  # noqa: F401  (used for chat formats)
        import llama_cpp.llama_grammar  # noqa: F401
    except ModuleNotFoundError as exc:
        raise missing_dependency("The 'llamacpp' runtime", exc.name, INSTALL_HINT) from exc
    _LLAMA_CPP = llama_cpp
    return llama_cpp


# --- the runtime ---------------------------------------------------------------------------


class LlamaCppRuntime:
    """llama.cpp through llama-cpp-python, on the CPU.

    Options: `n_threads` (decode threads; default: default_threads()), `n_threads_batch`
    (prefill threads; default: n_threads), `n_ctx` (default 8192, or the model's training
    context if smaller), `chat_format` (None: the GGUF's own chat template; or a
    llama-cpp-python family name such as "gemma"), `grammar_fast_path` (check the
    unconstrained choice against the grammar first, see runtimes/llamacpp_sampler.py), `swa_full` (keep the
    whole sliding-window cache, which prefix reuse needs on Gemma 3), `prefix_snapshots`
    (how many cache_prefix KV states to keep; 0 = none),
    `flash_attn` (on, as llama.cpp's own default on the CPU), `n_batch`, `verbose`.
    """

    name = "llamacpp"

    def __init__(
        self,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        chat_format: str | None = None,
        verbose: bool = False,
        *,
        n_threads_batch: int | None = None,
        n_batch: int = 512,
        grammar_fast_path: bool = True,
        swa_full: bool = True,
        prefix_snapshots: int = PREFIX_SNAPSHOTS,
        flash_attn: bool = True,
    ) -> None:
        if n_threads is not None and n_threads < 1:
            raise HarnessError(f"n_threads={n_threads} must be at least 1.")
        if n_ctx is not None and n_ctx < 16:
            raise HarnessError(f"n_ctx={n_ctx} is too small; use at least 16 (default {DEFAULT_N_CTX}).")
        self._lib = _import_llama_cpp()
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.requested_n_ctx = n_ctx
        self.chat_format = chat_format
        self.verbose = verbose
        self.n_batch = n_batch
        self.grammar_fast_path = grammar_fast_path
        self.swa_full = swa_full
        self.prefix_snapshots = prefix_snapshots
        # llama-cpp-python's Llama() turns flash attention OFF unless asked, while llama.cpp's
        # own default (auto) turns it on for the CPU: measured here, off cost ~15% of prefill
        # against llama.cpp itself (device_runner/bench.py overhead).
        self.flash_attn = flash_attn
        if chat_format is not None:
            self._family_formatter(chat_format)  # an unknown name fails here, not mid-run
        self._llm: Any = None
        self._artifact: str | None = None
        self._load_ms: float | None = None
        self._template: str | None = None
        self._grammars: dict[str, str] = {}
        self._samplers: dict[tuple[str | None, float, int], Sampler] = {}
        self._kv: PrefixCache | None = None

    # -- Runtime protocol --

    def load(self, artifact: str) -> None:
        """Load a GGUF file."""
        path = Path(artifact)
        if not path.is_file():
            raise HarnessError(
                f"No GGUF model at {artifact}. Pass the path of a .gguf file "
                "(export.catalogue.default_model_path() gives the default model's)."
            )
        self.close()
        start = time.perf_counter()
        n_ctx = self.requested_n_ctx or DEFAULT_N_CTX
        llm = self._new_llama(path, n_ctx)
        n_ctx_train = llm._model.n_ctx_train()
        if self.requested_n_ctx is None and 0 < n_ctx_train < n_ctx:
            llm.close()
            llm = self._new_llama(path, n_ctx_train)
        self._load_ms = (time.perf_counter() - start) * 1000.0
        self._llm = llm
        self._kv = PrefixCache(self._lib, llm, self.prefix_snapshots)
        self._artifact = str(path)
        self._template = llm.metadata.get("tokenizer.chat_template") or None

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run the requests in order; see the module docstring for what is timed."""
        if self._llm is None:
            raise HarnessError("No model is loaded. Call load(path_to_gguf) before generate().")
        return [self._generate_one(request) for request in requests]

    def info(self) -> RuntimeInfo:
        lib = self._lib
        details: dict[str, Any] = {
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch,
            "n_ctx": self._llm.n_ctx() if self._llm is not None else self.requested_n_ctx or DEFAULT_N_CTX,
            "n_batch": self.n_batch,
            "swa_full": self.swa_full,
            "flash_attn": self.flash_attn,
            "grammar_fast_path": self.grammar_fast_path,
            "chat_format": self._resolved_chat_format(),
            "system_info": lib.llama_print_system_info().decode("utf-8", "replace").strip(),
            "openmp": _OPENMP,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "supports_mmap": bool(lib.llama_supports_mmap()),
            "supports_gpu_offload": bool(lib.llama_supports_gpu_offload()),
            "library": str(Path(lib.__file__).parent / "lib"),
        }
        if self._llm is not None:
            model = self._llm._model
            details.update(
                model_path=self._artifact,
                model_desc=model.desc(),
                model_size_bytes=model.size(),
                model_n_params=model.n_params(),
                n_ctx_train=model.n_ctx_train(),
                n_vocab=model.n_vocab(),
                load_ms=self._load_ms,
            )
        return RuntimeInfo(name=self.name, version=lib.__version__, details=details)

    def close(self) -> None:
        """Free the samplers, the KV snapshots and the model (samplers first: they use its vocabulary)."""
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
        self._kv = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def __enter__(self) -> LlamaCppRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading --

    def _new_llama(self, path: Path, n_ctx: int) -> Any:
        from llama_cpp._utils import suppress_stdout_stderr

        try:
            # verbose=False still lets llama.cpp print a few lines (e.g. about the SWA cache).
            with suppress_stdout_stderr(disable=self.verbose):
                return self._lib.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_batch=min(self.n_batch, n_ctx),
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads_batch,
                    swa_full=self.swa_full,
                    flash_attn=self.flash_attn,
                    verbose=self.verbose,
                )
        except (ValueError, RuntimeError) as exc:
            raise HarnessError(
                f"llama.cpp could not load {path} ({exc}). Check that it is a GGUF file this "
                f"llama-cpp-python ({self._lib.__version__}) supports; rerun with verbose=True for details."
            ) from exc

    # -- prompts --

    def _resolved_chat_format(self) -> str | None:
        if self._template is not None and self.chat_format is None:
            return GGUF_TEMPLATE
        return self.chat_format

    def _family_formatter(self, name: str) -> Any:
        """The formatter function llama-cpp-python registered under `name` (e.g. "gemma")."""
        registry = self._lib.llama_chat_format.LlamaChatCompletionHandlerRegistry()._chat_handlers
        formatter = _formatter_of(registry.get(name))
        if formatter is None:
            from eval.errors import unknown_name

            formats = [key for key, handler in registry.items() if _formatter_of(handler) is not None]
            raise unknown_name("chat format", name, formats)
        return formatter

    def _render_chat(self, messages: tuple[dict[str, str], ...]) -> tuple[str, bool, list[str]]:
        """Chat messages -> (prompt text, whether it already holds BOS, stop strings)."""
        msgs = [dict(message) for message in messages]
        fmt = self._lib.llama_chat_format
        if self.chat_format is None and self._template is not None:
            llm = self._llm
            model = llm._model
            bos = model.token_get_text(model.token_bos()) if model.token_bos() != -1 else ""
            eos = model.token_get_text(model.token_eos()) if model.token_eos() != -1 else ""
            try:
                response = fmt.Jinja2ChatFormatter(template=self._template, eos_token=eos, bos_token=bos)(
                    messages=msgs
                )
            except Exception as exc:  # jinja2 errors, raise_exception() in templates
                raise HarnessError(f"The model's chat template failed on these messages: {exc}") from exc
            # Templates usually write BOS themselves; _tokenize adds one when they do not.
            return response.prompt, False, _as_list(response.stop)
        if self.chat_format is None:
            raise HarnessError(
                f"The model {self._artifact} has no chat template, so chat messages cannot be "
                "formatted. Send a raw prompt (Request(prompt=...)) or pass chat_format= "
                "(a family name such as 'gemma') to the runtime."
            )
        formatter = self._family_formatter(self.chat_format)
        if formatter is fmt.format_gemma:
            # llama-cpp-python's "gemma" format drops system messages; Gemma's own template
            # puts the system text at the start of the first user turn instead.
            msgs = _fold_system_into_first_user(msgs)
        response = formatter(messages=msgs)
        return response.prompt, bool(response.added_special), _as_list(response.stop)

    def _tokenize(self, text: str, has_bos: bool) -> list[int]:
        model = self._llm._model
        add_bos = model.add_bos_token() and not has_bos
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        bos = model.token_bos()
        if add_bos and len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]  # the text started with a BOS of its own
        return tokens

    def tokenize(self, text: str) -> list[int]:
        """The tokens the model sees for a raw prompt (with BOS)."""
        if self._llm is None:
            raise HarnessError("tokenize() needs a loaded model; call load() first.")
        return self._tokenize(text, has_bos=False)

    def count_tokens(self, text: str) -> int:
        """Prompt length in tokens, for context budgets."""
        return len(self.tokenize(text))

    def reset_cache(self) -> None:
        """Forget every cached prefix: the next request is evaluated from scratch."""
        if self._kv is not None:
            self._kv.snapshots.clear()
            self._kv.forget()

    def _grammar(self, schema: dict[str, Any]) -> tuple[str, str]:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = schema_grammar(schema)
        return key, self._grammars[key]

    def _sampler(self, request: Request) -> Sampler:
        settings = request.settings
        temperature = max(0.0, float(settings.temperature))
        seed = settings.seed if temperature > 0 else 0
        if request.choices is not None:
            grammar = choices_grammar(request.choices)
            key = "choices:" + grammar
        elif request.json_schema is not None:
            key, grammar = self._grammar(request.json_schema)
        else:
            key, grammar = None, None
        cache_key = (key, temperature, seed)
        sampler = self._samplers.pop(cache_key, None)
        if sampler is None:
            sampler = Sampler(self._lib, self._llm, grammar, temperature, seed, self.grammar_fast_path)
        self._samplers[cache_key] = sampler  # most recently used last
        while len(self._samplers) > SAMPLER_CACHE:
            self._samplers.pop(next(iter(self._samplers))).close()
        sampler.reset()
        return sampler

    # -- one request --

    def _generate_one(self, request: Request) -> Completion:
        lib = self._lib
        llm = self._llm
        settings = request.settings
        start = time.perf_counter()

        stops = list(settings.stop)
        if request.prompt is not None:
            tokens = self._tokenize(request.prompt, has_bos=False)
        else:
            text, has_bos, template_stops = self._render_chat(request.messages)
            tokens = self._tokenize(text, has_bos=has_bos)
            stops += [stop for stop in template_stops if stop and stop not in stops]
        n_ctx = llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise HarnessError(
                f"The prompt has {len(tokens)} tokens but the context holds {n_ctx}. "
                f"Pass a larger n_ctx= (the model was trained with {llm._model.n_ctx_train()}) "
                "or shorten the prompt."
            )
        prefix_len = 0
        if request.cache_prefix and request.prompt is not None:
            prefix_len = common_prefix(self._tokenize(request.cache_prefix, has_bos=False), tokens)
            # The prefix's last token may merge with the text after it; keep what both agree on.
        elif request.cache_prefix:  # chat: the template rendered around the prefix alone, up to where it parts
            cut = request.messages[:-1] + ({**request.messages[-1], "content": request.cache_prefix},)
            prefix_text, prefix_bos, _ = self._render_chat(cut)
            prefix_len = common_prefix(self._tokenize(prefix_text, has_bos=prefix_bos), tokens)
        sampler = self._sampler(request)

        kv = self._kv
        assert kv is not None
        reused = kv.reuse(tokens, prefix_len)
        prefill_start = time.perf_counter()
        saving_s = 0.0  # keeping a prefix snapshot is not prefill
        try:
            if self.prefix_snapshots and reused < prefix_len < len(tokens):
                llm.eval(tokens[reused:prefix_len])
                save_start = time.perf_counter()
                kv.save(tokens[:prefix_len])
                saving_s = time.perf_counter() - save_start
                llm.eval(tokens[prefix_len:])
            else:
                llm.eval(tokens[reused:])
        except RuntimeError as exc:
            kv.forget()
            raise HarnessError(f"llama.cpp failed while evaluating the prompt ({exc}).") from exc
        prefill_s = time.perf_counter() - prefill_start - saving_s

        vocab = llm._model.vocab
        out = bytearray()
        generated = 0
        sampling_s = 0.0
        first_token_at: float | None = None
        last_token_at: float | None = None
        finish_reason = "length"
        text: str | None = None
        budget = min(settings.max_tokens, n_ctx - len(tokens))
        while generated < budget:
            sample_start = time.perf_counter()
            token = sampler.sample(llm.ctx)
            now = time.perf_counter()
            sampling_s += now - sample_start
            if lib.llama_vocab_is_eog(vocab, token):
                finish_reason = "stop"
                break
            generated += 1
            if first_token_at is None:
                first_token_at = now
            last_token_at = now
            out += llm.detokenize([token])
            if stops:
                decoded = out.decode("utf-8", errors="ignore")
                cut = min((i for i in (decoded.find(stop) for stop in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text = decoded[:cut]
                    finish_reason = "stop"
                    break
            if generated >= budget:
                break
            try:
                llm.eval([token])
            except RuntimeError as exc:
                kv.forget()
                raise HarnessError(f"llama.cpp failed while decoding ({exc}).") from exc
        end = time.perf_counter()
        if text is None:
            text = out.decode("utf-8", errors="ignore")

        evaluated = len(tokens) - reused
        decode_s = (last_token_at - first_token_at) if first_token_at is not None else 0.0
        timings = Timings(
            load_ms=self._load_ms,
            ttft_ms=(first_token_at - start) * 1000.0 if first_token_at is not None else None,
            prefill_tps=evaluated / prefill_s if prefill_s > 0 else None,
            decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else None,
            prompt_tokens=len(tokens),
            prompt_tokens_evaluated=evaluated,
            generated_tokens=generated,
            peak_rss_mb=peak_rss_mb(),
            sampling_ms=sampling_s * 1000.0,
            total_ms=(end - start) * 1000.0,
        )
        return Completion(text=text, timings=timings, finish_reason=finish_reason)


def _formatter_of(handler: Any) -> Any:
    """The formatter inside a handler made by llama-cpp-python's register_chat_format.

    The registry keeps only the wrapped handler; the formatter is its closure variable
    `chat_formatter`.  Handlers of other kinds (functionary, llava, ...) have none.
    """
    code = getattr(handler, "__code__", None)
    closure = getattr(handler, "__closure__", None)
    if code is None or not closure or "chat_formatter" not in code.co_freevars:
        return None
    return closure[code.co_freevars.index("chat_formatter")].cell_contents


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _fold_system_into_first_user(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m.get("content", "") for m in messages if m.get("role") == "system")
    rest = [m for m in messages if m.get("role") != "system"]
    if system and rest and rest[0].get("role") == "user":
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0].get('content', '')}"}
    elif system:
        rest.insert(0, {"role": "user", "content": system})
    return rest
