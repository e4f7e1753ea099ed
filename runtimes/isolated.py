"""A runtime that runs in another Python environment, behind the same protocol (runtimes/base.py).

ExecuTorch and MNN come with torch / pymnn pins that conflict with each other and with a light
core install, so they live in their export toolchain envs (export/env.py), not in `.venv`.
`IsolatedRuntime` starts `<env python> -m runtimes.isolated NAME OPTIONS` once and forwards
load / generate / info / count_tokens / close to it, one JSON line per call each way over the
child's stdin and stdout.  The child's stderr (progress, warnings) passes through.

What a reader of the numbers should know: timings and peak RSS come from the child, the process
that ran the model; the harness's `load_ms` for such a runtime includes starting that process
and importing the engine (a few seconds for torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from eval.errors import HarnessError

from .base import Completion, GenerationSettings, Request, RuntimeInfo, Timings


def request_to_json(request: Request) -> dict[str, Any]:
    return asdict(request)


def request_from_json(data: dict[str, Any]) -> Request:
    settings = dict(data.get("settings") or {})
    settings["stop"] = tuple(settings.get("stop") or ())
    choices = data.get("choices")
    return Request(messages=tuple(data.get("messages") or ()), prompt=data.get("prompt"),
                   json_schema=data.get("json_schema"), choices=tuple(choices) if choices is not None else None,
                   settings=GenerationSettings(**settings), cache_prefix=data.get("cache_prefix"))


def completion_from_json(data: dict[str, Any]) -> Completion:
    return Completion(text=data["text"], timings=Timings(**data["timings"]), finish_reason=data.get("finish_reason"))


class IsolatedRuntime:
    """Runtime `name` in a child process started with `python` (a toolchain env's interpreter)."""

    def __init__(self, name: str, python: Path, env_label: str, **options: Any) -> None:
        self.name = name
        self.env_label = env_label
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_OFFLINE", "1")
        self._proc = subprocess.Popen(
            [str(python), "-m", "runtimes.isolated", name, json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True, cwd=root, env=env,
        )
        self._call("ping")  # the engine imported (or a HarnessError saying what is missing)
        self._caps: list[str] = []

    def _call(self, op: str, **args: Any) -> Any:
        proc = self._proc
        if proc.poll() is not None:
            raise HarnessError(f"The {self.name} runtime process ({self.env_label}) has exited "
                               f"(code {proc.returncode}); its output is above.")
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # reported below, with the exit code
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            raise HarnessError(f"The {self.name} runtime process ({self.env_label}) stopped during '{op}' "
                               f"(exit code {code}); its output is above.")
        reply = json.loads(line)
        if "error" in reply:
            raise HarnessError(reply["error"]) if reply.get("harness") else RuntimeError(
                f"{self.name} runtime ({self.env_label}) failed in '{op}': {reply['error']}")
        return reply.get("ok")

    def load(self, artifact: str) -> None:
        self._caps = self._call("load", artifact=artifact)

    def generate(self, requests: list[Request]) -> list[Completion]:
        replies = self._call("generate", requests=[request_to_json(r) for r in requests])
        return [completion_from_json(r) for r in replies]

    @property
    def max_context(self) -> int | None:
        return self._call("max_context") if "max_context" in self._caps else None

    def count_tokens(self, text: str) -> int:
        if "count_tokens" not in self._caps:
            return len(text) // 3 + 1  # Budget's own estimate; the engine cannot count
        return int(self._call("count_tokens", text=text))

    def info(self) -> RuntimeInfo:
        data = self._call("info")
        details = {**data["details"], "process": f"isolated: {self.env_label}"}
        return RuntimeInfo(data["name"], data["version"], details)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._call("close")
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (HarnessError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __del__(self) -> None:  # never leave a child behind
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


# --- the child ---------------------------------------------------------------------------------


def _serve(name: str, options: dict[str, Any], inbox: IO[str], outbox: IO[str]) -> int:
    from . import get_runtime
    from .base import CountsTokens, LimitsContext

    runtime: Any = None
    startup_error: dict[str, Any] | None = None
    try:
        runtime = get_runtime(name, **options)
    except HarnessError as exc:
        startup_error = {"error": str(exc), "harness": True}
    for line in inbox:
        message = json.loads(line)
        op = message.pop("op")
        try:
            if startup_error is not None:
                reply = startup_error
            elif op == "ping":
                reply = {"ok": True}
            elif op == "load":
                runtime.load(message["artifact"])
                caps = [c for c, protocol in (("count_tokens", CountsTokens), ("max_context", LimitsContext))
                        if isinstance(runtime, protocol)]
                reply = {"ok": caps}
            elif op == "generate":
                completions = runtime.generate([request_from_json(r) for r in message["requests"]])
                reply = {"ok": [{"text": c.text, "timings": c.timings.to_dict(), "finish_reason": c.finish_reason}
                                for c in completions]}
            elif op == "count_tokens":
                reply = {"ok": runtime.count_tokens(message["text"])}
            elif op == "max_context":
                reply = {"ok": runtime.max_context}
            elif op == "info":
                info = runtime.info()
                reply = {"ok": {"name": info.name, "version": info.version, "details": info.details}}
            elif op == "close":
                runtime.close()
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown operation {op!r}"}
        except HarnessError as exc:
            reply = {"error": str(exc), "harness": True}
        except Exception as exc:  # the parent decides; the child keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        outbox.write(json.dumps(reply) + "\n")
        outbox.flush()
        if op == "close":
            break
    return 0


def main(argv: list[str]) -> int:
    # The protocol owns the real stdout; anything an engine prints goes to stderr instead.
    outbox = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return _serve(argv[0], json.loads(argv[1]) if len(argv) > 1 else {}, sys.stdin, outbox)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
