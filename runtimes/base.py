"""The contract between the benchmark and every inference engine (DESIGN.md, "Contracts").

A runtime turns `Request`s into `Completion`s.  It knows nothing of routines or scores:
the benchmark hands it chat messages (or a raw prompt), an optional JSON schema for
constrained decoding and generation settings; it hands back text and `Timings`.
`device_runner` returns the very same two types from a phone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy, the paper's setting
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One generation.  Exactly one of `messages` (chat) or `prompt` (raw completion) is set."""

    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    # JSON schema the output must follow (constrained decoding); None = free text.
    json_schema: dict[str, Any] | None = None
    # The output must be exactly one of these strings (multiple choice, e.g. " 47" or " none";
    # a leading space is part of the choice).  Exclusive with json_schema.
    choices: tuple[str, ...] | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    # A prefix of `prompt` that many requests share (fixed instructions and examples); an
    # engine that can keep a KV cache reuses it across requests.  Purely an optimisation.  With
    # `messages`, a prefix of the last message's content (device_runner.run.as_chat): the engine
    # finds where it ends in the rendered chat text.
    cache_prefix: str | None = None

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("A Request needs exactly one of messages= or prompt=, not both or neither.")
        if self.choices is not None and (self.json_schema is not None or not self.choices):
            raise ValueError("Request.choices must be non-empty and cannot be combined with json_schema.")
        text = self.prompt if self.prompt is not None else (self.messages[-1].get("content") or "")
        if self.cache_prefix is not None and not text.startswith(self.cache_prefix):
            raise ValueError("Request.cache_prefix must be a prefix of Request.prompt (or of the last message's "
                             "content).")


@dataclass(frozen=True)
class Timings:
    load_ms: float | None = None  # model load, once per runtime (repeated on every completion)
    ttft_ms: float | None = None  # request start -> first generated token
    prefill_tps: float | None = None  # prompt tokens evaluated / prefill seconds
    decode_tps: float | None = None  # (generated - 1) / seconds after the first token
    prompt_tokens: int | None = None  # tokens in the prompt (including any cached prefix)
    prompt_tokens_evaluated: int | None = None  # tokens actually run through the model (cache misses)
    generated_tokens: int | None = None
    peak_rss_mb: float | None = None  # peak resident memory of the process that ran the model
    sampling_ms: float | None = None  # time spent in sampling (grammar included), when known
    total_ms: float | None = None  # wall time of the whole request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    timings: Timings
    # Why generation stopped: "stop" (end of text / stop string), "length" (max_tokens), ...
    finish_reason: str | None = None


@dataclass(frozen=True)
class RuntimeInfo:
    name: str  # registry name, e.g. "llamacpp"
    version: str  # version of the engine library
    # Anything that changes the numbers: threads, build flags, backend, device.
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Runtime(Protocol):
    """One inference engine on the host."""

    def load(self, artifact: str) -> None:
        """Load a model artifact (a file or folder path)."""

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run the requests in order and return one Completion each."""

    def info(self) -> RuntimeInfo:
        """Engine name, version and the settings that affect its numbers."""

    def close(self) -> None:
        """Free the model."""


# --- optional capabilities: a runtime has them or not; callers check with isinstance ---------


@runtime_checkable
class CountsTokens(Protocol):
    """Counts prompt tokens with the model's own tokenizer (for context budgets)."""

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class LimitsContext(Protocol):
    """Holds fewer positions than the recipe's context (e.g. an ExecuTorch .pte's max_seq_len)."""

    @property
    def max_context(self) -> int | None: ...


@runtime_checkable
class RunsBatches(Protocol):
    """Runs one user's requests in one call (a phone: one on-device invocation per user)."""

    def generate_batch(self, requests: list[Request]) -> list[Completion]: ...


@runtime_checkable
class AddsRowFields(Protocol):
    """Adds fields to the result row of the batch it just ran (a phone: its facts and thermal state)."""

    def row_extra(self) -> dict[str, Any]: ...
