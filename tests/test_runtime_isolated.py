"""runtimes/isolated.py: a runtime in a child process, behind the same protocol.

The child here is the core venv's own python running the `openai` runtime against the
session's llama.cpp server, so every call crosses a real process boundary; the ExecuTorch
runtime in its toolchain env goes the same way in tests/test_export_executorch.py.
"""

from __future__ import annotations

import sys

import pytest

from eval.errors import HarnessError
from runtimes import GenerationSettings, Request, get_runtime
from runtimes.isolated import IsolatedRuntime, request_from_json, request_to_json


def test_requests_survive_the_trip():
    requests = [
        Request(prompt="ab", cache_prefix="a", choices=(" 1", " none"),
                settings=GenerationSettings(max_tokens=3, temperature=0.5, seed=7, stop=("\n", "."))),
        Request(messages=({"role": "user", "content": "hi"},), json_schema={"type": "object", "required": ["x"]}),
    ]
    for request in requests:
        # Frozen dataclasses compare tuples with tuples: a list coming back would not be equal.
        assert request_from_json(request_to_json(request)) == request


def test_a_runtime_in_a_child_process(llama_server):
    runtime = IsolatedRuntime("openai", sys.executable, "core venv (test)", base_url=llama_server, api_key_env=None)
    try:
        runtime.load("gemma-3-270m")
        assert runtime.max_context is None  # the openai runtime has no such limit to report
        # A HarnessError raised in the child arrives as one here, with the child's sentence ...
        with pytest.raises(HarnessError, match="cannot hold the output to Request.choices"):
            runtime.generate([Request(prompt="Two plus two is", choices=(" four", " five"))])
        # ... and the child goes on serving.
        free, = runtime.generate([Request(prompt="The capital of France is", settings=GenerationSettings(
            max_tokens=4, stop=("\n",)))])
        assert free.text and free.timings.generated_tokens and free.timings.total_ms > 0
        info = runtime.info()
        assert info.name == "openai" and info.details["process"] == "isolated: core venv (test)"
    finally:
        runtime.close()
    assert runtime._proc.returncode == 0


def test_errors_come_back_as_sentences():
    runtime = IsolatedRuntime("openai", sys.executable, "core venv (test)", base_url="http://127.0.0.1:1/v1",
                              api_key_env=None, timeout=2)
    try:
        with pytest.raises(HarnessError, match="127.0.0.1:1"):
            runtime.load("")
        # The child keeps serving after an error, then dies: the next call says so.
        runtime._proc.kill()
        runtime._proc.wait()
        with pytest.raises(HarnessError, match="has exited"):
            runtime.generate([Request(prompt="x")])
    finally:
        runtime.close()


def test_a_missing_engine_in_the_child_is_reported_at_start():
    # The core venv has no MNN: the child cannot make the runtime and says what to install.
    with pytest.raises(HarnessError, match="'mnn' runtime needs the Python package 'MNN'"):
        IsolatedRuntime("mnn", sys.executable, "core venv (test)")


def test_open_runtime_isolates_only_toolchain_runtimes(monkeypatch):
    from device_runner.run import open_runtime

    # The registry's columns decide: llamacpp has no toolchain env, so it is made here (and an
    # unknown option is the runtime's own error, raised in this process).
    with pytest.raises(TypeError):
        open_runtime("llamacpp", no_such_option=1)
    # executorch is not importable in the core venv, so it would start in its toolchain env;
    # with no env and no way to make it, that is a sentence, not a traceback.
    import export.env as env

    def refuse(fmt, **_):
        raise HarnessError(f"no {fmt} env here")

    monkeypatch.setattr(env, "ensure_env", refuse)
    with pytest.raises(HarnessError, match="no executorch env here"):
        open_runtime("executorch")
    # Without a python= interpreter, get_runtime makes the runtime in this process, where the
    # engine is missing: the install sentence.
    with pytest.raises(HarnessError, match="'executorch' runtime needs the Python package '(torch|executorch)'.*"
                                           "make export FORMAT=executorch"):
        get_runtime("executorch")
