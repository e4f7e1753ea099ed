"""The contract between `python -m export` (pipeline.run_plan) and a format's worker.

A worker runs in its toolchain env as `python -m export.<format> --source CKPT --out DIR
--result FILE [--min-top1 X] ...`, writes the artifact's files into DIR and a JSON result
(tools, parity, quantization, details, ...) into FILE, and exits 3 when parity failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def worker_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the arguments every worker takes; add the format's own."""
    parser = argparse.ArgumentParser(description=f"{description} (run by `python -m export`).")
    parser.add_argument("--source", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--min-top1", default="0.6")
    return parser


def finish(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Write the result; the exit code: 3 when parity failed (None, "not run" on the host, is not a failure)."""
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 3 if result["parity"]["passed"] is False else 0
