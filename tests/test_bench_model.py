"""The main job end to end with the real default model (Gemma 3 270M through llama.cpp)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.schema import Routine

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: make install-llamacpp")
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "device_runner", "--device", "host", "--data", "sample", "--sample-users", "3",
            "--sample-sessions", "5", "--out", str(out), "--no-progress", *extra]


def test_both_strategies_end_to_end_on_two_users(tmp_path):
    done = subprocess.run(_cli(tmp_path / "out", "--users", "0-1", "--strategy", "single-pass,incremental"),
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["strategy"], r["user"]) for r in rows) == [
        ("incremental", 0), ("incremental", 1), ("single-pass", 0), ("single-pass", 1)]
    for row in rows:
        for routine in row["routines"]:
            Routine.model_validate(routine)
        assert len(row["routines"]) <= len(row["truth"])
        t = row["timings"]
        if t["requests"]:  # incremental asks nothing when the patterns found every setting
            assert t["prefill_tps"] > 0 and t["prompt_tokens"] > 0 and t["peak_rss_mb"] > 100
        assert row["artifact_sha256"] and row["runtime_version"] == "0.3.36"
        assert row["runtime_details"]["n_threads"] >= 1
    assert sum(r["timings"]["requests"] for r in rows if r["strategy"] == "incremental") > 0
    single = [r for r in rows if r["strategy"] == "single-pass"]
    # Constrained decoding: exactly N routines come back and parse without errors.
    assert all(len(r["routines"]) == len(r["truth"]) and not r["parse_errors"] for r in single)
    assert "| gemma-3-270m / llamacpp / incremental | 2 |" in done.stdout
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "routines.png").is_file()


def test_resume_after_a_kill_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "out"
    results = out / "results.jsonl"
    process = subprocess.Popen(_cli(out, "--strategy", "incremental"), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
            time.sleep(0.2)
        assert results.exists(), "the run wrote no row"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = results.read_text().splitlines()
    assert 1 <= len(before) < 3
    done = subprocess.run(_cli(out, "--strategy", "incremental", "--resume"), cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    after = results.read_text().splitlines()
    assert sorted(json.loads(line)["user"] for line in after) == [0, 1, 2]
    assert after[: len(before)] == before  # finished rows untouched
