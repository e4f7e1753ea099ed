"""`python -m device_runner --device host|SERIAL ...`: run the benchmark and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.errors import HarnessError


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_runner",
        description="Run the EdgeWisePersona benchmark on this machine (--device host) or on phones over ADB.",
    )
    parser.add_argument("--device", action="append", default=None,
                        help="'host' for this machine, or a phone's ADB serial / host:port (repeatable)")
    parser.add_argument("--model", default="gemma-3-270m", help="model key(s) from export/recipes.py, comma-separated")
    parser.add_argument("--runtime", default="llamacpp", help="runtime name(s), comma-separated")
    parser.add_argument("--strategy", default="single-pass,incremental",
                        help="single-pass, incremental and/or rules (no model), comma-separated")
    parser.add_argument("--data", default="sample", help="a data folder, hf:OWNER/NAME[@rev], or 'sample'")
    parser.add_argument("--users", default=None, help="user indices: 0,2,5 or 0-3 (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/run"), help="folder for results.jsonl and the report")
    parser.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished rows")
    parser.add_argument("--gguf", type=Path, default=None, help="run this GGUF file instead of the model's artifact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the runtime's)")
    parser.add_argument("--context", type=int, default=None, help="context tokens (default: the recipe's)")
    parser.add_argument("--sample-users", type=int, default=8, help="users in the generated sample (--data sample)")
    parser.add_argument("--sample-sessions", type=int, default=40, help="sessions per user in the generated sample")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        devices = args.device or ["host"]
        if devices != ["host"]:
            raise HarnessError(
                "Phone runs over ADB are not implemented in this version yet; use --device host "
                "(the same plan on this machine)."
            )
        from eval.report import write_report

        from .run import RunOptions, run_host

        options = RunOptions(
            models=_names(args.model), runtimes=_names(args.runtime), strategies=_names(args.strategy),
            data=args.data, users=args.users, out=args.out, resume=args.resume, gguf=args.gguf, seed=args.seed,
            threads=args.threads, context_tokens=args.context, sample_users=args.sample_users,
            sample_sessions=args.sample_sessions, progress=not args.no_progress,
        )
        results = run_host(options)
        md, pngs, text = write_report(results, args.out)
        print(text)
        print(f"Results: {results}\nReport:  {md}\nCharts:  " + ", ".join(str(p) for p in pngs))
        return 0
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. Finished rows are saved; rerun with --resume to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
