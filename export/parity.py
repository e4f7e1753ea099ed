"""Parity of an exported artifact with its source model (DESIGN.md, rule 6).

Runs inside a toolchain env (needs torch + transformers).  The reference is the transformers
model, in float32 (`Reference`) or, through `stored_reference` (GGUF, ONNX, ExecuTorch), in the source's own
dtype in a child process whose logits are kept in a file (`StoredReference`): a bf16 4B source
is never held in float32 and is gone before the engine loads the artifact; a checkpoint over 2 GB
gets the two short prompts only.  The candidate is the artifact run by its engine.  Both get the same token
ids (from the checkpoint's tokenizer); whether the engine's own tokenizer agrees is measured
too.  Prompts: a short one, a smart-home sentence, and one longer than the sliding window
(Gemma 3), so the engine's hybrid cache is exercised.

Two measures, recorded in the manifest under "parity":
  - exact (float exports): next-token logits at every prompt position within a relative
    tolerance (max |a - b| / max |a|) and the 16 greedy tokens after each prompt identical;
  - quantized: top-1 agreement, the share of prompt positions where the artifact's argmax
    equals the float model's, at least `min_top1`; greedy tokens are reported, not required.
    An exporter whose most precise form is still not float (MNN: fp16 weights, bf16
    embeddings) also passes `max_rel`, a bound on the relative logit difference: top-1 alone
    missed a wrong RoPE base in Gemma 3's local layers (98.4% top-1, rel. diff 0.24).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

GREEDY_TOKENS = 16
EXACT_REL_TOL = {"f32": 5e-3, "f16": 2e-2, "bf16": 5e-2}

PROMPTS = (
    "The capital of France is",
    "When it rains in the evening, the user closes the blinds and sets the TV volume to",
)
_LONG = ("On weekday mornings the thermostat goes to twenty two degrees, the kettle starts at six and the "
         "kitchen lights come on at half brightness. In the evening the living room lamps turn warm white, the "
         "blinds close when it rains and the TV volume stays at fifteen during the news. ")


class Candidate(Protocol):
    def logits(self, ids: list[int]) -> Any:
        """Next-token logits at every position of `ids`, a [len(ids), vocab] float array."""

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """The n greedy tokens after `ids` (no stopping at end of text)."""

    def tokenize(self, text: str) -> list[int] | None:
        """The engine's own token ids for `text` (with BOS as the model adds it), or None if it has no tokenizer."""


@dataclass
class Prompt:
    name: str
    text: str
    ids: list[int]


class Reference:
    """The source checkpoint in transformers (float32 unless `dtype` says otherwise), with its
    logits and greedy tokens cached.  `short`: only the two short prompts (a multi-GB model: the
    long prompt's logits alone are positions x vocabulary floats, and its forward pass minutes)."""

    def __init__(self, checkpoint: Path, max_tokens: int = 1024, dtype: str = "float32", short: bool = False) -> None:
        import torch
        import transformers as tf

        torch.manual_seed(0)
        self.torch = torch
        self.dtype = dtype
        self.tokenizer = tf.AutoTokenizer.from_pretrained(checkpoint)
        self.model = tf.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
        config = self.model.config
        self.window = int(getattr(config, "sliding_window", None) or 0)
        limit = min(int(getattr(config, "max_position_embeddings", 2048)), max_tokens) - GREEDY_TOKENS - 8
        texts = [("short", PROMPTS[0]), ("sentence", PROMPTS[1])]
        self.prompts = [Prompt(name, text, self._encode(text)) for name, text in texts]
        if not short:
            long_len = min(max(64, self.window + 32), limit)
            long_text = _LONG
            while len(self._encode(long_text)) < long_len:
                long_text += _LONG
            ids = self._encode(long_text)[:long_len]
            self.prompts.append(Prompt(f"long ({long_len} tokens, window {self.window})", self.tokenizer.decode(
                ids, skip_special_tokens=True), ids))
        self._logits: dict[int, Any] = {}
        self._greedy: dict[int, list[int]] = {}

    def save(self, path: Path) -> None:
        """Every prompt's logits (float32) and greedy tokens into one .npz, for StoredReference."""
        import json

        import numpy as np

        arrays = {f"logits_{i}": self.logits(i) for i in range(len(self.prompts))}
        meta = {"window": self.window, "dtype": self.dtype,
                "prompts": [{"name": p.name, "text": p.text, "ids": p.ids, "greedy": self.greedy(i)}
                            for i, p in enumerate(self.prompts)]}
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def logits(self, i: int) -> Any:
        if i not in self._logits:
            with self.torch.no_grad():
                out = self.model(self.torch.tensor([self.prompts[i].ids]))
            self._logits[i] = out.logits[0].float().numpy()
        return self._logits[i]

    def greedy(self, i: int, n: int = GREEDY_TOKENS) -> list[int]:
        if i not in self._greedy:
            torch = self.torch
            with torch.no_grad():
                out = self.model(torch.tensor([self.prompts[i].ids]), use_cache=True)
                tokens: list[int] = []
                for _ in range(n):
                    token = int(out.logits[0, -1].argmax())
                    tokens.append(token)
                    if len(tokens) == n:
                        break
                    out = self.model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
            self._greedy[i] = tokens
        return self._greedy[i]


class StoredReference:
    """A Reference saved by `python -m export.parity` in a process of its own: the source model's
    memory is given back before the engine loads the artifact (a 4B model in transformers and in
    llama.cpp at once does not fit a 24 GiB laptop)."""

    def __init__(self, path: Path) -> None:
        import json

        import numpy as np

        self._data = np.load(path)
        meta = json.loads(bytes(self._data["meta"]).decode())
        self.window = int(meta["window"])
        self.dtype = meta["dtype"]
        self.prompts = [Prompt(p["name"], p["text"], list(p["ids"])) for p in meta["prompts"]]
        self._greedy = [list(p["greedy"]) for p in meta["prompts"]]

    def logits(self, i: int) -> Any:
        return self._data[f"logits_{i}"]

    def greedy(self, i: int, n: int = GREEDY_TOKENS) -> list[int]:
        return self._greedy[i][:n]


# A checkpoint bigger than this on disk gets the two short prompts only (a 4B model's long-prompt
# logits alone are ~1 GB, and its forward pass minutes on 2 cores).
SHORT_ABOVE_BYTES = 2_000_000_000


def checkpoint_bytes(folder: Path) -> int:
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.rglob("*") if p.is_file())


def stored_reference(checkpoint: Path, scratch: Path, max_tokens: int | None = None) -> StoredReference:
    """The source model's logits and greedy tokens, computed by transformers in its own dtype in a
    child process (`python -m export.parity`) that exits before the caller goes on, so the source
    model's memory is free before an engine loads the artifact."""
    import subprocess
    import sys

    path = Path(scratch) / "reference.npz"
    short = checkpoint_bytes(checkpoint) > SHORT_ABOVE_BYTES
    cmd = [sys.executable, "-m", "export.parity", "--checkpoint", str(checkpoint), "--out", str(path),
           "--dtype", source_dtype(checkpoint), *(["--short"] if short else []),
           *(["--max-tokens", str(max_tokens)] if max_tokens else [])]
    result = subprocess.run(cmd)
    if result.returncode != 0 or not path.is_file():
        raise SystemExit(f"computing the parity reference in transformers failed (exit {result.returncode})")
    return StoredReference(path)


def source_dtype(checkpoint: Path) -> str:
    """The checkpoint's own dtype (config.json torch_dtype / dtype), float32 when it says none."""
    import json

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype") or (config.get("text_config") or {}).get("torch_dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def check(reference: Reference, candidate: Candidate, *, exact: bool, rel_tol: float = EXACT_REL_TOL["f32"],
          min_top1: float = 0.9, max_rel: float | None = None) -> dict[str, Any]:
    """Compare `candidate` with `reference` on the fixed prompts; the figures plus "passed"."""
    import numpy as np

    rows = []
    agree = total = 0
    worst_rel = worst_abs = 0.0
    greedy_ok = tokens_ok = True
    for i, prompt in enumerate(reference.prompts):
        ref = reference.logits(i)
        got = np.asarray(candidate.logits(prompt.ids), dtype=np.float32)
        if got.shape[-1] > ref.shape[-1]:
            got = got[:, : ref.shape[-1]]  # padded vocabularies (extra rows never chosen)
        diff = float(np.abs(ref - got[: len(ref), : ref.shape[-1]]).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-6)
        same = int((ref.argmax(-1) == got.argmax(-1)).sum())
        ref_greedy = reference.greedy(i)
        got_greedy = [int(t) for t in candidate.greedy(prompt.ids, GREEDY_TOKENS)]
        prefix = next((k for k, (a, b) in enumerate(zip(ref_greedy, got_greedy)) if a != b), len(ref_greedy))
        engine_ids = candidate.tokenize(prompt.text) if prompt.name in ("short", "sentence") else None
        tok_match = None if engine_ids is None else list(engine_ids) == prompt.ids
        rows.append({
            "prompt": prompt.name, "tokens": len(prompt.ids), "max_abs_diff": round(diff, 6),
            "rel_diff": round(rel, 7), "top1_agreement": round(same / len(prompt.ids), 4),
            "greedy_matching_prefix": prefix, "greedy_reference": ref_greedy, "greedy_artifact": got_greedy,
            "tokenizer_match": tok_match,
        })
        agree += same
        total += len(prompt.ids)
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, rel)
        greedy_ok &= prefix == len(ref_greedy)
        tokens_ok &= tok_match is not False
    top1 = agree / total
    if exact:
        passed = worst_rel <= rel_tol and greedy_ok and tokens_ok
        criterion = f"rel_diff <= {rel_tol} and {GREEDY_TOKENS} greedy tokens identical on every prompt"
    else:
        passed = top1 >= min_top1 and tokens_ok and (max_rel is None or worst_rel <= max_rel)
        criterion = f"top1_agreement >= {min_top1}" + ("" if max_rel is None else f" and rel_diff <= {max_rel}")
    return {
        "passed": bool(passed), "mode": "exact" if exact else "quantized", "criterion": criterion,
        "top1_agreement": round(top1, 4), "positions": total, "max_abs_diff": round(worst_abs, 6),
        "rel_diff": round(worst_rel, 7), "greedy_identical": bool(greedy_ok), "tokenizer_match": bool(tokens_ok),
        "sliding_window": reference.window, "prompts": rows,
    }


def summary(result: dict[str, Any]) -> str:
    """One line for the console."""
    verdict = "passed" if result["passed"] else "FAILED"
    return (f"parity {verdict} ({result['mode']}): top-1 agreement {result['top1_agreement']:.1%} over "
            f"{result['positions']} positions, max |dlogit| {result['max_abs_diff']:.3g} "
            f"(rel {result['rel_diff']:.2g}), greedy identical: {result['greedy_identical']}; {result['criterion']}")


def main(argv: list[str] | None = None) -> int:
    """python -m export.parity --checkpoint DIR --out FILE.npz [--dtype bfloat16] [--short]"""
    import argparse
    import resource
    import time

    parser = argparse.ArgumentParser(description="Reference logits of a checkpoint for the parity check")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args(argv)
    started = time.monotonic()
    reference = Reference(args.checkpoint, max_tokens=args.max_tokens, dtype=args.dtype, short=args.short)
    reference.save(args.out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[parity] reference ({args.dtype}, {len(reference.prompts)} prompts, "
          f"{sum(len(p.ids) for p in reference.prompts)} positions): {time.monotonic() - started:.0f} s, "
          f"peak RSS {peak:.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
