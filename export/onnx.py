"""ONNX Runtime (GenAI): the onnxruntime-genai model builder, ORT format for phones, parity through genai.

Steps (the worker runs them in the onnx toolchain env, export/requirements/onnx.txt):
  1. `python -m onnxruntime_genai.models.builder -i CHECKPOINT -o OUT -p int4|int8|fp16|fp32 -e cpu`
     writes model.onnx (+ .data), genai_config.json and the tokenizer files;
  2. genai_config.json gets the provider options of the target execution provider
     (`execution_provider` in the recipe: cpu, xnnpack or qnn);
  3. `onnxruntime.tools.convert_onnx_models_to_ort` writes the ORT-format model for a mobile
     (minimal) build into mobile/, with required_operators.config for a reduced Android build;
  4. `check_onnx_model_mobile_usability`'s verdict goes into the manifest;
  5. parity: the artifact run by onnxruntime-genai vs transformers (exact for fp32, top-1
     agreement for int4/int8).

Why NNAPI is not a target: for these decoders the usability checker finds only a couple of
nodes NNAPI can take (the rest falls back to the CPU with copies in between) and recommends
the CPU EP; onnxruntime-genai cannot select NNAPI at all (only QNN, XNNPACK, WebGPU and the
CPU), so QNN is the accelerator path on Snapdragon phones and XNNPACK/CPU everywhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .catalogue import describe_min_top1, min_top1
from .worker import finish, worker_parser

PRECISIONS = ("int4", "int8", "fp16", "fp32")
EXECUTION_PROVIDERS = ("cpu", "xnnpack", "qnn")
# genai_config.json "provider_options" per target; the model itself is built for the CPU EP.
PROVIDER_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "cpu": [],
    "xnnpack": [{"XNNPACK": {}}],
    # QNN HTP on Snapdragon: the app ships libQnnHtp.so from the user's QNN SDK.
    "qnn": [{"QNN": {"backend_path": "libQnnHtp.so"}}],
}


class OnnxExporter:
    format = "onnx"
    env = "onnx"

    def variant(self, options: dict[str, Any]) -> str:
        precision = str(options.get("precision", "int4")).lower()
        ep = str(options.get("execution_provider", "cpu")).lower()
        if precision not in PRECISIONS or ep not in EXECUTION_PROVIDERS:
            from eval.errors import HarnessError

            raise HarnessError(
                f"ONNX precision '{precision}' with execution provider '{ep}' is not supported; precision is one "
                f"of {', '.join(PRECISIONS)} and execution_provider one of {', '.join(EXECUTION_PROVIDERS)}."
            )
        return precision if ep == "cpu" else f"{precision}-{ep}"

    def plan(self, options: dict[str, Any]) -> list[str]:
        variant = self.variant(options)
        precision = variant.split("-")[0]
        check = ("logits and 16 greedy tokens" if precision == "fp32"
                 else describe_min_top1(options, variant))
        return [f"onnxruntime_genai.models.builder -p {precision} -e cpu (onnxruntime-genai 0.15.2)",
                f"genai_config.json provider options for {options.get('execution_provider', 'cpu')}",
                "convert_onnx_models_to_ort -> mobile/ (+ required_operators.config); mobile usability verdict",
                f"parity through onnxruntime-genai: {check} vs transformers"]

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        variant = self.variant(options)
        return ["-m", "export.onnx", "--source", str(source), "--out", str(out), "--result", str(result),
                "--precision", variant.split("-")[0], "--ep", str(options.get("execution_provider", "cpu")),
                "--min-top1", str(min_top1(options, variant)[0])]


# --- the worker (onnx toolchain env) ------------------------------------------------------------


class GenaiCandidate:
    """An onnxruntime-genai model: prompt logits at every position, greedy tokens, its tokenizer."""

    def __init__(self, folder: Path) -> None:
        import numpy as np
        import onnxruntime_genai as og

        from runtimes.onnxruntime import encode_prompt

        self.np = np
        self.og = og
        self.model = og.Model(str(folder))
        self.tokenizer = og.Tokenizer(self.model)
        self.folder = folder
        self._encode = encode_prompt

    def _generator(self, n: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=n, do_sample=False)
        return self.og.Generator(self.model, params)

    def logits(self, ids: list[int]) -> Any:
        generator = self._generator(len(ids) + 4)
        generator.append_tokens(self.np.asarray(ids, dtype=self.np.int32))
        return self.np.asarray(generator.get_output("logits"), dtype=self.np.float32)[0]

    def greedy(self, ids: list[int], n: int) -> list[int]:
        generator = self._generator(len(ids) + n + 4)
        generator.append_tokens(self.np.asarray(ids, dtype=self.np.int32))
        tokens: list[int] = []
        while True:
            token = int(self.np.argmax(generator.get_logits()[0, -1]))
            tokens.append(token)
            if len(tokens) == n:
                return tokens
            generator.append_tokens(self.np.asarray([token], dtype=self.np.int32))

    def tokenize(self, text: str) -> list[int]:
        return self._encode(self.tokenizer, self.folder, text)


def _run(cmd: list[str], log: Path, what: str) -> str:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}")
    return result.stdout


def set_provider(folder: Path, ep: str) -> None:
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    config["model"]["decoder"]["session_options"]["provider_options"] = PROVIDER_OPTIONS[ep]
    path.write_text(json.dumps(config, indent=4))


def mobile_usability(model: Path, log: Path) -> dict[str, Any]:
    """onnxruntime's mobile usability checker, summarised: its recommendation and NNAPI coverage."""
    text = _run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability", str(model)],
                log, "check_onnx_model_mobile_usability")
    verdict: dict[str, Any] = {"lines": []}
    for raw in text.splitlines():
        line = raw.split("INFO:", 1)[-1].strip()
        match = re.match(r"Model should perform well with (.+?) (as is|if modified to have fixed input shapes): (\w+)", line)
        if match:
            key = match.group(1).lower().replace(" ", "_") + ("" if match.group(2) == "as is" else "_fixed_shapes")
            verdict[key] = match.group(3) == "YES"
        elif "partitions" in line and "nodes" in line:
            verdict["lines"].append(line)
        elif line.startswith("For optimal performance"):
            verdict["recommendation"] = line
    return verdict


# The ORT format is one flatbuffer, and flatbuffers stop at 2 GiB (onnxruntime issue #16573): a
# larger model (Gemma 3 4B at int4: 2.7 GB) has no ORT-format copy.  onnxruntime-genai does not need
# one: on a phone too it loads model.onnx with its external data (ew_ort does).
ORT_FORMAT_LIMIT = 2**31 - 1


def _model_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.onnx*") if p.is_file())


def convert_to_ort(folder: Path, scratch: Path, log: Path) -> list[str]:
    """ORT-format copies of the ONNX model(s) into folder/mobile/; [] for a model over the format's limit."""
    size = _model_bytes(folder)
    if size > ORT_FORMAT_LIMIT:
        print(f"[onnx] no ORT-format copy: the model is {size / 1e9:.2f} GB and the ORT format (a flatbuffer) "
              "holds at most 2 GiB; onnxruntime-genai loads model.onnx and its external data on the phone too",
              flush=True)
        return []
    work = scratch / "ort"
    work.mkdir()
    for onnx_file in folder.glob("*.onnx"):
        shutil.copy2(onnx_file, work / onnx_file.name)
        data = folder / f"{onnx_file.name}.data"
        if data.is_file():  # a hard link: ORT refuses external data that resolves outside the model's folder
            try:
                os.link(data, work / data.name)
            except OSError:
                shutil.copy2(data, work / data.name)
    _run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(work),
          "--optimization_style", "Fixed"], log, "convert_onnx_models_to_ort")
    mobile = folder / "mobile"
    mobile.mkdir()
    written = []
    for path in sorted(work.rglob("*")):
        if path.is_file() and (path.suffix == ".ort" or path.name.endswith("required_operators.config")):
            shutil.copy2(path, mobile / path.name)
            written.append(path.name)
    if not any(name.endswith(".ort") for name in written):
        raise SystemExit("convert_onnx_models_to_ort wrote no .ort file; see the log above.")
    return written


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import onnxruntime_genai as og
    import torch
    import transformers

    from .parity import EXACT_REL_TOL, check, stored_reference, summary

    out = Path(args.out)
    tools = {"onnxruntime-genai": og.__version__, "onnxruntime": onnxruntime.__version__,
             "onnx": onnx.__version__, "transformers": transformers.__version__,
             "torch": torch.__version__.split("+")[0]}
    # Named after the staging folder: the driver removes it with the staging folder if this worker dies.
    with tempfile.TemporaryDirectory(prefix=f"{out.name}.scratch-", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        log = scratch / "onnx.log"
        started = time.monotonic()
        print("[onnx] parity reference: the source in transformers (its own dtype) in a separate process", flush=True)
        reference = stored_reference(Path(args.source), scratch)
        print(f"[onnx] building {args.precision} with onnxruntime-genai's model builder", flush=True)
        builder = ["-i", str(args.source), "-o", str(out), "-p", args.precision, "-e", "cpu", "-c", str(scratch / "cache")]
        # The builder with three workarounds (export/onnx_builder.py): the source loaded in its own
        # dtype, int4/int8 quantized one weight at a time, Gemma 3's local RoPE unscaled.
        _run([sys.executable, "-m", "export.onnx_builder", *builder], log, "the onnxruntime-genai builder")
        set_provider(out, args.ep)
        print("[onnx] converting to ORT format (mobile/) and checking mobile usability", flush=True)
        ort_files = convert_to_ort(out, scratch, log)
        if _model_bytes(out) > ORT_FORMAT_LIMIT:  # its shape inference serializes the whole model: 2 GiB at most
            usability = {"skipped": "onnxruntime's checker serializes the whole model into one protobuf, "
                                    "which holds at most 2 GiB"}
        else:
            usability = mobile_usability(out / "model.onnx", log)
        # The parity run uses the CPU EP whatever the target (the host has no NPU).
        run_dir = out
        if args.ep != "cpu":
            run_dir = scratch / "cpu"
            shutil.copytree(out, run_dir, ignore=shutil.ignore_patterns("mobile"))
            set_provider(run_dir, "cpu")
        candidate = GenaiCandidate(run_dir)
        exact = args.precision == "fp32"
        # A bf16 source is the reference in bf16: its own rounding sets the tolerance.
        rel_tol = max(EXACT_REL_TOL["f32"], EXACT_REL_TOL.get({"bfloat16": "bf16", "float16": "f16"}.get(
            reference.dtype, "f32"), 0.0))
        parity = check(reference, candidate, exact=exact, rel_tol=rel_tol,
                       min_top1=float(args.min_top1))
        print(f"[onnx] {args.precision}: {summary(parity)}", flush=True)
        del candidate
        seconds = time.monotonic() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    return {"tools": tools, "parity": parity, "peak_rss_mb": peak, "worker_seconds": seconds,
            "quantization": {"precision": args.precision,
                             "method": "none" if args.precision in ("fp32", "fp16") else
                             "MatMulNBits weight-only, block 32, symmetric (builder default), accuracy_level 4 on CPU"},
            "details": {"execution_provider": args.ep, "provider_options": PROVIDER_OPTIONS[args.ep],
                        "ort_format": ort_files, "mobile_usability": usability,
                        **({} if ort_files else {"ort_format_skipped": "the model is over the ORT format's 2 GiB "
                                                 "limit (a flatbuffer); genai loads model.onnx + data"}),
                        "nnapi_selectable_by_genai": False,
                        "parity_execution_provider": "cpu"}}


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser("ONNX export worker")
    parser.add_argument("--precision", required=True, choices=PRECISIONS)
    parser.add_argument("--ep", default="cpu", choices=EXECUTION_PROVIDERS)
    args = parser.parse_args(argv)
    result = run(args)
    return finish(args, result)


if __name__ == "__main__":
    raise SystemExit(main())
