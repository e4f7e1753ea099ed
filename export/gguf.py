"""GGUF (llama.cpp): llama.cpp's own converter, llama-cpp-python's quantizer, parity through llama.cpp.

Steps (the worker runs them in the gguf toolchain env, export/requirements/gguf.txt):
  0. the parity reference: transformers runs the source in its own dtype (float32 for the tiny
     and dequantized checkpoints, bf16 for a bf16 one) in a child process (export.parity),
     which writes logits and greedy tokens to a file and exits, so its memory is free before
     llama.cpp loads anything;
  1. convert_hf_to_gguf.py (from the llama.cpp source the pinned llama-cpp-python vendors, or
     $LLAMACPP_SRC; lazy: tensor by tensor) writes a float GGUF in the source's dtype (F32 or
     BF16, never an fp32 copy of a bf16 checkpoint) into a scratch folder inside the staging folder;
  2. parity of that float GGUF with transformers: logits within tolerance and 16 greedy
     tokens identical (checks the conversion itself);
  3. llama_model_quantize (Q4_0, Q4_K_M, Q8_0, ...) writes the artifact; a failed call
     leaves a partial file, which is removed; the scratch GGUF is deleted;
  4. parity of the quantized GGUF: top-1 agreement with the source model.
A float variant (F32, F16, BF16) is converted straight into the artifact and checked exactly.
A checkpoint over 2 GB on disk gets the two short parity prompts only (parity.SHORT_ABOVE_BYTES).

    python -m export.gguf --source DIR --out DIR --quantization Q4_K_M --result FILE --llama-cpp SRC
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runtimes.versions import LLAMACPP_VERSION

from .catalogue import describe_min_top1, min_top1
from .worker import finish, worker_parser

FLOAT_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
QUANT_TYPES = ("Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


class GgufExporter:
    """Driver side: what the export will do, and the worker to run in the gguf env."""

    format = "gguf"
    env = "gguf"

    def variant(self, options: dict[str, Any]) -> str:
        quant = str(options.get("quantization", "Q4_K_M")).upper()
        if quant not in FLOAT_TYPES and quant not in QUANT_TYPES:
            from eval.errors import HarnessError

            raise HarnessError(
                f"GGUF quantization '{quant}' is not supported here; use one of "
                f"{', '.join([*FLOAT_TYPES, *QUANT_TYPES])} (VARIANT=... or the recipe's gguf options)."
            )
        return quant

    def plan(self, options: dict[str, Any]) -> list[str]:
        quant = self.variant(options)
        steps = [f"convert_hf_to_gguf.py (llama.cpp source vendored in llama-cpp-python {LLAMACPP_VERSION}, or $LLAMACPP_SRC)"]
        if quant in FLOAT_TYPES:
            steps.append(f"-> {quant} GGUF; parity: logits and 16 greedy tokens vs transformers")
        else:
            steps += ["-> float GGUF in the source's dtype (scratch); parity: logits and 16 greedy tokens vs "
                      "transformers (in a separate process, the source's dtype)",
                      f"llama_model_quantize -> {quant}; parity: {describe_min_top1(options, quant)}"]
        return steps

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        from .env import llamacpp_source

        return ["-m", "export.gguf", "--source", str(source), "--out", str(out), "--result", str(result),
                "--quantization", self.variant(options), "--name", name,
                "--min-top1", str(min_top1(options, self.variant(options))[0]), "--llama-cpp", str(llamacpp_source())]


# --- the worker (gguf toolchain env) ---------------------------------------------------------


def _threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class LlamaCppCandidate:
    """A GGUF run by llama.cpp: every position's logits, greedy tokens, its own tokenizer.

    The KV cache is kept in float32 (llama.cpp's default is f16, which alone moves logits by
    ~5e-2 on a tiny model) and at full size for sliding-window layers.
    """

    def __init__(self, path: Path, n_ctx: int) -> None:
        import llama_cpp
        import numpy as np

        self.np = np
        self.llm = llama_cpp.Llama(
            str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, type_k=0, type_v=0,
            swa_full=True, n_threads=_threads(), verbose=False,
        )

    def logits(self, ids: list[int]) -> Any:
        self.llm.reset()
        self.llm.eval(ids)
        return self.np.array(self.llm.scores[: len(ids)], dtype=self.np.float32)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        tokens: list[int] = []
        while True:
            token = int(self.np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            tokens.append(token)
            if len(tokens) == n:
                return tokens
            self.llm.eval([token])

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def close(self) -> None:
        self.llm.close()


def convert(llama_cpp_src: Path, source: Path, outfile: Path, outtype: str, log: Path) -> None:
    cmd = [sys.executable, str(llama_cpp_src / "convert_hf_to_gguf.py"), str(source), "--outtype", outtype,
           "--outfile", str(outfile)]
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter uses the gguf-py beside it
    with log.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0 or not outfile.is_file():
        outfile.unlink(missing_ok=True)
        tail = log.read_text()[-2000:]
        raise SystemExit(f"convert_hf_to_gguf.py failed (exit {result.returncode}):\n{tail}")


def quantize(src: Path, dst: Path, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = _threads()
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    if rc != 0:
        dst.unlink(missing_ok=True)  # a failed call leaves a partial file
        raise SystemExit(f"llama_model_quantize({quant}) failed with code {rc}")


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


OUTTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp
    import torch
    import transformers

    from .parity import EXACT_REL_TOL, SHORT_ABOVE_BYTES, checkpoint_bytes, check, source_dtype, stored_reference, summary

    quant = args.quantization
    out = Path(args.out)
    source = Path(args.source)
    src = Path(args.llama_cpp)
    stem = f"{args.name}-{quant.lower()}"
    tools = {"llama-cpp-python": llama_cpp.__version__, "transformers": transformers.__version__,
             "torch": torch.__version__.split("+")[0], "convert_hf_to_gguf": str(src)}
    try:
        import gguf
        from importlib.metadata import version

        tools["gguf-py"] = version("gguf")
        del gguf
    except Exception:
        pass
    dtype = source_dtype(source)
    lean = checkpoint_bytes(source) > SHORT_ABOVE_BYTES
    # Inside the staging folder: a killed worker leaves it for the driver to remove with the rest.
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=out) as scratch_name:
        scratch = Path(scratch_name)
        started = time.monotonic()
        print(f"[gguf] parity reference: the source in transformers ({dtype}) in a separate process", flush=True)
        reference = stored_reference(source, scratch)
        n_ctx = max(len(p.ids) for p in reference.prompts) + 32
        parity: dict[str, Any] = {}
        if quant in FLOAT_TYPES:
            artifact = out / f"{stem}.gguf"
            print(f"[gguf] converting to {quant}", flush=True)
            convert(src, source, artifact, FLOAT_TYPES[quant], scratch / "convert.log")
            candidate = LlamaCppCandidate(artifact, n_ctx)
            rel_tol = max(EXACT_REL_TOL[FLOAT_TYPES[quant]], EXACT_REL_TOL[OUTTYPES[dtype]])
            result = check(reference, candidate, exact=True, rel_tol=rel_tol)
            candidate.close()
            print(f"[gguf] {quant}: {summary(result)}", flush=True)
            parity = result
            quantization = {"type": quant, "method": "none (float)"}
        else:
            # The float GGUF in the source's own dtype (bf16 for a bf16 checkpoint: never an fp32
            # copy of it), converted lazily tensor by tensor by llama.cpp's converter.
            outtype = OUTTYPES[dtype]
            floating = scratch / f"{args.name}-{outtype}.gguf"
            print(f"[gguf] converting to {outtype.upper()} (scratch)", flush=True)
            convert(src, source, floating, outtype, scratch / "convert.log")
            candidate = LlamaCppCandidate(floating, n_ctx)
            exact = check(reference, candidate, exact=True, rel_tol=EXACT_REL_TOL[outtype])
            candidate.close()
            del candidate
            print(f"[gguf] {outtype.upper()}: {summary(exact)}", flush=True)
            artifact = out / f"{stem}.gguf"
            print(f"[gguf] quantizing to {quant}", flush=True)
            quantize(floating, artifact, quant)
            floating.unlink()  # the scratch copy's disk back before parity loads the artifact
            candidate = LlamaCppCandidate(artifact, n_ctx)
            quantized = check(reference, candidate, exact=False, min_top1=float(args.min_top1))
            candidate.close()
            print(f"[gguf] {quant}: {summary(quantized)}", flush=True)
            parity = {**{k: v for k, v in quantized.items() if k != "prompts"},
                      "passed": bool(exact["passed"] and quantized["passed"]),
                      "float": exact, "quantized": quantized}
            quantization = {"type": quant, "method": "llama_model_quantize (no imatrix)",
                            "from": f"{outtype.upper()} GGUF"}
        seconds = time.monotonic() - started
    return {"tools": tools, "parity": parity, "quantization": quantization, "peak_rss_mb": _peak_rss_mb(),
            "worker_seconds": seconds, "details": {"kv_cache_for_parity": "f32, full-size SWA",
                                                   "parity_threads": _threads(), "reference_dtype": dtype,
                                                   "parity_prompts": "short two (lean: checkpoint > 2 GB)"
                                                   if lean else "all three"}}


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser("GGUF export worker")
    parser.add_argument("--quantization", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--llama-cpp", required=True)
    args = parser.parse_args(argv)
    result = run(args)
    return finish(args, result)


if __name__ == "__main__":
    raise SystemExit(main())
