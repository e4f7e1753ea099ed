"""`make bench-export`: size, peak memory and time of every export, a Markdown table from the manifests.

    python -m export.report [--root artifacts] [--models gemma-3-270m,gemma-3-4b] [--out FILE.md]

Reads artifacts/<model>/<format>[-<variant>]/manifest.json (written by `make export`); runs no
export itself.  A (model, format) pair without a manifest gets a row saying how to make it.
Peak memory is the manifest's `peak_rss_mb`: the export's whole process tree sampled from /proc
(export/memory.py: summed Pss; manifests written before 2026-12-06 11:00 UTC summed VmRSS, see
their `details.memory.method`), or, in manifests older still, the worker's own getrusage figure
(marked "worker").
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from .catalogue import ARTIFACTS
from .pipeline import ALL

DEFAULT_MODELS = ("gemma-3-270m", "gemma-3-4b")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _parity(parity: dict) -> str:
    if parity.get("passed") is None:
        return "not run"
    top1 = parity.get("top1_agreement")
    text = f"{top1:.1%}" if isinstance(top1, (int, float)) else "?"
    return f"{text} over {parity.get('positions', '?')} positions"


def rows(root: Path, models: list[str]) -> list[list[str]]:
    table = []
    for model in models:
        folders = sorted((root / model).glob("*/manifest.json")) if (root / model).is_dir() else []
        seen = set()
        for path in folders:
            m = json.loads(path.read_text())
            seen.add(m["format"])
            memory = (m.get("details") or {}).get("memory") or {}
            source_bytes = (m.get("source") or {}).get("bytes") or memory.get("source_bytes")
            peak = m.get("peak_rss_mb") or 0.0
            ratio = f"{peak * 2**20 / source_bytes:.2f}x" if source_bytes else "?"
            how = "tree" if memory.get("tree_peak_mb") else "worker"
            kind = (m.get("source") or {}).get("kind", "?")
            table.append([
                model, m["format"], m["variant"],
                f"{kind}, {_gb(source_bytes)}" if source_bytes else kind,
                _gb(sum(f["bytes"] for f in m["files"])), f"{m['export_seconds']:.0f} s",
                f"{peak * 2**20 / 1e9:.2f} GB ({how})", ratio, _parity(m.get("parity") or {}),
            ])
        for fmt in ALL:
            if fmt not in seen:
                table.append([model, fmt, "-", "-", "-", "-", "-", "-",
                              f"no manifest: `make export MODEL={model} FORMAT={fmt}`"])
    return table


def markdown(table: list[list[str]]) -> str:
    head = ["model", "format", "variant", "source", "artifact", "time", "peak memory", "peak / source", "top-1 (parity)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def machine() -> str:
    import os

    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()}{memory}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ARTIFACTS)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    text = f"Exports on this machine ({machine()}), from the manifests under {args.root}:\n\n"
    text += markdown(rows(args.root, [m.strip() for m in args.models.split(",") if m.strip()])) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
