"""Host inference engines behind one small protocol (see runtimes/base.py).

The registry maps names to "module:Class" strings and imports lazily, so `import runtimes`
never imports an engine (or torch).
"""

from __future__ import annotations

import importlib
import importlib.util
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

# Runtimes whose engine lives in an export toolchain env (export/env.py) rather than the core
# venv: name -> (the engine's top-level module, the env's format).  When the module is not
# importable here, get_runtime runs the runtime in that env (runtimes/isolated.py).
TOOLCHAIN_ENVS: dict[str, tuple[str, str]] = {
    "executorch": ("executorch", "executorch"),
    "mnn": ("MNN", "mnn"),
}


def get_runtime(name: str, *, isolate: bool | None = None, **options: Any) -> Runtime:
    """Instantiate the runtime registered as `name`.

    isolate: None = in this process when its engine is importable here, else in its toolchain
    env (created on first use); True / False force one or the other.
    """
    if name not in REGISTRY:
        raise unknown_name("runtime", name, REGISTRY)
    if isolate is None:
        isolate = name in TOOLCHAIN_ENVS and importlib.util.find_spec(TOOLCHAIN_ENVS[name][0]) is None
    if isolate:
        return _isolated(name, options)
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


def _isolated(name: str, options: dict[str, Any]) -> Runtime:
    if name not in TOOLCHAIN_ENVS:
        raise HarnessError(f"The '{name}' runtime has no toolchain env to run in; install it with "
                           f"`{REGISTRY[name][1]}`.")
    from export.env import ensure_env, env_dir

    from .isolated import IsolatedRuntime

    fmt = TOOLCHAIN_ENVS[name][1]
    python = ensure_env(fmt)  # made once by `make export FORMAT=<fmt>`; made here if missing
    return IsolatedRuntime(name, python, f"{fmt} toolchain env {env_dir(fmt)}", **options)


__all__ = [
    "REGISTRY", "TOOLCHAIN_ENVS", "Completion", "GenerationSettings", "Request", "Runtime", "RuntimeInfo",
    "Timings", "get_runtime",
]
