"""What a result row records about where it came from: code, artifact, machine."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from eval.errors import cache_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@cache
def git_commit() -> str:
    """HEAD of the project checkout; with local changes "-dirty-<sha12 of the diff>", so that
    two different uncommitted states never look alike (rows and --resume key on this)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              timeout=30).stdout
        return head + (f"-dirty-{hashlib.sha256(diff).hexdigest()[:12]}" if diff.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (or of a folder's files, in path order), cached by path, size and mtime."""
    target = Path(path).resolve()
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    stamp = json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    cache_file = cache_dir() / "sha256.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if known.get(stamp):
        return known[stamp]
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    known[stamp] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(cache_file)
    except OSError:
        pass  # the cache is an optimisation only
    return value


@cache
def host_facts() -> dict[str, Any]:
    """The laptop/CI machine, in the same shape as a phone's facts where they overlap."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "name": "host",
        "kind": "host",
        "model": platform.node(),
        "os": platform.platform(),
        "abi": platform.machine(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
    }
