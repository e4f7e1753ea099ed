"""MNN: llmexport (PyPI 0.0.5) with MNN's telemetry and self-installing pip blocked; parity through MNN.llm.

SECURITY.  MNN's Python converter tools (MNN.tools.utils.log, imported by mnnconvert and
mnnquant, which llmexport uses in-process) run `pip install -U aliyun-log-python-sdk` when
that package is missing and then send usage telemetry (machine id, model, arguments) to a
remote log service.  Seen here, that install also downgraded protobuf and broke onnx.  The
worker therefore runs with `block_telemetry()` in force, before anything from MNN loads:
  - the modules `MNN.tools.utils.log` and `aliyun` cannot be imported (mnnconvert then runs
    with its logger set to None, its own fallback);
  - an audit hook refuses, and records, any os.system / subprocess call that runs pip and any
    network connection or name lookup that is not on the loopback interface;
  - pip, should it still start, is pointed at no index (PIP_NO_INDEX, an empty find-links).
What was attempted is written into the manifest (details.telemetry_guard).  Tests prove it.

Steps: llmexport.py run as a script (its installed entry point fails with "No module named
'utils'") -> config.json, llm_config.json, llm.mnn, llm.mnn.weight, tokenizer.mtok; then
parity through MNN.llm.  Gemma 3 is refused: llmexport 0.0.5 gives its sliding-window
(local) layers the global RoPE base, which moves logits by 0.35-2.3 even at 16 bits.
"""

from __future__ import annotations

import argparse
import importlib.abc
import ipaddress
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

BLOCKED_MODULES = ("aliyun", "MNN.tools.utils.log")
QUANT_BITS = (4, 8, 16)
REFUSED_ARCHITECTURES = {
    "Gemma3ForCausalLM": "llmexport 0.0.5 gives Gemma 3's sliding-window layers the global RoPE base (logits off by "
                         "0.35-2.3 even at 16 bits)",
    "Gemma3ForConditionalGeneration": "llmexport 0.0.5 gives Gemma 3's sliding-window layers the global RoPE base "
                                      "(logits off by 0.35-2.3 even at 16 bits)",
}

# What the guard refused, in order: ("pip" | "connect" | "resolve" | "import", detail).
ATTEMPTS: list[tuple[str, str]] = []
_GUARDED = False


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        for blocked in BLOCKED_MODULES:
            if name == blocked or name.startswith(blocked + "."):
                ATTEMPTS.append(("import", name))
                raise ImportError(f"{name} is blocked by the harness (MNN usage telemetry)")
        return None


def _local(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _mentions_pip(command: Any) -> bool:
    if isinstance(command, (list, tuple)):
        command = " ".join(str(c) for c in command)
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    words = text.replace("/", " ").replace("=", " ").split()
    return "pip" in words or "pip3" in words or any(w.startswith("pip") and w[3:4] in ("", "3") for w in words) \
        or ("-m" in words and "pip" in text)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "os.system" and _mentions_pip(args[0]):
        ATTEMPTS.append(("pip", str(args[0])))
        raise PermissionError("pip is blocked by the harness while MNN tools run")
    if event == "subprocess.Popen" and _mentions_pip(args[1]):
        ATTEMPTS.append(("pip", str(args[1])))
        raise PermissionError("pip is blocked by the harness while MNN tools run")
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _local(address[0]):
            ATTEMPTS.append(("connect", str(address)))
            raise PermissionError(f"network connection to {address} is blocked by the harness")
    if event == "socket.getaddrinfo" and not _local(args[0]):
        ATTEMPTS.append(("resolve", str(args[0])))
        raise PermissionError(f"name lookup of {args[0]} is blocked by the harness")


def block_telemetry() -> None:
    """Block MNN's telemetry module, pip and non-loopback network for the rest of this process."""
    global _GUARDED
    if _GUARDED:
        return
    for name in list(sys.modules):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED_MODULES):
            del sys.modules[name]
    sys.meta_path.insert(0, _Blocker())
    os.environ["PIP_NO_INDEX"] = "1"
    os.environ["PIP_FIND_LINKS"] = ""
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    sys.addaudithook(_audit)
    _GUARDED = True


def _refusal(architecture: str) -> str | None:
    return REFUSED_ARCHITECTURES.get(architecture)


class MnnExporter:
    format = "mnn"
    env = "mnn"

    def variant(self, options: dict[str, Any]) -> str:
        bits = int(options.get("quant_bit", 4))
        if bits not in QUANT_BITS:
            raise HarnessError(f"MNN quant_bit {bits} is not supported; use one of {', '.join(map(str, QUANT_BITS))}.")
        return f"int{bits}" if bits < 16 else "bf16"

    def preflight(self, options: dict[str, Any], recipe: Any = None) -> None:
        why = _refusal(getattr(recipe, "architecture", ""))
        if why:
            raise HarnessError(
                f"MNN export of {recipe.key} is refused: {why}, and the parity check would fail. Use FORMAT=gguf, "
                "onnx or executorch for Gemma 3 (FORMAT=all skips MNN for it with this note)."
            )

    def plan(self, options: dict[str, Any]) -> list[str]:
        return [f"llmexport.py --export mnn --quant_bit {options.get('quant_bit', 4)} (llmexport 0.0.5, MNN 3.6.1), "
                "with MNN's telemetry and pip self-install blocked",
                f"parity through MNN.llm: top-1 agreement >= {options.get('min_top1', 0.6)} vs transformers"]

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        return ["-m", "export.mnn", "--source", str(source), "--out", str(out), "--result", str(result),
                "--quant-bit", str(int(options.get("quant_bit", 4))), "--min-top1", str(options.get("min_top1", 0.6))]


# --- the worker (mnn toolchain env) -------------------------------------------------------------


def run_llmexport(source: Path, dst: Path, quant_bit: int) -> None:
    """llmexport.py as a script, in this (guarded) process."""
    import importlib.util

    # Importing the package fails ("No module named 'utils'"): find its script without importing it.
    spec = importlib.util.find_spec("llmexport")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llmexport is not installed in the mnn toolchain env")
    script = Path(list(spec.submodule_search_locations)[0]) / "llmexport.py"
    argv = [str(script), "--path", str(source), "--export", "mnn", "--dst_path", str(dst),
            "--quant_bit", str(quant_bit), "--quant_block", "64", "--mnnconvert", "/nonexistent/MNNConvert"]
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, str(script.parent))  # its `import utils...`
    try:
        code = compile(script.read_text(), str(script), "exec")
        exec(code, {"__name__": "__main__", "__file__": str(script)})
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


class MnnCandidate:
    """An MNN LLM folder run by MNN.llm: logits per position (one forward per token), greedy tokens."""

    def __init__(self, folder: Path) -> None:
        from runtimes.mnn import MnnModel

        self.model = MnnModel(folder)

    def logits(self, ids: list[int]) -> Any:
        return self.model.all_logits(ids)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        import numpy as np

        logits = self.model.prefill(ids)
        tokens: list[int] = []
        while True:
            token = int(np.argmax(logits))
            tokens.append(token)
            if len(tokens) == n:
                return tokens
            logits = self.model.step(token)

    def tokenize(self, text: str) -> list[int] | None:
        return self.model.tokenize(text)


def run(args: argparse.Namespace) -> dict[str, Any]:
    block_telemetry()
    import MNN
    import torch
    import transformers
    from importlib.metadata import version

    from .parity import Reference, check, summary

    out = Path(args.out)
    tools = {"llmexport": version("llmexport"), "MNN": getattr(MNN, "version", lambda: version("MNN"))()
             if callable(getattr(MNN, "version", None)) else version("MNN"),
             "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    with tempfile.TemporaryDirectory(prefix="mnn-", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        started = time.monotonic()
        print("[mnn] loading the source model in transformers for the parity reference", flush=True)
        reference = Reference(Path(args.source))
        print(f"[mnn] llmexport --export mnn --quant_bit {args.quant_bit} (telemetry blocked)", flush=True)
        # In a child process (guarded the same way): after llmexport ran in-process, MNN.llm in
        # that process gave wrong logits (global MNN state the converter leaves behind).
        import subprocess

        child = subprocess.run([sys.executable, "-m", "export.mnn", "--llmexport-only", "--source", str(args.source),
                                "--out", str(scratch / "mnn"), "--quant-bit", str(args.quant_bit),
                                "--result", str(scratch / "attempts.json")],
                               cwd=scratch)  # llmexport writes .export.log into its working folder
        if child.returncode != 0:
            raise SystemExit(f"llmexport failed (exit {child.returncode}); its output is above.")
        ATTEMPTS.extend(tuple(a) for a in json.loads((scratch / "attempts.json").read_text()))
        produced = scratch / "mnn"
        for path in sorted(produced.iterdir()):
            if path.is_file():
                shutil.copy2(path, out / path.name)
        config = out / "config.json"
        if config.is_file() and not (out / "tokenizer.mtok").is_file() and (out / "tokenizer.txt").is_file():
            # llmexport 0.0.5 writes tokenizer.txt but names tokenizer.mtok in config.json.
            data = json.loads(config.read_text())
            data["tokenizer_file"] = "tokenizer.txt"
            config.write_text(json.dumps(data, indent=4))
        for name in ("export_args.json", "llm.mnn.json"):  # the exporter's own notes, not the model
            (out / name).unlink(missing_ok=True)
        if not (out / "llm.mnn").is_file():
            raise SystemExit(f"llmexport wrote no llm.mnn (it wrote: {sorted(p.name for p in produced.iterdir())})")
        print("[mnn] parity through MNN.llm", flush=True)
        candidate = MnnCandidate(out)
        parity = check(reference, candidate, exact=False, min_top1=float(args.min_top1))
        print(f"[mnn] int{args.quant_bit}: {summary(parity)}", flush=True)
        seconds = time.monotonic() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    return {"tools": tools, "parity": parity, "peak_rss_mb": peak, "worker_seconds": seconds,
            "quantization": {"quant_bit": int(args.quant_bit), "quant_block": 64, "method": "llmexport weight quant, asymmetric"},
            "details": {"telemetry_guard": {"blocked_modules": list(BLOCKED_MODULES),
                                            "attempts": [list(a) for a in ATTEMPTS]}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MNN export worker (run by `python -m export`).")
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--quant-bit", default="4")
    parser.add_argument("--min-top1", default="0.6")
    parser.add_argument("--llmexport-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.llmexport_only:
        block_telemetry()
        run_llmexport(Path(args.source), Path(args.out), int(args.quant_bit))
        Path(args.result).write_text(json.dumps([list(a) for a in ATTEMPTS]))
        return 0
    result = run(args)
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0 if result["parity"]["passed"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
