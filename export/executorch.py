"""ExecuTorch (.pte): optimum-executorch's exporter, XNNPACK on the CPU; MediaTek NeuroPilot and Qualcomm QNN with their SDKs.

XNNPACK (the default, verified here) runs in the executorch toolchain env
(export/requirements/executorch.txt):
    optimum-cli export executorch --model CHECKPOINT --task text-generation --recipe xnnpack
        --use_custom_sdpa --use_custom_kv_cache --qlinear 8da4w --qembedding 8w --max_seq_len N
Facts that shape the options (seen here with executorch 1.5.1 / optimum-executorch 1.1.0):
  - weight-only linear quantization (`4w`, `8w`) exports a .pte whose outputs are garbage
    (the scale is dropped), so only 8da4w / 8da8w are offered for linears;
  - Gemma 3 (sliding-window hybrid cache) needs --use_custom_sdpa --use_custom_kv_cache, or
    optimum silently exports a static length-1 model that crashes once the cache passes the
    window: both are always on;
  - a .pte using the custom SDPA / KV-cache / quantized-embedding kernels loads in Python
    only after importing executorch.extension.llm.custom_ops.custom_ops and
    executorch.kernels.quantized (runtimes/executorch.py does).
MediaTek NeuroPilot needs MediaTek's `mtk_converter` and `mtk_neuron` (NeuroPilot SDK, not on
PyPI) in the executorch env; Qualcomm QNN needs QNN_SDK_ROOT (Qualcomm AI Engine Direct SDK).
Without them the export stops before doing anything, saying what to install and where.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

BACKENDS = ("xnnpack", "mediatek", "qnn")
QLINEAR = ("8da4w", "8da8w")
QEMBEDDING = ("8w", "4w", "none")
BROKEN_QLINEAR = ("4w", "8w")
NEUROPILOT_MODULES = ("mtk_converter", "mtk_neuron")


def _env_has_module(name: str) -> bool:
    """Whether the executorch toolchain env has `name` installed (looked up on disk, nothing run)."""
    from .env import env_dir

    site = env_dir("executorch") / "lib"
    return any(site.glob(f"python3*/site-packages/{name}")) or any(site.glob(f"python3*/site-packages/{name}.py")) \
        or any(site.glob(f"python3*/site-packages/{name}-*.dist-info"))


def check_backend_sdk(backend: str) -> None:
    """Fail early, naming what to install and where, when a vendor backend's SDK is absent."""
    from .env import env_dir

    if backend == "mediatek":
        missing = [m for m in NEUROPILOT_MODULES if not _env_has_module(m)]
        if missing:
            raise HarnessError(
                f"The MediaTek NeuroPilot backend needs MediaTek's NeuroPilot SDK Python packages "
                f"({', '.join(missing)} missing), which are not on PyPI. Download the NeuroPilot Express SDK "
                f"from MediaTek's NeuroPilot portal, install its mtk_converter and mtk_neuron wheels into the "
                f"executorch toolchain env (`{env_dir('executorch')}/bin/pip install mtk_converter-*.whl "
                f"mtk_neuron-*.whl`), and run the export again; its export fixes the prompt chunk and cache "
                f"sizes and needs a lot of host RAM. Or export with backend xnnpack (the default)."
            )
    elif backend == "qnn":
        root = os.environ.get("QNN_SDK_ROOT")
        if not root or not Path(root).is_dir():
            where = f"QNN_SDK_ROOT={root} is not a folder" if root else "QNN_SDK_ROOT is not set"
            raise HarnessError(
                f"The Qualcomm QNN backend needs the Qualcomm AI Engine Direct (QNN) SDK, and {where}. Download "
                "the SDK from Qualcomm's software center (qpm / softwarecenter.qualcomm.com), unpack it, and "
                "run `make export MODEL=... FORMAT=executorch QNN_SDK_ROOT=/path/to/qairt/<version>` (the "
                "executorch env then also needs executorch's Qualcomm backend built against that SDK). Or "
                "export with backend xnnpack (the default)."
            )


class ExecuTorchExporter:
    format = "executorch"
    env = "executorch"

    def variant(self, options: dict[str, Any]) -> str:
        backend = str(options.get("backend", "xnnpack")).lower()
        qlinear = str(options.get("qlinear", "8da4w")).lower()
        if backend not in BACKENDS:
            raise HarnessError(f"ExecuTorch backend '{backend}' is not supported; use one of {', '.join(BACKENDS)}.")
        if qlinear in BROKEN_QLINEAR:
            raise HarnessError(
                f"ExecuTorch qlinear '{qlinear}' (weight-only) exports a .pte whose outputs are wrong with "
                "executorch 1.5.1 (the scale is dropped); use 8da4w or 8da8w."
            )
        if qlinear not in QLINEAR and qlinear != "fp32":
            raise HarnessError(f"ExecuTorch qlinear '{qlinear}' is not supported; use one of {', '.join(QLINEAR)} or fp32.")
        return qlinear if backend == "xnnpack" else f"{backend}-{qlinear}"

    def preflight(self, options: dict[str, Any], recipe: Any = None) -> None:
        check_backend_sdk(str(options.get("backend", "xnnpack")).lower())

    def plan(self, options: dict[str, Any]) -> list[str]:
        variant = self.variant(options)
        backend = str(options.get("backend", "xnnpack")).lower()
        if backend != "xnnpack":
            return [f"{backend} backend: SDK check, then executorch's {backend} lowering (needs the vendor SDK)"]
        qlinear = str(options.get("qlinear", "8da4w")).lower()
        check = "logits and 16 greedy tokens" if qlinear == "fp32" else f"top-1 agreement >= {options.get('min_top1', 0.6)}"
        return [f"optimum-cli export executorch --recipe xnnpack --use_custom_sdpa --use_custom_kv_cache "
                f"--qlinear {variant} --qembedding {options.get('qembedding', '8w')} --max_seq_len "
                f"{options.get('max_seq_len', 2048)} (optimum-executorch 1.1.0, executorch 1.5.1)",
                f"parity through the ExecuTorch Python runtime: {check} vs transformers"]

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        self.preflight(options)
        backend = str(options.get("backend", "xnnpack")).lower()
        if backend != "xnnpack":
            raise HarnessError(
                f"The {backend} SDK is present, but this harness has only been verified with XNNPACK; the {backend} "
                "lowering is not wired yet. Export with backend xnnpack, or run executorch's own "
                f"examples for {backend} on the checkpoint at {source}."
            )
        return ["-m", "export.executorch", "--source", str(source), "--out", str(out), "--result", str(result),
                "--qlinear", str(options.get("qlinear", "8da4w")), "--qembedding", str(options.get("qembedding", "8w")),
                "--max-seq-len", str(options.get("max_seq_len", 2048)), "--min-top1", str(options.get("min_top1", 0.6))]


# --- the worker (executorch toolchain env) ------------------------------------------------------


class PteCandidate:
    """A .pte run by the ExecuTorch Python runtime through runtimes.executorch's engine."""

    def __init__(self, pte: Path, max_seq_len: int) -> None:
        from runtimes.executorch import PteModel

        self.model = PteModel(pte, max_seq_len)

    def logits(self, ids: list[int]) -> Any:
        return self.model.all_logits(ids)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        import numpy as np

        logits = self.model.prefill(ids)
        tokens: list[int] = []
        pos = len(ids)
        while True:
            token = int(np.argmax(logits))
            tokens.append(token)
            if len(tokens) == n:
                return tokens
            logits = self.model.step(token, pos)
            pos += 1

    def tokenize(self, text: str) -> None:
        return None  # the .pte has no tokenizer; the artifact ships the checkpoint's tokenizer files


def run(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    import executorch
    import torch
    import transformers

    from .parity import EXACT_REL_TOL, Reference, check, summary

    out = Path(args.out)
    from importlib.metadata import version

    tools = {"executorch": version("executorch"), "optimum-executorch": version("optimum-executorch"),
             "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
             "torchao": version("torchao")}
    del executorch
    with tempfile.TemporaryDirectory(prefix="et-", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        started = time.monotonic()
        print("[executorch] loading the source model in transformers for the parity reference", flush=True)
        reference = Reference(Path(args.source), max_tokens=int(args.max_seq_len))
        cmd = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "executorch", "--model", str(args.source),
               "--task", "text-generation", "--recipe", "xnnpack", "--use_custom_sdpa", "--use_custom_kv_cache",
               "--max_seq_len", str(args.max_seq_len), "--output_dir", str(scratch / "pte")]
        if args.qlinear != "fp32":
            cmd += ["--qlinear", args.qlinear]
        if args.qembedding != "none":
            cmd += ["--qembedding", args.qembedding]
        print(f"[executorch] {' '.join(cmd[2:])}", flush=True)
        log = scratch / "export.log"
        with log.open("w") as handle:
            result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
        ptes = sorted((scratch / "pte").glob("*.pte"))
        if result.returncode != 0 or not ptes:
            raise SystemExit(f"optimum-cli export executorch failed (exit {result.returncode}):\n{log.read_text()[-3000:]}")
        shutil.copy2(ptes[0], out / "model.pte")
        # The tokenizer and configs travel with the .pte (runners need them; runtimes/executorch.py uses them).
        for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "config.json", "generation_config.json", "chat_template.jinja"):
            if (Path(args.source) / name).is_file():
                shutil.copy2(Path(args.source) / name, out / name)
        (out / "pte_config.json").write_text(json.dumps({"max_seq_len": int(args.max_seq_len),
                                                         "qlinear": args.qlinear, "qembedding": args.qembedding,
                                                         "backend": "xnnpack"}, indent=2))
        print("[executorch] parity through the ExecuTorch runtime", flush=True)
        candidate = PteCandidate(out / "model.pte", int(args.max_seq_len))
        exact = args.qlinear == "fp32" and args.qembedding == "none"
        parity = check(reference, candidate, exact=exact, rel_tol=EXACT_REL_TOL["f32"], min_top1=float(args.min_top1))
        print(f"[executorch] {args.qlinear}: {summary(parity)}", flush=True)
        seconds = time.monotonic() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    return {"tools": tools, "parity": parity, "peak_rss_mb": peak, "worker_seconds": seconds,
            "quantization": {"qlinear": args.qlinear, "qembedding": args.qembedding,
                             "method": "torchao: 8-bit dynamic activations, int4/int8 weights (linears); "
                                       "weight-only int embeddings"},
            "details": {"backend": "xnnpack", "max_seq_len": int(args.max_seq_len), "custom_sdpa": True,
                        "custom_kv_cache": True}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ExecuTorch export worker (run by `python -m export`).")
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--qlinear", default="8da4w")
    parser.add_argument("--qembedding", default="8w")
    parser.add_argument("--max-seq-len", default="2048")
    parser.add_argument("--min-top1", default="0.6")
    args = parser.parse_args(argv)
    result = run(args)
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0 if result["parity"]["passed"] else 3


if __name__ == "__main__":
    raise SystemExit(main())
