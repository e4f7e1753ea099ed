"""Host inference engines behind one small protocol (see runtimes/base.py).

`REGISTRY` holds one row per engine (a frozen `RuntimeSpec`): where its class is ("module:Class",
imported lazily, so `import runtimes` never imports an engine or torch), what installs it, the
export format it loads, how it constrains output, and the toolchain env it lives in when it is
not in the core venv.  Code reads these columns instead of branching on names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import missing_dependency, unknown_name

from .base import (
    AddsRowFields,
    CountsTokens,
    Completion,
    GenerationSettings,
    LimitsContext,
    Request,
    Runtime,
    RuntimeInfo,
    RunsBatches,
    Timings,
)


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    target: str  # "module:Class", imported on first use
    install: str  # the make target (or env) that provides its dependencies
    artifact_format: str | None  # the `make export FORMAT=` it loads; None: a served model (openai)
    # How Request.choices / json_schema are enforced: "gbnf" (llama.cpp grammars), "llguidance"
    # (token masks, runtimes/_decode.py), "response_format" (the server's; choices refused).
    decoding: str
    engine_module: str  # the engine's top-level module (its importability decides isolation)
    # The export toolchain env (export/env.py) the engine lives in when engine_module is not
    # importable in this interpreter; None: it must be installed here.
    toolchain: str | None = None


REGISTRY: dict[str, RuntimeSpec] = {
    spec.name: spec
    for spec in (
        RuntimeSpec("llamacpp", "runtimes.llamacpp:LlamaCppRuntime", "make install-llamacpp", "gguf", "gbnf",
                    "llama_cpp"),
        RuntimeSpec("openai", "runtimes.openai:OpenAIRuntime", "pip install -e .", None, "response_format",
                    "json"),
        RuntimeSpec("executorch", "runtimes.executorch:ExecuTorchRuntime",
                    "make export FORMAT=executorch", "executorch", "llguidance",
                    "executorch", toolchain="executorch"),
        RuntimeSpec("mnn", "runtimes.mnn:MnnRuntime", "make export FORMAT=mnn", "mnn",
                    "llguidance", "MNN", toolchain="mnn"),
        RuntimeSpec("onnxruntime", "runtimes.onnxruntime:OnnxRuntimeGenaiRuntime", "make install-onnxruntime", "onnx",
                    "llguidance", "onnxruntime_genai"),
    )
}


def runtime_spec(name: str) -> RuntimeSpec:
    """The registry row of `name`; a "did you mean" sentence for an unknown one."""
    if name not in REGISTRY:
        raise unknown_name("runtime", name, REGISTRY)
    return REGISTRY[name]


def get_runtime(name: str, *, python: str | Path | None = None, env_label: str = "", **options: Any) -> Runtime:
    """Instantiate the runtime registered as `name`.

    python: None = in this process; else the interpreter of another environment (a toolchain
    env) to run it in as a child process (runtimes/isolated.py), described by `env_label`.
    Choosing that interpreter is the caller's business (device_runner.run.open_runtime).
    """
    spec = runtime_spec(name)
    if python is not None:
        from .isolated import IsolatedRuntime

        return IsolatedRuntime(name, Path(python), env_label or str(python), **options)
    module_name, class_name = spec.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise missing_dependency(f"The '{name}' runtime", exc.name, spec.install) from exc
    return getattr(module, class_name)(**options)


__all__ = [
    "REGISTRY", "AddsRowFields", "Completion", "CountsTokens", "GenerationSettings", "LimitsContext", "Request",
    "Runtime", "RuntimeInfo", "RuntimeSpec", "RunsBatches", "Timings", "get_runtime", "runtime_spec",
]
