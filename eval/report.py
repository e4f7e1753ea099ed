"""Results file -> Markdown table and PNG charts in the style of the paper's Figures 2-3 and
Tables 2-3, with the paper's published numbers beside the run as labelled reference rows.

A results file is JSONL, one row per user per case (see device_runner/results.py); the rows
that matter here carry `model`, `runtime`, `strategy`, `user`, `truth`, `routines`, `timings`
and `data`.  A case is one (model, runtime, strategy, device) combination.  Rows measured on
different data (their `data` field) are not put in one table unless asked (`mixed_data`), and
then each case is split by data and labelled with it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .jsonl import BadLine, lines_of, loads_line
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
    # The data the case ran on (a short label), when the report mixes data; None otherwise.
    data: str | None = None
    # Users whose repeated decode rate spread more than 5% (rows' measurement.unstable), and
    # the largest such spread: the figures of this case are not stable enough to compare.
    unstable_users: list[int] = field(default_factory=list)
    worst_decode_spread: float | None = None
    # Seconds to take in one new session, the mean over the case's users (see `update_seconds`).
    update_s: float | None = None


def update_seconds(row: dict[str, Any]) -> float | None:
    """What one new session costs a user's profile, from a row's wall time: a strategy that reads
    each session once (incremental, hybrid, rules) pays its wall time over its sessions; single-pass
    answers the whole history again, so one update costs its whole wall time."""
    wall, sessions = row.get("wall_s"), (row.get("prompt_notes") or {}).get("sessions_total")
    if not _is_number(wall):
        return None
    if row.get("strategy") == "single-pass":
        return float(wall)
    return float(wall) / sessions if isinstance(sessions, int) and sessions > 0 else None


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file.  A torn last line (a killed run: cut off before its newline) is
    left out, and said so on stderr; any other line that is not a result row stops with a
    sentence naming the file and the line."""
    file = Path(path)
    if not file.is_file():
        raise HarnessError(f"No results file at '{file}'. Run `make bench` or `python -m device_runner` first.")
    damaged = ("the results file is damaged: move that line out of the file (`python -m device_runner ... "
               "--resume` then runs its user again), or report another results file.")
    rows = []
    for number, raw, ended in lines_of(file.read_bytes()):
        if not raw.strip():
            continue
        try:
            row = loads_line(raw)
        except BadLine as exc:
            if not ended:
                print(f"note: {file}, line {number}: the last line is cut off (a killed run) and is left out of "
                      "the report; `python -m device_runner ... --resume` sets it aside and runs that user again.",
                      file=sys.stderr)
                continue
            raise HarnessError(f"{file}, line {number}: {exc}; {damaged}") from None
        problem = row_problem(row)
        if problem:
            raise HarnessError(f"{file}, line {number}: {problem}; {damaged}")
        rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(row: Any) -> str | None:
    """Why `row` is not a result row the report can read (None when it is)."""
    if not isinstance(row, dict):
        return f"not a result row (a JSON object), got {type(row).__name__}"
    if not isinstance(row.get("user"), int) or isinstance(row.get("user"), bool):
        return "field 'user' is not an integer"
    for name in ("truth", "routines"):
        value = row.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            return f"field '{name}' is not a list of routines (JSON objects)"
    timings = row.get("timings")
    if timings is not None:
        if not isinstance(timings, dict):
            return "field 'timings' is not an object"
        bad = [name for name in TIMING_FIELDS if timings.get(name) is not None and not _is_number(timings[name])]
        if bad:
            return f"field 'timings.{bad[0]}' is not a number"
    if row.get("wall_s") is not None and not _is_number(row["wall_s"]):
        return "field 'wall_s' is not a number"
    if row.get("parse_errors") is not None and not isinstance(row["parse_errors"], list):
        return "field 'parse_errors' is not a list"
    return None


def data_key(row: dict[str, Any]) -> str:
    """The data a row was measured on, as canonical JSON ("null" for rows that do not say).  The
    generated sample is its size and seed: where it was written (`folder`) does not change it."""
    data = row.get("data")
    if isinstance(data, dict) and data.get("spec") == "sample":
        data = {k: v for k, v in data.items() if k != "folder"}
    return json.dumps(data, sort_keys=True, default=str)


def data_labels(keys: list[str]) -> dict[str, str]:
    """A short label per distinct data: its spec (a folder, hf:..., or the sample's size and seed),
    with a hash added where two different data would read the same."""
    def label(key: str) -> str:
        data = json.loads(key)
        if isinstance(data, dict) and data.get("spec") == "sample":
            style = f", {data['style']}" if data.get("style") else ""
            return (f"sample ({data.get('users')} users x {data.get('sessions')} sessions, "
                    f"seed {data.get('seed')}{style})")
        if isinstance(data, dict) and isinstance(data.get("spec"), str):
            return data["spec"]
        return "unknown" if data is None else key[:60]

    labels = {key: label(key) for key in keys}
    counts: dict[str, int] = {}
    for text in labels.values():
        counts[text] = counts.get(text, 0) + 1
    return {key: text if counts[text] == 1 else f"{text} #{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            for key, text in labels.items()}


def check_one_data(rows: list[dict[str, Any]], source: str | Path) -> None:
    """Refuse rows of different data in one table: their scores do not compare."""
    keys = sorted({data_key(row) for row in rows})
    if len(keys) > 1:
        labels = data_labels(keys)
        raise HarnessError(
            f"{source} holds rows measured on {len(keys)} different data ({'; '.join(labels[k] for k in keys)}); "
            "one table would mix scores that do not compare. Report each run's results file on its own, or pass "
            "--mixed-data to put them side by side with a data column."
        )


def case_label(row: dict[str, Any]) -> str:
    device = row.get("device", {}).get("name") if isinstance(row.get("device"), dict) else None
    if row.get("model") == "none":
        return f"no model ({row.get('strategy')} baseline)"
    variant = row.get("variant")  # what --artifact ran, e.g. q8_0 (device_runner.run.artifact_variant)
    model = f"{row.get('model', '?')}@{variant}" if variant else row.get("model", "?")
    parts = [model, row.get("runtime", "?"), row.get("strategy", "?")]
    return " / ".join(str(p) for p in parts + ([device] if device and device != "host" else []))


def summarise(rows: list[dict[str, Any]], mixed_data: bool = False) -> list[CaseResult]:
    """Score every case in a results file; with `mixed_data`, a case per (case, data), labelled."""
    cases: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    labels = data_labels(sorted({data_key(row) for row in rows})) if mixed_data else {}
    for row in rows:
        cases.setdefault((case_label(row), labels.get(data_key(row))), []).append(row)
    results = []
    for (label, data), case_rows in cases.items():
        case_rows = sorted(case_rows, key=lambda r: r.get("user", 0))
        report = score([r.get("truth", []) for r in case_rows], [r.get("routines", []) for r in case_rows])
        timings: dict[str, float | None] = {}
        for name in TIMING_FIELDS:
            values = [r["timings"][name] for r in case_rows if (r.get("timings") or {}).get(name) is not None]
            timings[name] = statistics.median(values) if values else None
        walls = [r["wall_s"] for r in case_rows if r.get("wall_s") is not None]
        measured = [r for r in case_rows if isinstance(r.get("measurement"), dict)]
        spreads = [((r["measurement"].get("spread") or {}).get("decode_tps") or {}).get("spread") for r in measured]
        spreads = [x for x in spreads if isinstance(x, (int, float))]
        updates = [u for u in map(update_seconds, case_rows) if u is not None]
        results.append(
            CaseResult(
                label=label,
                report=report,
                timings=timings,
                parse_errors=sum(len(r.get("parse_errors") or []) for r in case_rows),
                wall_s=sum(walls) if walls else None,
                data=data,
                unstable_users=[r.get("user") for r in measured if r["measurement"].get("unstable")],
                worst_decode_spread=max(spreads) if spreads else None,
                update_s=statistics.mean(updates) if updates else None,
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
    mixed = any(case.data is not None for case in cases)
    data_head, data_rule = ("data | ", "---|") if mixed else ("", "")
    lines = [f"# {title}", ""]
    lines += [
        f"| case | {data_head}users | exact | triggers exact | actions exact | Jaccard | Δlen | cat. acc (avg) "
        "| MAE (avg) | s / update | TTFT ms | prefill tok/s | decode tok/s | prompt tok | gen tok | peak RSS MB |",
        f"|---|{data_rule}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        m, t = case.report.metrics, case.timings
        lines.append(
            f"| {case.label} | {_data_cell(case, mixed)}{case.report.n_users} | {_fmt(m['acc.routine_exact'], 'pct')} "
            f"| {_fmt(m['acc.triggers_exact'], 'pct')} | {_fmt(m['acc.actions_exact'], 'pct')} "
            f"| {_fmt(m['jaccard.flattened'], 'f3')} | {_fmt(m['len_diff.avg'], 'f2')} "
            f"| {_fmt(mean_of(m, CATEGORICAL_METRICS), 'pct')} | {_fmt(mean_of(m, MAE_METRICS), 'f2')} "
            f"| {_fmt(case.update_s, 'f2')} | {_fmt(t['ttft_ms'], 'int')} | {_fmt(t['prefill_tps'], 'int')} | {_fmt(t['decode_tps'], 'f2')} "
            f"| {_fmt(t['prompt_tokens'], 'int')} | {_fmt(t['generated_tokens'], 'int')} | {_fmt(t['peak_rss_mb'], 'int')} |"
        )
    for name, ref in baselines["models"].items():
        lines.append(
            f"| *{name} ({REFERENCE_LABEL})* | {'original | ' if mixed else ''}200 | {_fmt(ref['acc.routine_exact'], 'pct')} "
            f"| {_fmt(ref['acc.triggers_exact'], 'pct')} | {_fmt(ref['acc.actions_exact'], 'pct')} "
            f"| {_fmt(ref['jaccard.flattened'], 'f3')} | {_fmt(ref['len_diff.avg'], 'f2')} | | | | | | | | | |"
        )
    lines += ["", "Timings are medians over users; TTFT and rates per request, token counts per user. s / update: "
              "the mean time one new session costs a user's profile (wall time over sessions; single-pass "
              "answers the whole history again, so its whole wall time).", ""]
    for case in cases:
        if case.unstable_users:
            lines += [f"**Unstable timings:** {case.label}{f' ({case.data})' if case.data else ''}: the decode rate of "
                      f"user(s) {', '.join(map(str, case.unstable_users))} spread up to "
                      f"{100 * (case.worst_decode_spread or 0):.1f}% over the repetitions (more than 5%, MLPerf "
                      "Mobile's limit); rerun with more --warmup / --repeat on a quiet machine before comparing.", ""]

    lines += _field_table("Per-field MAE (lower is better; the paper's Table 2)", cases, MAE_METRICS,
                          baselines["table2_mae"], kind="f2", scale=1.0)
    lines += _field_table("Per-field accuracy (the paper's Table 3, actions; and the triggers)", cases,
                          CATEGORICAL_METRICS, baselines["table3_categorical_accuracy_percent"], kind="pct", scale=0.01)
    lines.append(f"Reference rows (*italic*): {baselines['source']}")
    lines.append("")
    return "\n".join(lines)


def _data_cell(case: CaseResult, mixed: bool) -> str:
    return f"{case.data} | " if mixed else ""


def _field_table(title: str, cases: list[CaseResult], names: tuple[str, ...], table: dict[str, Any],
                 kind: str, scale: float) -> list[str]:
    short = [n.split(".", 1)[1].replace("actions.", "") for n in names]
    mixed = any(case.data is not None for case in cases)
    lines = [f"## {title}", "", "| case | " + ("data | " if mixed else "") + " | ".join(short) + " |",
             "|---|" + ("---|" if mixed else "") + "---:|" * len(names)]
    for case in cases:
        lines.append(f"| {case.label} | {_data_cell(case, mixed)}"
                     + " | ".join(_fmt(case.report.metrics[n], kind) for n in names) + " |")
    columns = table["columns"]
    for model, values in table.items():
        if model == "columns":
            continue
        by_name = dict(zip(columns, values))
        cells = [_fmt(by_name[n] * scale, kind) if n in by_name else "" for n in names]
        lines.append(f"| *{model} ({REFERENCE_LABEL})* | " + ("original | " if mixed else "") + " | ".join(cells) + " |")
    return lines + [""]


def _chart_label(case: CaseResult) -> str:
    return case.label if case.data is None else f"{case.label}\n[{case.data}]"


def charts(cases: list[CaseResult], out_dir: str | Path) -> list[Path]:
    """Bar charts like the paper's Figures 2-3 plus the two field tables; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines = load_baselines()["models"]
    labels = [_chart_label(c) for c in cases] + [f"{n}\n(paper)" for n in baselines]
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
            ax.bar(xs, [scale * (case.report.metrics[n] or 0.0) for n in names], width, label=_chart_label(case))
        ax.set_xticks(range(len(names)), [n.split(".", 1)[1] for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: str | Path, out_dir: str | Path | None = None,
                 mixed_data: bool = False) -> tuple[Path, list[Path], str]:
    """Write report.md and the charts next to the results (or into out_dir).  Rows of different
    data are refused unless `mixed_data`, which splits and labels the cases by data."""
    rows = read_results(results)
    if not mixed_data:
        check_one_data(rows, results)
    out = Path(out_dir) if out_dir else Path(results).parent
    cases = summarise(rows, mixed_data)
    text = markdown(cases)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    pngs = charts(cases, out)
    md.write_text(text + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n", encoding="utf-8")
    return md, pngs, text
