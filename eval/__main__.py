"""`python -m eval {synth,score,report}`: the benchmark's own commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .score import ALL_METRICS, score


def _read_routine_lists(path: Path, what: str) -> list[list[Any]]:
    """Each line: a JSON list of routines or an object holding one under "routines"."""
    if not path.is_file():
        raise HarnessError(f"The {what} file '{path}' does not exist.")
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HarnessError(f"{path}, line {number}: malformed JSON ({exc.msg}).") from None
            if isinstance(obj, dict) and isinstance(obj.get("routines"), list):
                obj = obj["routines"]
            if not isinstance(obj, list):
                raise HarnessError(f"{path}, line {number}: expected a list of routines or {{\"routines\": [...]}}.")
            out.append(obj)
    return out


def cmd_score(args: argparse.Namespace) -> int:
    truth = _read_routine_lists(Path(args.routines), "routines")
    preds = _read_routine_lists(Path(args.predictions), "predictions")
    if len(truth) != len(preds):
        raise HarnessError(
            f"{args.routines} has {len(truth)} users but {args.predictions} has {len(preds)} lines; "
            "line n of the predictions must be user n's prediction (write [] for a user with none)."
        )
    report = score(truth, preds)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(f"{report.n_users} users, {report.n_truth_routines} ground-truth routines, "
          f"{report.n_predicted_routines} predicted (after the cut). Scorer: {report.version}")
    width = max(len(n) for n in ALL_METRICS)
    for name in ALL_METRICS:
        value = report.metrics[name]
        print(f"  {name:<{width}}  {'n/a' if value is None else f'{value:.4f}'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    md, pngs, text = write_report(args.results, args.out)
    print(text)
    print(f"Wrote {md} and {', '.join(str(p) for p in pngs)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("synth", help="write a generated sample (see `python -m eval synth --help`)", add_help=False)
    p_score = sub.add_parser("score", help="score predictions against ground-truth routines")
    p_score.add_argument("--routines", required=True, help="routines.jsonl (ground truth, one user per line)")
    p_score.add_argument("--predictions", required=True, help="predictions, line-aligned with --routines")
    p_score.add_argument("--json", action="store_true", help="print one JSON object")
    p_report = sub.add_parser("report", help="Markdown table and PNG charts from a results.jsonl")
    p_report.add_argument("--results", required=True)
    p_report.add_argument("--out", default=None, help="folder for report.md and charts (default: beside results)")
    try:
        if argv and argv[0] == "synth":
            from .synth import main as synth_main

            return synth_main(argv[1:])
        args = parser.parse_args(argv)
        return {"score": cmd_score, "report": cmd_report}[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
