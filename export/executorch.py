"""ExecuTorch (.pte): optimum-executorch's exporter, XNNPACK on the CPU; MediaTek NeuroPilot and Qualcomm QNN with their SDKs.

XNNPACK (the default, verified here) runs in the executorch toolchain env
(export/requirements/executorch.txt):
    optimum-cli export executorch --model CHECKPOINT --task text-generation --recipe xnnpack
        --use_custom_sdpa --use_custom_kv_cache --qlinear 8da4w --qembedding 8w --max_seq_len N
Facts that shape the options (seen here with executorch 1.5.1 / optimum-executorch 1.1.0):
  - a bf16 source is loaded in bf16 (optimum would load float32: twice its size) and quantized one
    module at a time in float32 (export/et_optimum.py: the 8da* lowering needs float32);
  - weight-only linear quantization (`4w`, `8w`) exports a .pte whose outputs are garbage
    (the scale is dropped), so only 8da4w / 8da8w are offered for linears;
  - Gemma 3 (sliding-window hybrid cache) needs --use_custom_sdpa --use_custom_kv_cache, or
    optimum silently exports a static length-1 model that crashes once the cache passes the
    window: both are always on;
  - a .pte using the custom SDPA / KV-cache / quantized-embedding kernels loads in Python
    only after importing executorch.extension.llm.custom_ops.custom_ops and
    executorch.kernels.quantized (runtimes/executorch.py does).
MediaTek NeuroPilot (VARIANT=mediatek-a16w4, ...) and Qualcomm QNN (VARIANT=qnn-16a4w, qnn-fp16)
run ExecuTorch's own vendor LLM scripts (export/vendor_backends.py says which and why); they
need MediaTek's `mtk_converter` and `mtk_neuron` (NeuroPilot SDK, not on PyPI) in the executorch
env plus an executorch checkout (EXECUTORCH_SRC), or QNN_SDK_ROOT (Qualcomm AI Engine Direct
SDK) with its x86_64 host libraries. Without them the export stops before doing anything,
saying what to install and where. Neither was verified here (no SDK), and their parity cannot
run on the host: the manifest says so (`parity.passed` is null, with the reason).
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

from . import vendor_backends as vendor
from .vendor_backends import NEUROPILOT_MODULES
from .catalogue import describe_min_top1, min_top1
from .worker import finish, worker_parser

BACKENDS = ("xnnpack", "mediatek", "qnn")
QLINEAR = ("8da4w", "8da8w")
QEMBEDDING = ("8w", "4w", "none")
BROKEN_QLINEAR = ("4w", "8w")


def optimum_dtype_args(dtype: str) -> list[str]:
    """optimum-cli's --dtype for a source of `dtype`: its own (optimum loads in float32 unless told, twice a
    bf16 checkpoint's size).  The dynamic-activation variants (8da4w, 8da8w) lower only from float32
    (from bf16, torchao's quantize_affine stays outside XNNPACK: "Missing out variants"), so
    export/et_optimum.py converts each module to float32 just before it is quantized."""
    return ["--dtype", dtype] if dtype != "float32" else []


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
                f"mtk_neuron-*.whl`; builds for this env's Python 3.11), and run the export again with "
                f"EXECUTORCH_SRC naming an executorch checkout (its examples/mediatek script does the export: it "
                f"fixes the prompt chunk and cache sizes and needs a lot of host RAM, ~114 GB for an 8B model). "
                f"Or export with backend xnnpack (the default)."
            )
    elif backend == "qnn":
        problem = vendor.qnn_sdk_problem(os.environ.get("QNN_SDK_ROOT"))
        if problem:
            raise HarnessError(
                f"The Qualcomm QNN backend needs the Qualcomm AI Engine Direct (QNN) SDK, and {problem}. Download "
                "the SDK from Qualcomm's software center (softwarecenter.qualcomm.com), unpack it, and run "
                "`make export MODEL=... FORMAT=executorch VARIANT=qnn-16a4w QNN_SDK_ROOT=/path/to/qairt/<version>` "
                "(executorch 1.5.1's wheel carries the Qualcomm backend; it was built against QNN 2.37). Online, "
                f"`{env_dir('executorch')}/bin/python -m executorch.backends.qualcomm.scripts.download_qnn_sdk "
                "--dst-folder DIR --print-sdk-path` downloads that SDK from Qualcomm and prints the folder to use. "
                "Or export with backend xnnpack (the default)."
            )


class ExecuTorchExporter:
    format = "executorch"
    env = "executorch"

    def variant(self, options: dict[str, Any]) -> str:
        backend = _backend(options)
        if backend == "qnn":  # VARIANT=qnn-<quant>: checked by preflight, after the SDK check
            return f"qnn-{str(options.get('vendor_quant') or '16a4w').lower()}"
        if backend == "mediatek":
            return f"mediatek-{str(options.get('vendor_quant') or 'a16w4').lower()}"
        qlinear = str(options.get("qlinear", "8da4w")).lower()
        if qlinear in BROKEN_QLINEAR:
            raise HarnessError(
                f"ExecuTorch qlinear '{qlinear}' (weight-only) exports a .pte whose outputs are wrong with "
                "executorch 1.5.1 (the scale is dropped); use 8da4w or 8da8w."
            )
        if qlinear not in QLINEAR and qlinear != "fp32":
            raise HarnessError(f"ExecuTorch qlinear '{qlinear}' is not supported; use one of {', '.join(QLINEAR)} or fp32.")
        return qlinear

    def preflight(self, options: dict[str, Any], recipe: Any = None, source: Path | None = None) -> None:
        """Before any work: the vendor SDK, then the settings, then whether the vendor script has the model."""
        backend = _backend(options)
        check_backend_sdk(backend)
        if backend == "qnn":
            vendor.qnn_options(options)
            if recipe is not None:
                vendor.qnn_decoder_model(recipe.key)
        elif backend == "mediatek":
            vendor.mtk_options(options)
            vendor.executorch_source()
            if recipe is not None:
                vendor.mtk_model_type(recipe.key)

    def plan(self, options: dict[str, Any]) -> list[str]:
        variant = self.variant(options)
        backend = _backend(options)
        if backend == "qnn":
            q = vendor.qnn_options(options)
            return [f"python -m {vendor.QNN_SCRIPT} --compile_only --soc_model {q['soc_model']} --model_mode "
                    f"{q['model_mode']} --max_seq_len {q['max_seq_len']} --prefill_ar_len {q['prefill_ar_len']}"
                    f"{' -F' if q['quant'] == 'fp16' else ''} (executorch 1.5.1, in the executorch-qnn env, "
                    f"QNN_SDK_ROOT={os.environ.get('QNN_SDK_ROOT')})",
                    "parity: not run (QNN HTP runs only on the phone or the SDK's simulator); the manifest says so"]
        if backend == "mediatek":
            m = vendor.mtk_options(options)
            return [f"$EXECUTORCH_SRC/{vendor.MTK_SCRIPT} --precision {m['precision'].upper()} --num_chunks "
                    f"{m['num_chunks']} -shapes {m['prompt_tokens']}t{m['cache_size']}c 1t{m['cache_size']}c "
                    f"(NeuroPilot, platform {vendor.MTK_PLATFORM})",
                    "parity: not run (NeuroPilot runs only on the phone's APU); the manifest says so"]
        qlinear = str(options.get("qlinear", "8da4w")).lower()
        check = "logits and 16 greedy tokens" if qlinear == "fp32" else describe_min_top1(options, qlinear)
        return [f"optimum-cli export executorch --recipe xnnpack --use_custom_sdpa --use_custom_kv_cache "
                f"--qlinear {variant} --qembedding {options.get('qembedding', '8w')} --max_seq_len "
                f"{options.get('max_seq_len', 2048)} (optimum-executorch 1.1.0, executorch 1.5.1)",
                f"parity through the ExecuTorch Python runtime: {check} vs transformers"]

    def extra_envs(self, options: dict[str, Any]) -> list[str]:
        """Toolchain envs besides this format's own that the export runs in."""
        return ["executorch-qnn"] if _backend(options) == "qnn" else []

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        from .catalogue import get_recipe

        self.preflight(options, get_recipe(name))
        backend = _backend(options)
        common = ["-m", "export.executorch", "--source", str(source), "--out", str(out), "--result", str(result),
                  "--model", name, "--backend", backend]
        if backend == "qnn":
            settings = vendor.qnn_options(options)
            vendor.qnn_source_inputs(vendor.qnn_decoder_model(name), source)  # a missing file, named now
            return [*common, "--settings", json.dumps(settings)]
        if backend == "mediatek":
            settings = vendor.mtk_options(options)
            vendor.check_mtk_layers(json.loads((source / "config.json").read_text()), settings["num_chunks"])
            return [*common, "--settings", json.dumps(settings)]
        return [*common, "--qlinear", str(options.get("qlinear", "8da4w")),
                "--qembedding", str(options.get("qembedding", "8w")),
                "--max-seq-len", str(options.get("max_seq_len", 2048)),
                "--min-top1", str(min_top1(options, self.variant(options))[0])]


def _backend(options: dict[str, Any]) -> str:
    backend = str(options.get("backend", "xnnpack")).lower()
    if backend not in BACKENDS:
        raise HarnessError(f"ExecuTorch backend '{backend}' is not supported; use one of {', '.join(BACKENDS)}.")
    return backend


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

    from .parity import EXACT_REL_TOL, check, source_dtype, stored_reference, summary

    out = Path(args.out)
    from importlib.metadata import version

    tools = {"executorch": version("executorch"), "optimum-executorch": version("optimum-executorch"),
             "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
             "torchao": version("torchao")}
    del executorch
    # Named after the staging folder: the driver removes it with the staging folder if this worker dies.
    with tempfile.TemporaryDirectory(prefix=f"{out.name}.scratch-", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        started = time.monotonic()
        print("[executorch] parity reference: the source in transformers (its own dtype) in a separate process",
              flush=True)
        reference = stored_reference(Path(args.source), scratch, max_tokens=int(args.max_seq_len))
        cmd = [sys.executable, "-m", "export.et_optimum", "export", "executorch", "--model", str(args.source),
               "--task", "text-generation", "--recipe", "xnnpack", "--use_custom_sdpa", "--use_custom_kv_cache",
               "--max_seq_len", str(args.max_seq_len), "--output_dir", str(scratch / "pte")]
        cmd += optimum_dtype_args(source_dtype(Path(args.source)))
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
        rel_tol = max(EXACT_REL_TOL["f32"], EXACT_REL_TOL.get({"bfloat16": "bf16", "float16": "f16"}.get(
            reference.dtype, "f32"), 0.0))  # a bf16 source is the reference in bf16
        parity = check(reference, candidate, exact=exact, rel_tol=rel_tol, min_top1=float(args.min_top1))
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
    parser = worker_parser("ExecuTorch export worker")
    parser.add_argument("--qlinear", default="8da4w")
    parser.add_argument("--qembedding", default="8w")
    parser.add_argument("--max-seq-len", default="2048")
    parser.add_argument("--model", default="", help="recipe key (vendor backends map it to their model names)")
    parser.add_argument("--backend", default="xnnpack", choices=BACKENDS)
    parser.add_argument("--settings", default="{}", help="vendor backend settings (JSON, from the exporter)")
    args = parser.parse_args(argv)
    result = run(args) if args.backend == "xnnpack" else run_vendor(args)
    return finish(args, result)


def run_vendor(args: argparse.Namespace) -> dict[str, Any]:
    """QNN / NeuroPilot through ExecuTorch's own scripts (export/vendor_backends.py)."""
    from importlib.metadata import version

    import torch

    tools = {"executorch": version("executorch"), "torch": torch.__version__.split("+")[0]}
    out = Path(args.out)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="et-", dir=out.parent) as scratch:
        runner = vendor.run_qnn if args.backend == "qnn" else vendor.run_mediatek
        result = runner(args, Path(scratch))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    return {"tools": tools, "peak_rss_mb": peak, "worker_seconds": time.monotonic() - started, **result}


if __name__ == "__main__":
    raise SystemExit(main())
