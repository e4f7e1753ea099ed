"""`python -m export --model KEY --format gguf|executorch|onnx|mnn|all [--source PATH] [--dry-run]`.

What `make export MODEL=... FORMAT=... SOURCE=...` runs.  Errors are HarnessError sentences.
`python -m export random-checkpoint --model KEY --out DIR`: a random-weight checkpoint with the
recipe's architecture, for measuring export at real size (export/random_checkpoint.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.errors import HarnessError


def _sigterm_interrupts() -> None:
    """SIGTERM (a `kill`, a job scheduler) unwinds like Ctrl-C, so the staging folder is removed."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def random_checkpoint(argv: list[str]) -> int:
    from .random_checkpoint import ARCHITECTURES

    parser = argparse.ArgumentParser(
        prog="python -m export random-checkpoint",
        description="A Hugging Face checkpoint with a recipe's architecture and random bf16 weights, for "
                    "measuring export at real size (never accuracy); made in the gguf toolchain env.")
    parser.add_argument("--model", required=True, help=f"one of {', '.join(ARCHITECTURES)}")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tiny", action="store_true", help="a tiny config of the same architecture")
    args = parser.parse_args(argv)
    try:
        from eval.errors import unknown_name

        from .env import run_in_env
        from .pipeline import check_free_space

        if args.model not in ARCHITECTURES:
            raise unknown_name("model", args.model, ARCHITECTURES)
        out = args.out.expanduser().resolve()
        if out.exists():
            raise HarnessError(f"{out} exists already; remove it or name another folder.")
        if not args.tiny:
            from .random_checkpoint import bf16_bytes

            check_free_space(out.parent, bf16_bytes(args.model) + (64 << 20), f"the random {args.model} checkpoint")
        run_in_env("gguf", ["-m", "export.random_checkpoint", "--model", args.model, "--out", str(out),
                            *(["--tiny"] if args.tiny else [])], what=f"Making the random {args.model} checkpoint")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    from .catalogue import RECIPES

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["random-checkpoint"]:
        return random_checkpoint(argv[1:])

    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a model recipe to on-device formats, each checked against its source model.",
    )
    parser.add_argument("--model", required=True, help=f"recipe key: {', '.join(RECIPES)}")
    parser.add_argument("--format", default="all", help="gguf, executorch, onnx, mnn, a comma list, or all")
    parser.add_argument("--source", type=Path, default=None,
                        help="a local Hugging Face checkpoint folder instead of the hub / packaged source")
    parser.add_argument("--variant", default=None,
                        help="override the recipe's quantization, e.g. Q8_0 or F16 for gguf")
    parser.add_argument("--out", type=Path, default=None, help="artifacts root (default: ./artifacts)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    try:
        from .pipeline import ARTIFACTS, export

        export(args.model, args.format, args.source, dry_run=args.dry_run, variant=args.variant,
               root=args.out or ARTIFACTS)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept. Run the same command again.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    _sigterm_interrupts()
    raise SystemExit(main())
