"""Host inference engines behind one small protocol (see runtimes/base.py).

The registry maps names to "module:Class" strings and imports lazily, so `import runtimes`
never imports an engine (or torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from eval.errors import HarnessError, unknown_name

from .base import Completion, GenerationSettings, Request, Runtime, RuntimeInfo, Timings

# name -> ("module:Class", the pip extra / make target that provides its dependencies)
REGISTRY: dict[str, tuple[str, str]] = {
    "llamacpp": ("runtimes.llamacpp:LlamaCppRuntime", "make install-llamacpp"),
    "openai": ("runtimes.openai:OpenAIRuntime", "pip install -e ."),
    "executorch": ("runtimes.executorch:ExecuTorchRuntime", "the executorch toolchain env (make export FORMAT=executorch)"),
    "mnn": ("runtimes.mnn:MnnRuntime", "the mnn toolchain env (make export FORMAT=mnn)"),
    "onnxruntime": ("runtimes.onnxruntime:OnnxRuntimeGenaiRuntime", "make install-onnxruntime"),
}


def get_runtime(name: str, **options: Any) -> Runtime:
    """Instantiate the runtime registered as `name`."""
    if name not in REGISTRY:
        raise unknown_name("runtime", name, REGISTRY)
    target, install_hint = REGISTRY[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HarnessError(
            f"The '{name}' runtime needs the Python package '{exc.name}', which is not installed. "
            f"Install it with `{install_hint}`."
        ) from exc
    return getattr(module, class_name)(**options)


__all__ = [
    "REGISTRY", "Completion", "GenerationSettings", "Request", "Runtime", "RuntimeInfo",
    "Timings", "get_runtime",
]
