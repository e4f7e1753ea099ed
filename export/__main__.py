"""`python -m export --model KEY --format gguf|executorch|onnx|mnn|all [--source PATH] [--dry-run]`.

What `make export MODEL=... FORMAT=... SOURCE=...` runs.  Errors are HarnessError sentences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    from .catalogue import RECIPES

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
    raise SystemExit(main())
