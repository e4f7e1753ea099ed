"""`python -m device_runner --device host`: rows, resume, report and user-facing errors.

These use the no-model `rules` strategy, so they run in seconds; the model's path is
covered by tests/test_bench_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_runner.__main__ import main
from device_runner.run import aggregate_timings, parse_users
from eval.errors import HarnessError
from runtimes.base import Completion, Timings


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["--device", "host", "--strategy", "rules", "--data", "sample", "--sample-users", "4",
                 "--sample-sessions", "12", "--out", str(tmp_path / "out"), "--no-progress", *extra])


def _rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]


def test_run_writes_rows_with_provenance_and_a_report(tmp_path, capsys):
    assert _run(tmp_path, "--users", "0,2") == 0
    rows = _rows(tmp_path)
    assert [r["user"] for r in rows] == [0, 2]
    for key in ("case", "model", "runtime", "strategy", "routines", "truth", "output", "parse_errors", "timings",
                "prompt_sha256", "seed", "git_commit", "scorer_version", "device", "data"):
        assert key in rows[0], key
    assert rows[0]["device"]["name"] == "host"
    out = capsys.readouterr().out
    assert "| no model (rules baseline) | 2 |" in out
    assert (tmp_path / "out" / "report.md").is_file()
    assert (tmp_path / "out" / "routines.png").stat().st_size > 1000


def test_existing_results_need_resume_and_resume_skips_done_rows(tmp_path, capsys):
    assert _run(tmp_path, "--users", "0-1") == 0
    results = tmp_path / "out" / "results.jsonl"
    # A run killed while writing leaves a torn last line.
    with results.open("a") as handle:
        handle.write('{"case": "none/none/rules/host", "user": 2, "rou')
    assert _run(tmp_path, "--users", "0-3") == 2
    assert "--resume" in capsys.readouterr().err
    assert _run(tmp_path, "--users", "0-3", "--resume") == 0
    rows = _rows(tmp_path)
    assert sorted(r["user"] for r in rows) == [0, 1, 2, 3]  # none lost, none twice


def test_bad_data_path_unknown_model_and_bad_users_are_sentences(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--strategy", "rules", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--model", "gemma-3-4", "--out", str(tmp_path / "o2")]) == 2
    assert "Unknown model 'gemma-3-4'. Did you mean: gemma-3-4b?" in capsys.readouterr().err
    assert main(["--runtime", "llama", "--out", str(tmp_path / "o3")]) == 2
    assert "Unknown runtime 'llama'" in capsys.readouterr().err
    assert _run(tmp_path, "--users", "7") == 2
    assert "users 0-3" in capsys.readouterr().err


def test_missing_export_names_the_make_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "qwen-2.5-3b", "--strategy", "incremental", "--data", "sample", "--sample-users", "1",
                 "--sample-sessions", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "make export MODEL=qwen-2.5-3b FORMAT=gguf" in err and "--artifact" in err


def test_one_artifact_goes_with_one_runtime(tmp_path, capsys):
    assert main(["--runtime", "llamacpp,onnxruntime", "--artifact", str(tmp_path), "--strategy", "incremental",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "one --model and one --runtime" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_parse_users():
    assert parse_users("0,2,5", 6) == [0, 2, 5]
    assert parse_users("1-3,0", 6) == [0, 1, 2, 3]
    assert parse_users(None, 3) == [0, 1, 2]
    with pytest.raises(HarnessError, match="not a list"):
        parse_users("a-b", 3)


def test_timings_aggregate_rates_from_totals():
    completions = [
        Completion("", Timings(ttft_ms=100, prefill_tps=100, decode_tps=10, prompt_tokens=50,
                               prompt_tokens_evaluated=50, generated_tokens=11, peak_rss_mb=300, total_ms=1500)),
        Completion("", Timings(ttft_ms=300, prefill_tps=50, decode_tps=20, prompt_tokens=60,
                               prompt_tokens_evaluated=10, generated_tokens=21, peak_rss_mb=310, total_ms=1300)),
    ]
    t = aggregate_timings(completions, load_ms=42.0)
    assert t["prefill_tps"] == pytest.approx(60 / (0.5 + 0.2))  # 60 tokens evaluated in 0.7 s
    assert t["decode_tps"] == pytest.approx(30 / (1.0 + 1.0))  # 30 tokens after the first, 2 s
    assert t["ttft_ms"] == 200 and t["peak_rss_mb"] == 310 and t["prompt_tokens"] == 110
    assert t["load_ms"] == 42.0 and t["requests"] == 2
