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
parity through MNN.llm.

Tokenizer (facts seen with llmexport 0.0.5 and MNN 3.6.1).  Given a tokenizer.json, llmexport
writes tokenizer.mtok, MNN's copy of the Hugging Face tokenizers pipeline (it gave transformers'
ids on the parity prompts; export/README.md says where it does not); real checkpoints ship one.
Without it (the tiny checkpoints carry only a SentencePiece tokenizer.model, see export/tiny.py)
it writes the older tokenizer.txt, whose pieces have "▁" turned into " " while MNN's loader
still turns spaces into "▁", so every space became three byte tokens.  `_stage_source`
therefore hands llmexport a tokenizer.json made by transformers.  Separately, llmexport guesses the ids MNN puts before every text by encoding
"A" and assuming one token follows BOS; in a vocabulary without a "▁A" piece that guess also
takes "▁" (tiny-llama: [1, 329] instead of [1]), and for Gemma it found none (gemma-3-270m,
tiny-gemma3: [] instead of BOS [2]), so `_fix_prefix` sets them from transformers.

Gemma 3: llmexport 0.0.5 gives its sliding-window (local) layers the global RoPE base;
`_local_rope_for_gemma3` corrects that (figures at REFUSED_ARCHITECTURES).  Parity catches the
fault at 16 bits through a relative logit bound (top-1 agreement alone does not: 98.4% on
tiny-gemma3 without the correction)."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError

from runtimes.mnn_guard import ATTEMPTS, BLOCKED_MODULES, block_telemetry

from .catalogue import min_top1
from .worker import finish, worker_parser

QUANT_BITS = (4, 8, 16)
# Parity's top-1 agreement threshold per quant_bit, unless the recipe sets min_top1.  There is no
# float export to hold to exact parity: llmexport's most precise form (quant_bit 16) has fp16
# linear weights and bf16 embeddings.  Seen on the tiny random checkpoints (129 positions):
# int8 88.4% (llama), 94.6% (qwen2), 93.0% (phi3); 16-bit 98.5% (llama, rel. logit diff 0.02).
# 16 bits must also keep the relative logit difference within parity's bf16 tolerance (5e-2).
MIN_TOP1 = {4: 0.6, 8: 0.8, 16: 0.95}
# Gemma 3: llmexport 0.0.5 builds one Rotary from rope_theta (the global base) for every layer;
# only its gemma4 path gives the sliding-window layers their own.  Measured on tiny-gemma3 (local
# base 1e4, global 1e6, window 16) at quant_bit 16: relative logit difference 0.24 (max |dlogit|
# 3.85, yet 98.4% top-1); with `_local_rope_for_gemma3` 0.00052, as with equal bases (0.00048).
# Gemma 3 4B's text config scales the global RoPE linearly (rope_scaling factor 8), a rope type
# llmexport's Rotary ignores: `_local_rope_for_gemma3` applies it too (tiny Gemma 3 with that
# scaling at 16 bits: rel. logit difference 0.00055, tests/test_export_mnn.py).  The published
# gemma-3-4b checkpoint (Gemma3ForConditionalGeneration, multimodal) stays refused: llmexport's
# handling of its vision wrapper was not tried here (no checkpoint); a text-only Gemma3ForCausalLM
# checkpoint of it (SOURCE=..., e.g. `python -m export random-checkpoint --model gemma-3-4b`) is
# exported.  The refusal looks at the checkpoint's own config.json when SOURCE is given.
REFUSED_ARCHITECTURES = {
    "Gemma3ForConditionalGeneration": "llmexport 0.0.5 was not verified on Gemma 3's multimodal checkpoint "
                                      "(its RoPE scaling is corrected here; the text-only Gemma3ForCausalLM, "
                                      "e.g. gemma-3-270m or a text-only 4B checkpoint passed as SOURCE=, is supported)",
}

def _refusal(architecture: str) -> str | None:
    return REFUSED_ARCHITECTURES.get(architecture)


def _source_architecture(source: Path | None) -> str | None:
    """The architecture a checkpoint folder declares (config.json), or None."""
    try:
        return json.loads((Path(source) / "config.json").read_text())["architectures"][0] if source else None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


class MnnExporter:
    format = "mnn"
    env = "mnn"

    def variant(self, options: dict[str, Any]) -> str:
        bits = int(options.get("quant_bit", 4))
        if bits not in QUANT_BITS:
            raise HarnessError(f"MNN quant_bit {bits} is not supported; use one of {', '.join(map(str, QUANT_BITS))}.")
        return f"int{bits}" if bits < 16 else "bf16"

    def preflight(self, options: dict[str, Any], recipe: Any = None, source: Path | None = None) -> None:
        why = _refusal(_source_architecture(source) or getattr(recipe, "architecture", ""))
        if why:
            raise HarnessError(
                f"MNN export of {recipe.key} is refused: {why}. Use FORMAT=gguf, "
                "onnx or executorch for it (FORMAT=all skips MNN for it with this note)."
            )

    def min_top1(self, options: dict[str, Any]) -> float:
        threshold, measured = min_top1(options, self.variant(options))
        return threshold if measured else MIN_TOP1.get(int(options.get("quant_bit", 4)), threshold)

    def plan(self, options: dict[str, Any]) -> list[str]:
        return [f"llmexport.py --export mnn --quant_bit {options.get('quant_bit', 4)} (llmexport 0.0.5, MNN 3.6.1), "
                "with MNN's telemetry and pip self-install blocked",
                f"parity through MNN.llm: top-1 agreement >= {self.min_top1(options)} vs transformers"
                + (" and relative logit difference <= 0.05" if int(options.get("quant_bit", 4)) == 16 else "")]

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        return ["-m", "export.mnn", "--source", str(source), "--out", str(out), "--result", str(result),
                "--quant-bit", str(int(options.get("quant_bit", 4))), "--min-top1", str(self.min_top1(options))]


# --- the worker (mnn toolchain env) -------------------------------------------------------------


def run_llmexport(source: Path, dst: Path, quant_bit: int, fix_gemma3_rope: bool = True,
                  source_dtype_embeddings: bool = True) -> None:
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
    if fix_gemma3_rope:
        _local_rope_for_gemma3()
    if source_dtype_embeddings:
        _embeddings_in_source_dtype()
    try:
        code = compile(script.read_text(), str(script), "exec")
        exec(code, {"__name__": "__main__", "__file__": str(script)})
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _embeddings_in_source_dtype() -> None:
    """Keep the token embedding in the checkpoint's dtype in llmexport's model (saves memory, same output).

    llmexport 0.0.5's load_model converts every non-Linear module with a weight to float32 ("norm's
    weight as float for export"), the embedding too: for Gemma 3 4B a 2.7 GB float32 copy of a
    262k x 2560 table that the bf16 checkpoint already holds (mapped), alive through the whole
    export.  Its float32 reaches two places, both kept here: the lookup's output (the example
    input of the graph trace; cast back, and a bf16 value is exact in float32) and a tied lm_head,
    which shares the Parameter and so was quantized from float32 (quantized here from float32 one
    of llmexport's own row chunks at a time).  The embedding itself never enters the graph and is
    written as bf16 or quantized from `.float()`.  The artifact is byte-identical (tested on a bf16
    tiny Gemma 3, tied); the memory is measured on the random Gemma 3 4B (export/README.md).
    Needs llmexport's `utils` folder on sys.path.
    """
    import torch
    import utils.mnn_converter as converter
    import utils.torch_utils as torch_utils
    import utils.transformers as llm_transformers

    kept: set[int] = set()  # data pointers llmexport would have made float32

    def keep(self: Any) -> Any:  # only llmexport's per-module visit calls Embedding.float() directly
        kept.add(self.weight.data_ptr())
        return self

    torch.nn.Embedding.float = keep
    lookup = llm_transformers.Embedding.forward

    def forward(self: Any, input_ids: Any) -> Any:
        return lookup(self, input_ids).float()

    llm_transformers.Embedding.forward = forward
    quant = converter.torch_quant

    def quant_as_float_if_kept(weight: Any, *args: Any) -> Any:
        if weight.dtype == torch.float32 or weight.data_ptr() not in kept:
            return quant(weight, *args)
        rows = max(1, torch_utils._QUANT_MAX_ELEMENTS // weight.shape[1])  # llmexport's own chunks
        parts = [quant(weight[i:i + rows].float(), *args) for i in range(0, weight.shape[0], rows)]
        return torch.cat([q for q, _ in parts]), torch.cat([a for _, a in parts])

    converter.torch_quant = quant_as_float_if_kept


def _local_rope_for_gemma3() -> None:
    """Give Gemma 3's sliding-window layers their own RoPE base in llmexport's model (see REFUSED_ARCHITECTURES).

    llmexport's model forward already uses `rotary_full` for full-attention layers and `rotary`
    for sliding ones when `rotary_full` is set (its gemma4 path); for a config with
    rope_local_base_freq this sets both: `rotary_full` keeps the global base, `rotary` gets the
    local one.  Needs llmexport's `utils` folder on sys.path.
    """
    import copy

    import torch
    import utils.model as llm_model

    load = llm_model.LlmModel.from_pretrained.__func__

    def from_pretrained(cls: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        model = load(cls, path, *args, **kwargs)
        origin = getattr(model.config, "origin_config", None)
        local_base = getattr(getattr(origin, "text_config", origin), "rope_local_base_freq", None)
        sliding = getattr(model.config, "sliding_attn_layers", None)
        if local_base and sliding and getattr(model, "rotary_full", None) is None:
            local = copy.deepcopy(model.rotary)
            local.rope_theta = local_base
            exponents = torch.arange(0, local.rotary_dim, 2, dtype=torch.float32) / local.rotary_dim
            local.theta = 1.0 / (local_base ** exponents)
            model.rotary_full, model.rotary = model.rotary, local
            print(f"[mnn] RoPE base {local_base:g} for the sliding-window layers, {model.rotary_full.rope_theta:g} "
                  "for the others (llmexport 0.0.5 gives every layer the global one)", flush=True)
        # Linear RoPE scaling (Gemma 3 4B: factor 8 on the global layers only, as transformers does):
        # llmexport's Rotary has no "linear" type and leaves the frequencies unscaled.
        scaling = getattr(getattr(origin, "text_config", origin), "rope_scaling", None) or {}
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "linear" and float(scaling.get("factor", 1.0)) != 1.0:
            factor = float(scaling["factor"])
            global_rotary = model.rotary_full if getattr(model, "rotary_full", None) is not None else model.rotary
            global_rotary.theta = global_rotary.theta / factor
            print(f"[mnn] linear RoPE scaling {factor:g} on the global layers (llmexport 0.0.5 ignores it)", flush=True)
        return model

    llm_model.LlmModel.from_pretrained = classmethod(from_pretrained)


def _stage_source(source: Path, tokenizer: Any, stage: Path) -> Path:
    """`source` as llmexport should see it: with a tokenizer.json (see the module docstring)."""
    if (source / "tokenizer.json").is_file() or not getattr(tokenizer, "is_fast", False):
        return source
    stage.mkdir()
    for path in source.iterdir():
        (stage / path.name).symlink_to(path.resolve())
    tokenizer.backend_tokenizer.save(str(stage / "tokenizer.json"))  # the tokenizer parity's reference uses
    return stage


def _bos_prefix(tokenizer: Any) -> list[int] | None:
    """The ids transformers puts before any text (BOS or nothing), or None if it also appends some."""
    full = list(tokenizer("A")["input_ids"])
    plain = list(tokenizer("A", add_special_tokens=False)["input_ids"])
    cut = len(full) - len(plain)
    return full[:cut] if cut >= 0 and full[cut:] == plain else None


def _fix_prefix(path: Path, prefix: list[int]) -> list[int] | None:
    """Set the prefix ids in a tokenizer.mtok / tokenizer.txt header; llmexport's guess if it differed, else None.

    The header's first three text lines are "magic type", "n_special n_stop n_prefix" and those ids.
    """
    data = path.read_bytes()
    magic, counts, ids, rest = data.split(b"\n", 3)
    n_special, n_stop, n_prefix = (int(x) for x in counts.split())
    values = ids.split()
    kept, old = values[: n_special + n_stop], [int(x) for x in values[n_special + n_stop:]]
    if old == prefix:
        return None
    counts = f"{n_special} {n_stop} {len(prefix)}".encode()
    ids = b" ".join([*kept, *(str(t).encode() for t in prefix)]) + (b" " if ids.endswith(b" ") else b"")
    path.write_bytes(b"\n".join([magic, counts, ids, rest]))
    return old


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

    from .parity import EXACT_REL_TOL, check, stored_reference, summary

    out = Path(args.out)
    tools = {"llmexport": version("llmexport"), "MNN": getattr(MNN, "version", lambda: version("MNN"))()
             if callable(getattr(MNN, "version", None)) else version("MNN"),
             "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    with tempfile.TemporaryDirectory(prefix="mnn-", dir=out.parent) as scratch_name:
        scratch = Path(scratch_name)
        started = time.monotonic()
        # The reference in a process of its own, in the source's dtype (a 4B source in float32 here,
        # beside llmexport's own copy, would not fit a 24 GiB machine).
        print("[mnn] parity reference: the source in transformers (its own dtype) in a separate process", flush=True)
        reference = stored_reference(Path(args.source), scratch)
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.source)
        print(f"[mnn] llmexport --export mnn --quant_bit {args.quant_bit} (telemetry blocked)", flush=True)
        # In a child process (guarded the same way): after llmexport ran in-process, MNN.llm in
        # that process gave wrong logits (global MNN state the converter leaves behind).
        import subprocess

        staged = _stage_source(Path(args.source), tokenizer, scratch / "source")
        child = subprocess.run([sys.executable, "-m", "export.mnn", "--llmexport-only", "--source", str(staged),
                                "--out", str(scratch / "mnn"), "--quant-bit", str(args.quant_bit),
                                "--result", str(scratch / "attempts.json"),
                                *(["--keep-global-rope"] if args.keep_global_rope else []),
                                *(["--float-embeddings"] if args.float_embeddings else [])],
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
        prefix_fix = None
        tokenizer_file = out / json.loads(config.read_text()).get("tokenizer_file", "tokenizer.mtok")
        prefix = _bos_prefix(tokenizer)
        if tokenizer_file.is_file() and prefix is not None:
            guessed = _fix_prefix(tokenizer_file, prefix)
            if guessed is not None:
                prefix_fix = {"llmexport": guessed, "set": prefix}
                print(f"[mnn] {tokenizer_file.name}: prefix ids {guessed} -> {prefix} (as transformers adds)",
                      flush=True)
        for name in ("export_args.json", "llm.mnn.json"):  # the exporter's own notes, not the model
            (out / name).unlink(missing_ok=True)
        if not (out / "llm.mnn").is_file():
            raise SystemExit(f"llmexport wrote no llm.mnn (it wrote: {sorted(p.name for p in produced.iterdir())})")
        print("[mnn] parity through MNN.llm", flush=True)
        candidate = MnnCandidate(out)
        # 16 bits is as close to float as llmexport goes: hold it to the bf16 logit tolerance too.
        max_rel = EXACT_REL_TOL["bf16"] if int(args.quant_bit) == 16 else None
        parity = check(reference, candidate, exact=False, min_top1=float(args.min_top1), max_rel=max_rel)
        label = f"int{args.quant_bit}" if int(args.quant_bit) < 16 else "fp16 weights, bf16 embeddings"
        print(f"[mnn] {label}: {summary(parity)}", flush=True)
        seconds = time.monotonic() - started
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
    return {"tools": tools, "parity": parity, "peak_rss_mb": peak, "worker_seconds": seconds,
            "quantization": {"quant_bit": int(args.quant_bit), "quant_block": 64, "method": "llmexport weight quant, asymmetric"},
            "details": {"telemetry_guard": {"blocked_modules": list(BLOCKED_MODULES),
                                            "attempts": [list(a) for a in ATTEMPTS]},
                        "tokenizer": {"file": tokenizer_file.name, "staged_tokenizer_json": staged != Path(args.source),
                                      "prefix_fixed": prefix_fix}}}


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser("MNN export worker")
    parser.add_argument("--quant-bit", default="4")
    parser.add_argument("--llmexport-only", action="store_true", help=argparse.SUPPRESS)
    # Without _local_rope_for_gemma3: for the test that shows parity catches llmexport's own behaviour.
    parser.add_argument("--keep-global-rope", action="store_true", help=argparse.SUPPRESS)
    # llmexport's own float32 embedding: for the test that shows keeping the source dtype changes no byte.
    parser.add_argument("--float-embeddings", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.llmexport_only:
        block_telemetry()
        run_llmexport(Path(args.source), Path(args.out), int(args.quant_bit), not args.keep_global_rope,
                      not args.float_embeddings)
        Path(args.result).write_text(json.dumps([list(a) for a in ATTEMPTS]))
        return 0
    result = run(args)
    return finish(args, result)


if __name__ == "__main__":
    raise SystemExit(main())
