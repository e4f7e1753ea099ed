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


def test_resume_over_other_data_recomputes_the_stale_rows_and_keeps_the_old_ones(tmp_path, capsys):
    """Rows key on everything that changes them: resuming into a folder with other data (here a
    sample with fewer sessions) must not report the first data's rows as the second's."""
    assert _run(tmp_path, "--users", "0-2") == 0
    first = _rows(tmp_path)
    capsys.readouterr()
    assert _run(tmp_path, "--users", "0-2", "--resume") == 0  # same inputs: nothing to redo
    assert _rows(tmp_path) == first and "other inputs" not in capsys.readouterr().err
    assert main(["--device", "host", "--strategy", "rules", "--data", "sample", "--sample-users", "4",
                 "--sample-sessions", "10", "--out", str(tmp_path / "out"), "--no-progress", "--users", "0-1",
                 "--resume"]) == 0
    err = capsys.readouterr().err
    assert "3 row(s) of none/none/rules/host were made from other inputs (data_sha256 differ)" in err
    rows = _rows(tmp_path)
    # Users 0 and 1 were recomputed on the new data; user 2's old row moved aside with the others.
    assert [r["user"] for r in rows] == [0, 1]
    assert {r["identity"]["data_sha256"] for r in rows} == {rows[0]["data"]["sha256"]} != {first[0]["data"]["sha256"]}
    assert all(r["data"]["sessions"] == 10 for r in rows)
    stale = [json.loads(line) for line in (tmp_path / "out" / "results.stale.jsonl").read_text().splitlines()]
    assert stale == first  # nothing deleted: the old rows moved aside


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


class _Steady:
    """A stand-in runtime: answers every request with its first choice (or "[]"), and reports
    a decode rate taken in turn from `rates`, one per repetition of a user's requests."""

    def __init__(self, rates: list[float], n_requests: int) -> None:
        self.rates, self.n_requests, self.calls = rates, n_requests, 0

    def generate(self, requests):
        rate = self.rates[min(self.calls // self.n_requests, len(self.rates) - 1)]
        self.calls += 1
        out = []
        for request in requests:
            text = request.choices[0] if request.choices else "[]"
            out.append(Completion(text, Timings(decode_tps=rate, generated_tokens=5, prompt_tokens=10,
                                                prompt_tokens_evaluated=10, prefill_tps=100.0, total_ms=10.0)))
        return out

    def info(self):
        from runtimes.base import RuntimeInfo

        return RuntimeInfo("steady", "1", {})

    def load(self, artifact):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("rates, unstable", [([90.0, 100.0, 100.0, 101.0], False), ([100.0, 100.0, 93.0], True)])
def test_repeats_report_the_spread_and_flag_an_unstable_decode_rate(tmp_path, rates, unstable):
    """--repeat N on the host: timings are medians, the row records each timing's spread, and a
    decode rate spreading more than 5% over the measured repetitions is flagged (the warm-up
    repetition is not measured)."""
    from device_runner.results import ResultsFile
    from device_runner.run import Case, RunInputs, RunOptions, load_data, run_case
    from prompts.strategies import Budget, get_strategy
    from runtimes import GenerationSettings

    warmup = 1 if len(rates) == 4 else 0
    options = RunOptions(strategies=("single-pass",), data="sample", users="0", sample_users=1, sample_sessions=6,
                         out=tmp_path, progress=False, repeat=len(rates) - warmup, warmup=warmup)
    users, data_info = load_data(options)
    inputs = RunInputs(users, [0], data_info, options, GenerationSettings())
    plan = get_strategy("single-pass").plan(users[0], len(users[0].routines), Budget(8192), GenerationSettings())
    assert plan.requests  # the stand-in is asked something
    runtime = _Steady(rates, len(plan.requests))
    artifact = tmp_path / "x.gguf"
    artifact.write_bytes(b"GGUF")
    results = ResultsFile(tmp_path / "results.jsonl", False)
    run_case(Case("gemma-3-270m", "llamacpp", "single-pass", {"name": "host"}, artifact, 1.0), runtime, inputs, results)
    [row] = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    measured = rates[warmup:]
    m = row["measurement"]
    assert m["repeat"] == len(measured) and m["warmup"] == warmup and m["unstable"] is unstable
    decode = m["spread"]["decode_tps"]
    assert decode["min"] == pytest.approx(min(measured)) and decode["max"] == pytest.approx(max(measured))
    assert decode["spread"] == pytest.approx((max(measured) - min(measured)) / sorted(measured)[len(measured) // 2])
    assert row["timings"]["decode_tps"] == pytest.approx(sorted(measured)[len(measured) // 2])
    assert runtime.calls == len(plan.requests) * len(rates) and m["outputs_differ_between_repeats"] is False
    from eval.report import markdown, summarise

    text = markdown(summarise([row]))
    assert ("**Unstable timings:**" in text) is unstable
    if unstable:
        assert "user(s) 0 spread up to 7.0%" in text


def test_a_phone_run_without_the_adb_extra_is_a_sentence(tmp_path, capsys, monkeypatch):
    """`python -m device_runner --device SERIAL` before `make install-adb`: the install command,
    not a ModuleNotFoundError traceback (the default transport is adb-shell)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "adb_shell" else real(name, *a))
    code = main(["--device", "127.0.0.1:5555", "--strategy", "rules", "--data", "sample", "--sample-users", "1",
                 "--sample-sessions", "3", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "needs the Python package 'adb_shell', which is not installed. Install it with `make install-adb`" in err


def test_an_artifact_given_by_hand_is_its_own_case_beside_the_default(tmp_path):
    """Two quantizations of one model (the packaged Q4_K_M, a Q8_0 export through --artifact) are
    two cases, in the results and the report, not one case whose rows replace each other."""
    from device_runner.run import RunOptions, artifact_variant, case_id
    from eval.report import case_label

    q8 = tmp_path / "gguf-Q8_0" / "gemma-3-270m-q8_0.gguf"
    q8.parent.mkdir()
    q8.write_bytes(b"GGUF")
    assert artifact_variant("gemma-3-270m", RunOptions(artifact=q8)) == "q8_0"
    assert artifact_variant("gemma-3-270m", RunOptions(artifact=q8.parent)) == "gguf-Q8_0"  # a folder: its name
    assert artifact_variant("gemma-3-270m", RunOptions()) is None
    assert case_id("gemma-3-270m", "llamacpp", "incremental", "host", "q8_0") == "gemma-3-270m@q8_0/llamacpp/incremental/host"
    assert case_id("gemma-3-270m", "llamacpp", "incremental", "host") == "gemma-3-270m/llamacpp/incremental/host"
    row = {"model": "gemma-3-270m", "runtime": "llamacpp", "strategy": "incremental", "device": {"name": "host"}}
    assert case_label({**row, "variant": "q8_0"}) == "gemma-3-270m@q8_0 / llamacpp / incremental"
    assert case_label(row) == "gemma-3-270m / llamacpp / incremental"
