"""Results file -> Markdown table and PNG charts in the style of the paper's Figures 2-3 and
Tables 2-3, with the paper's published numbers beside the run as labelled reference rows.

A results file is JSONL, one row per user per case (see device_runner/results.py); the rows
that matter here carry `model`, `runtime`, `strategy`, `user`, `truth`, `routines` and
`timings`.  A case is one (model, runtime, strategy, device) combination.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .score import CATEGORICAL_METRICS, MAE_METRICS, ScoreReport, mean_of, score

BASELINES_PATH = Path(__file__).with_name("paper_baselines.json")
REFERENCE_LABEL = "paper, original dataset"
TIMING_FIELDS = ("ttft_ms", "prefill_tps", "decode_tps", "prompt_tokens", "generated_tokens", "peak_rss_mb")


@dataclass
class CaseResult:
    label: str
    report: ScoreReport
    # Median of each timing field over the case's rows (None where no row had it).
    timings: dict[str, float | None]
    parse_errors: int
    wall_s: float | None


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file; a torn last line (a killed run) is skipped."""
    file = Path(path)
    if not file.is_file():
        raise HarnessError(f"No results file at '{file}'. Run `make bench` or `python -m device_runner` first.")
    rows = []
    lines = file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise HarnessError(f"{file}, line {number}: malformed JSON; the results file is damaged.") from None
    return rows


def case_label(row: dict[str, Any]) -> str:
    device = row.get("device", {}).get("name") if isinstance(row.get("device"), dict) else None
    if row.get("model") == "none":
        return f"no model ({row.get('strategy')} baseline)"
    parts = [row.get("model", "?"), row.get("runtime", "?"), row.get("strategy", "?")]
    return " / ".join(str(p) for p in parts + ([device] if device and device != "host" else []))


def summarise(rows: list[dict[str, Any]]) -> list[CaseResult]:
    """Score every case in a results file."""
    cases: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault(case_label(row), []).append(row)
    results = []
    for label, case_rows in cases.items():
        case_rows = sorted(case_rows, key=lambda r: r.get("user", 0))
        report = score([r.get("truth", []) for r in case_rows], [r.get("routines", []) for r in case_rows])
        timings: dict[str, float | None] = {}
        for name in TIMING_FIELDS:
            values = [r["timings"][name] for r in case_rows if (r.get("timings") or {}).get(name) is not None]
            timings[name] = statistics.median(values) if values else None
        walls = [r["wall_s"] for r in case_rows if r.get("wall_s") is not None]
        results.append(
            CaseResult(
                label=label,
                report=report,
                timings=timings,
                parse_errors=sum(len(r.get("parse_errors") or []) for r in case_rows),
                wall_s=sum(walls) if walls else None,
            )
        )
    return results


def load_baselines() -> dict[str, Any]:
    return json.loads(BASELINES_PATH.read_text(encoding="utf-8"))


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.2f}" if kind == "f2" else f"{value:.3f}"


def markdown(cases: list[CaseResult], title: str = "EdgeWisePersona results") -> str:
    baselines = load_baselines()
    lines = [f"# {title}", ""]
    lines += [
        "| case | users | exact | triggers exact | actions exact | Jaccard | Δlen | cat. acc (avg) | MAE (avg) "
        "| TTFT ms | prefill tok/s | decode tok/s | prompt tok | gen tok | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        m, t = case.report.metrics, case.timings
        lines.append(
            f"| {case.label} | {case.report.n_users} | {_fmt(m['acc.routine_exact'], 'pct')} "
            f"| {_fmt(m['acc.triggers_exact'], 'pct')} | {_fmt(m['acc.actions_exact'], 'pct')} "
            f"| {_fmt(m['jaccard.flattened'], 'f3')} | {_fmt(m['len_diff.avg'], 'f2')} "
            f"| {_fmt(mean_of(m, CATEGORICAL_METRICS), 'pct')} | {_fmt(mean_of(m, MAE_METRICS), 'f2')} "
            f"| {_fmt(t['ttft_ms'], 'int')} | {_fmt(t['prefill_tps'], 'int')} | {_fmt(t['decode_tps'], 'f2')} "
            f"| {_fmt(t['prompt_tokens'], 'int')} | {_fmt(t['generated_tokens'], 'int')} | {_fmt(t['peak_rss_mb'], 'int')} |"
        )
    for name, ref in baselines["models"].items():
        lines.append(
            f"| *{name} ({REFERENCE_LABEL})* | 200 | {_fmt(ref['acc.routine_exact'], 'pct')} "
            f"| {_fmt(ref['acc.triggers_exact'], 'pct')} | {_fmt(ref['acc.actions_exact'], 'pct')} "
            f"| {_fmt(ref['jaccard.flattened'], 'f3')} | {_fmt(ref['len_diff.avg'], 'f2')} | | | | | | | | |"
        )
    lines += ["", "Timings are medians over users; TTFT and rates per request, token counts per user.", ""]

    lines += _field_table("Per-field MAE (lower is better; the paper's Table 2)", cases, MAE_METRICS,
                          baselines["table2_mae"], kind="f2", scale=1.0)
    lines += _field_table("Per-field accuracy (the paper's Table 3, actions; and the triggers)", cases,
                          CATEGORICAL_METRICS, baselines["table3_categorical_accuracy_percent"], kind="pct", scale=0.01)
    lines.append(f"Reference rows (*italic*): {baselines['source']}")
    lines.append("")
    return "\n".join(lines)


def _field_table(title: str, cases: list[CaseResult], names: tuple[str, ...], table: dict[str, Any],
                 kind: str, scale: float) -> list[str]:
    short = [n.split(".", 1)[1].replace("actions.", "") for n in names]
    lines = [f"## {title}", "", "| case | " + " | ".join(short) + " |", "|---|" + "---:|" * len(names)]
    for case in cases:
        lines.append(f"| {case.label} | " + " | ".join(_fmt(case.report.metrics[n], kind) for n in names) + " |")
    columns = table["columns"]
    for model, values in table.items():
        if model == "columns":
            continue
        by_name = dict(zip(columns, values))
        cells = [_fmt(by_name[n] * scale, kind) if n in by_name else "" for n in names]
        lines.append(f"| *{model} ({REFERENCE_LABEL})* | " + " | ".join(cells) + " |")
    return lines + [""]


def charts(cases: list[CaseResult], out_dir: str | Path) -> list[Path]:
    """Bar charts like the paper's Figures 2-3 plus the two field tables; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines = load_baselines()["models"]
    labels = [c.label for c in cases] + [f"{n}\n(paper)" for n in baselines]
    runs = [c.report.metrics for c in cases] + list(baselines.values())
    n_run = len(cases)
    paths = []
    for filename, pairs, title in (
        ("routines.png", (("acc.routine_exact", "exact match"), ("jaccard.flattened", "Jaccard")),
         "Routine reconstruction (paper: Figure 2)"),
        ("triggers_actions.png", (("acc.triggers_exact", "triggers exact"), ("acc.actions_exact", "actions exact")),
         "Triggers and actions (paper: Figure 3)"),
    ):
        fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(labels)), 4.5))
        width = 0.38
        for k, (metric, name) in enumerate(pairs):
            xs = [i + (k - 0.5) * width for i in range(len(labels))]
            values = [100 * (r.get(metric) or 0.0) for r in runs]
            bars = ax.bar(xs, values, width, label=name)
            for i, bar in enumerate(bars):
                if i >= n_run:
                    bar.set_alpha(0.45)
                    bar.set_hatch("//")
                ax.annotate(f"{values[i]:.0f}", (bar.get_x() + bar.get_width() / 2, values[i]),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("%")
        ax.set_ylim(0, 105)
        ax.set_title(title + "\nhatched: the paper's numbers, measured on the original dataset", fontsize=10)
        ax.legend()
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    for filename, names, title, scale in (
        ("mae.png", MAE_METRICS, "Per-field MAE (paper: Table 2)", 1.0),
        ("categorical.png", CATEGORICAL_METRICS, "Per-field accuracy % (paper: Table 3)", 100.0),
    ):
        if not cases:
            continue
        fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(names)), 4.5))
        width = 0.8 / len(cases)
        for k, case in enumerate(cases):
            xs = [i + (k - (len(cases) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [scale * (case.report.metrics[n] or 0.0) for n in names], width, label=case.label)
        ax.set_xticks(range(len(names)), [n.split(".", 1)[1] for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: str | Path, out_dir: str | Path | None = None) -> tuple[Path, list[Path], str]:
    """Write report.md and the charts next to the results (or into out_dir)."""
    rows = read_results(results)
    out = Path(out_dir) if out_dir else Path(results).parent
    cases = summarise(rows)
    text = markdown(cases)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    pngs = charts(cases, out)
    md.write_text(text + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n", encoding="utf-8")
    return md, pngs, text
