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

from runtimes.versions import LLAMACPP_VERSION

from eval.dataset import load_folder
from eval.parse import parse_routines
from eval.schema import Routine
from eval.score import score
from prompts.aggregate import ProfileAggregator

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: make install-llamacpp")
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "device_runner", "--device", "host", "--data", "sample", "--sample-users", "3",
            "--sample-sessions", "5", "--out", str(out), "--no-progress", *extra]


def _check_row(row: dict, users: list) -> None:
    """What a row says must follow from what it holds: its score from its truth and routines, its
    routines from its output (single-pass) or its per-session answers (incremental), its truth from
    the data, its token counts from its requests."""
    user = users[row["user"]]
    assert row["truth"] == [r.compact() for r in user.routines]
    metrics = score([row["truth"]], [row["routines"]]).metrics
    assert row["score"] == {k: metrics[k] for k in ("acc.routine_exact", "jaccard.flattened")}
    t = row["timings"]
    if row["strategy"] == "single-pass":
        assert row["routines"] == [r.compact() for r in parse_routines(row["output"]).routines]
        assert t["requests"] == 1
        assert 1 <= t["generated_tokens"] <= 160 * len(row["truth"]) + 32  # SinglePass's max_tokens
    else:
        aggregator = ProfileAggregator()
        for session, settings in zip(user.sessions, row["extra"]["sessions"], strict=True):
            aggregator.update(session.meta, settings)
        assert row["routines"] == [r.compact() for r in aggregator.profile(len(row["truth"]))]
        assert t["requests"] == row["prompt_notes"]["questions"] == len(row["output"].splitlines())
        assert t["requests"] <= t["generated_tokens"] <= 8 * t["requests"]  # one choice each, 8 tokens at most
    if t["requests"]:
        # a reused KV prefix is not evaluated again, but every request evaluates at least one token
        assert t["requests"] <= t["prompt_tokens_evaluated"] <= t["prompt_tokens"]


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
        assert row["artifact_sha256"] and row["runtime_version"] == LLAMACPP_VERSION
        assert row["runtime_details"]["n_threads"] >= 1
    assert sum(r["timings"]["requests"] for r in rows if r["strategy"] == "incremental") > 0
    single = [r for r in rows if r["strategy"] == "single-pass"]
    # Constrained decoding: exactly N routines come back and parse without errors.
    assert all(len(r["routines"]) == len(r["truth"]) and not r["parse_errors"] for r in single)
    users = load_folder(tmp_path / "out" / "sample-data")
    for row in rows:
        _check_row(row, users)
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
    users = load_folder(out / "sample-data")
    for line in after:
        _check_row(json.loads(line), users)
