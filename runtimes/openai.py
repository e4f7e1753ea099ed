"""Any OpenAI-compatible HTTP endpoint (OpenAI, llama-cpp-python's server, llama.cpp's
llama-server, vLLM, ...), with the standard library only.

Every request is streamed (server-sent events), so the time to the first token and the
decode rate come from the stream itself.  Token counts come from the usage block of the
final chunk when the server sends one (`stream_options.include_usage`); otherwise each
chunk that carries text counts as one token, which is what llama-cpp-python's server
sends.  Prefill figures include the network round trip, and the process that ran the
model is not this one, so `peak_rss_mb`, `sampling_ms` and `load_ms` stay None.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eval.errors import HarnessError, unknown_name

from .base import Completion, Request, RuntimeInfo, Timings

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 120.0  # a server asking for a longer pause gets an error instead of a hang


class SchemaMode(StrEnum):
    """How a request's JSON schema is sent."""

    # {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}: OpenAI, vLLM, llama-server.
    JSON_SCHEMA = "json_schema"
    # {"type": "json_object", "schema": S}: llama-cpp-python's server.
    JSON_OBJECT = "json_object"
    # json_schema first; json_object from then on if the server rejects response_format.
    AUTO = "auto"


@dataclass
class _Stream:
    text: str
    finish_reason: str | None
    ttft_s: float | None
    first_s: float | None
    last_s: float | None
    chunks: int  # chunks that carried text
    usage: dict[str, Any] | None


class _Retryable(Exception):
    """A failure worth another attempt: `delay_s` is the server's Retry-After, if it sent one."""

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class _RejectedResponseFormat(Exception):
    pass


class OpenAIRuntime:
    """An OpenAI-compatible chat/completions endpoint.

    Options: `base_url` (up to and including /v1; default $OPENAI_BASE_URL, else OpenAI's),
    `api_key_env` (the environment variable holding the key; unset or empty sends no key,
    fine for local servers), `model` (also set by load()), `timeout` (seconds per HTTP
    attempt), `max_retries` (extra attempts after 429/5xx/connection errors, with
    exponential backoff and jitter, honouring Retry-After), `schema_mode` (see SchemaMode),
    `include_usage`, `backoff_base`/`backoff_max` (seconds), `extra_body` (merged into
    every request body, for server-specific settings such as llama.cpp's "repeat_penalty").
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        model: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 4,
        schema_mode: str | SchemaMode = SchemaMode.JSON_SCHEMA,
        *,
        include_usage: bool = True,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HarnessError(
                f"base_url={url!r} is not an http(s) URL. Pass one like http://127.0.0.1:8000/v1 "
                "(or set OPENAI_BASE_URL)."
            )
        try:
            self.schema_mode = SchemaMode(schema_mode)
        except ValueError:
            raise unknown_name("schema_mode", str(schema_mode), [m.value for m in SchemaMode]) from None
        if max_retries < 0:
            raise HarnessError(f"max_retries={max_retries} must be 0 or more.")
        if timeout <= 0:
            raise HarnessError(f"timeout={timeout} must be positive (seconds).")
        self.base_url = url
        self.api_key_env = api_key_env
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.include_usage = include_usage
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.extra_body = dict(extra_body or {})
        self._effective_mode = (
            SchemaMode.JSON_SCHEMA if self.schema_mode is SchemaMode.AUTO else self.schema_mode
        )
        # Loopback servers are reached directly, whatever the proxy settings say.
        handlers: list[urllib.request.BaseHandler] = []
        if _is_loopback(parsed.hostname or ""):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self.attempts: list[int] = []  # HTTP attempts each finished request took, in order
        self.last_attempts = 0  # HTTP attempts of the last call, finished or given up
        self._server: str | None = None  # the Server header, e.g. "uvicorn"
        self.served_models: list[str] | None = None

    # -- Runtime protocol --

    def load(self, artifact: str) -> None:
        """Use the model `artifact` (a model id as the server names it).

        Also asks the server for its model list (GET /models), so that an unreachable
        server or a bad key fails here, before any request is sent.
        """
        self.model = artifact
        body, _ = self._call("GET", "/models", None, stream=False)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):
            self.served_models = [str(item.get("id")) for item in data if isinstance(item, dict)]

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run the requests in order, one streamed HTTP request each."""
        if not self.model:
            raise HarnessError("No model is chosen. Call load(model_id) or pass model= to the runtime.")
        return [self._generate_one(request) for request in requests]

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            name=self.name,
            # The engine behind the endpoint is not known from here; the Server header is.
            version=self._server or "unknown",
            details={
                "base_url": self.base_url,
                "model": self.model,
                "schema_mode": self.schema_mode.value,
                "schema_mode_in_use": self._effective_mode.value,
                "served_models": self.served_models,
                "timeout_s": self.timeout,
                "max_retries": self.max_retries,
                "retries": sum(n - 1 for n in self.attempts),
            },
        )

    def close(self) -> None:
        """Nothing to free: every request opens and closes its own connection."""

    # -- requests --

    def _generate_one(self, request: Request) -> Completion:
        if request.choices is not None:
            # The OpenAI API has no portable way to hold the output to a list of strings on
            # /completions; answering free text would break the Request contract silently.
            raise HarnessError(
                "The openai runtime cannot hold the output to Request.choices (the incremental strategy's "
                "questions): OpenAI-compatible APIs offer no portable constraint for it. Run the single-pass "
                "strategy with this runtime, or incremental with --runtime llamacpp|onnxruntime|executorch|mnn."
            )
        settings = request.settings
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "stream": True,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if request.prompt is not None:
            if request.json_schema is not None:
                raise HarnessError(
                    "OpenAI-compatible /completions endpoints take no JSON schema; send chat "
                    "messages (Request(messages=...)) for constrained output, or use the llamacpp runtime."
                )
            path = "/completions"
            body["prompt"] = request.prompt
        else:
            path = "/chat/completions"
            body["messages"] = [dict(message) for message in request.messages]
        body.update(self.extra_body)

        start = time.perf_counter()
        while True:
            if request.json_schema is not None:
                body["response_format"] = self._response_format(request.json_schema)
            try:
                stream, attempts = self._call("POST", path, body, stream=True)
            except _RejectedResponseFormat:
                self._effective_mode = SchemaMode.JSON_OBJECT
                continue
            break
        end = time.perf_counter()
        self.last_attempts = attempts
        self.attempts.append(attempts)
        return Completion(text=stream.text, timings=_timings(stream, start, end), finish_reason=stream.finish_reason)

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._effective_mode is SchemaMode.JSON_OBJECT:
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "routines", "schema": schema, "strict": True}}

    # -- HTTP --

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, stream: bool) -> tuple[Any, int]:
        """One API call with retries: (the parsed JSON body, or a _Stream when streaming; attempts made)."""
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8") if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            attempt_start = time.perf_counter()
            try:
                http_request = urllib.request.Request(url, data=data, method=method, headers=self._headers(stream))
                with self._opener.open(http_request, timeout=self.timeout) as response:
                    self._server = response.headers.get("Server") or self._server
                    if stream:
                        return self._read_stream(response, attempt_start), attempt
                    raw = response.read().decode("utf-8", "replace")
                try:
                    return json.loads(raw or "null"), attempt
                except ValueError:
                    raise HarnessError(
                        f"{url} answered with something other than JSON ({raw[:100]!r}). Check base_url "
                        "(an OpenAI-compatible API, usually ending in /v1)."
                    ) from None
            except urllib.error.HTTPError as exc:
                failure = self._http_failure(exc, url, body)
            except _Retryable as exc:
                failure = exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
                    http.client.HTTPException, OSError) as exc:
                failure = _Retryable(_connection_sentence(exc, self.base_url))
            if attempt > self.max_retries:
                self.last_attempts = attempt
                raise HarnessError(f"{failure} Gave up after {attempt} attempts.")
            time.sleep(self._delay(attempt, failure.delay_s))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), MAX_RETRY_AFTER_S)
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter"

    def _http_failure(self, exc: urllib.error.HTTPError, url: str, body: dict[str, Any] | None) -> _Retryable:
        """A retryable failure for 429/5xx; raises the HarnessError (or the format switch) otherwise."""
        try:
            detail = exc.read().decode("utf-8", "replace")
        except Exception:
            detail = ""
        message = _error_message(detail)
        status = exc.code
        if (
            self.schema_mode is SchemaMode.AUTO
            and self._effective_mode is SchemaMode.JSON_SCHEMA
            and body is not None
            and "response_format" in body
            and status in (400, 422, 500)
            and "response_format" in detail
        ):
            # e.g. llama-cpp-python's server: HTTP 500, "('body', 'response_format', 'type') ...
            # Input should be 'text' or 'json_object'".
            raise _RejectedResponseFormat()
        if status in (400, 422, 500) and body is not None and "response_format" in body and "response_format" in detail:
            raise HarnessError(
                f"The server at {url} rejected the response_format (HTTP {status}: {message}). If it is "
                "llama-cpp-python's server, pass schema_mode='json_object' (or 'auto')."
            )
        if status in RETRY_STATUSES or status >= 500:
            return _Retryable(
                f"The server at {url} answered HTTP {status}{': ' + message if message else ''}.",
                _retry_after(exc.headers.get("Retry-After") if exc.headers else None),
            )
        if status in (401, 403):
            variable = self.api_key_env or "OPENAI_API_KEY"
            raise HarnessError(
                f"The server at {self.base_url} refused the request (HTTP {status}"
                f"{': ' + message if message else ''}). Set {variable} to a valid API key."
            )
        if status == 404:
            raise HarnessError(
                f"The server has no {url} (HTTP 404{': ' + message if message else ''}). Check base_url "
                f"(it should end in /v1) and the model name {self.model!r}."
            )
        hint = ""
        if body is not None and "response_format" in body and status in (400, 422):
            hint = " If the server is llama-cpp-python's, pass schema_mode='json_object' (or 'auto')."
        raise HarnessError(f"The server at {url} rejected the request (HTTP {status}: {message or 'no detail'}).{hint}")

    def _read_stream(self, response: Any, start: float) -> _Stream:
        """Read server-sent events; `start` is when this attempt began (the TTFT origin)."""
        parts: list[str] = []
        finish_reason = None
        usage = None
        first = last = None
        chunks = 0
        data_lines: list[str] = []
        for raw in response:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data:"):
                data_lines.append(line[5:].lstrip(" "))
                continue
            if line or not data_lines:
                continue  # event:/id:/comment lines, or blank lines between events
            payload = "\n".join(data_lines)
            data_lines = []
            if payload.strip() == "[DONE]":
                break
            event = _parse_event(payload)
            now = time.perf_counter()
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                text = _choice_text(choice)
                if text:
                    parts.append(text)
                    chunks += 1
                    first = now if first is None else first
                    last = now
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        else:
            if data_lines:  # a last event without its blank line
                event = _parse_event("\n".join(data_lines))
                usage = event.get("usage") or usage
        return _Stream(
            text="".join(parts), finish_reason=finish_reason,
            ttft_s=(first - start) if first is not None else None,
            first_s=first, last_s=last, chunks=chunks, usage=usage,
        )


# --- helpers -------------------------------------------------------------------------------


def _timings(stream: _Stream, start: float, end: float) -> Timings:
    usage = stream.usage or {}
    generated = usage.get("completion_tokens")
    if not isinstance(generated, int):
        generated = stream.chunks
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    evaluated = None
    if prompt_tokens is not None:
        evaluated = prompt_tokens - cached if isinstance(cached, int) else prompt_tokens
    decode_s = (stream.last_s - stream.first_s) if stream.first_s is not None and stream.last_s is not None else 0.0
    return Timings(
        ttft_ms=stream.ttft_s * 1000.0 if stream.ttft_s is not None else None,
        # Network and queueing included: a lower bound on the server's own prefill rate.
        prefill_tps=evaluated / stream.ttft_s if evaluated and stream.ttft_s else None,
        decode_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else None,
        prompt_tokens=prompt_tokens,
        prompt_tokens_evaluated=evaluated,
        generated_tokens=generated,
        total_ms=(end - start) * 1000.0,
    )


def _parse_event(payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _Retryable(f"The server sent a malformed event ({exc}): {payload[:200]!r}.") from exc
    if not isinstance(event, dict):
        raise _Retryable(f"The server sent an unexpected event: {payload[:200]!r}.")
    if event.get("error"):
        raise HarnessError(f"The server reported an error mid-stream: {_error_message(json.dumps(event))}.")
    return event


def _choice_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or ""
    return choice.get("text") or ""


def _error_message(detail: str) -> str:
    """The server's own words from an error body (OpenAI's {"error": {"message"}} or FastAPI's {"detail"})."""
    try:
        parsed = json.loads(detail)
    except (json.JSONDecodeError, ValueError):
        parsed = detail
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail", parsed))
        parsed = error.get("message") or error if isinstance(error, dict) else error
    return " ".join(str(parsed).split())[:300]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _connection_sentence(exc: BaseException, base_url: str) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return f"Could not connect to {base_url} (connection refused). Is the server at {base_url} running?"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"The server at {base_url} did not answer in time ({reason}). Is it overloaded, or is timeout= too short?"
    if isinstance(reason, socket.gaierror):
        return f"Could not resolve the host of {base_url} ({reason}). Check base_url."
    return f"The connection to {base_url} failed ({reason}). Is the server at {base_url} running?"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
