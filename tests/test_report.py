"""`python -m eval report`: rows of different data are not mixed in one table unless asked."""

from __future__ import annotations

import json
from pathlib import Path

from eval.__main__ import main as eval_main
from eval.report import data_key, data_labels

TRUTH = [{"triggers": {"time_of_day": "evening"}, "actions": {"tv": {"volume": 10}}}]
WRONG = [{"triggers": {"time_of_day": "morning"}, "actions": {"tv": {"volume": 30}}}]


def _row(user: int, data: dict, routines: list) -> dict:
    return {"case": "m/r/rules/host", "user": user, "model": "m", "runtime": "r", "strategy": "rules",
            "device": {"name": "host"}, "data": data, "truth": TRUTH, "routines": routines,
            "timings": {}, "parse_errors": []}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_rows_of_different_data_are_refused_then_labelled(tmp_path: Path, capsys):
    a, b = {"spec": "data/a"}, {"spec": "hf:owner/set@v1"}
    results = _write(tmp_path / "results.jsonl", [_row(0, a, TRUTH), _row(1, a, TRUTH), _row(0, b, WRONG)])
    assert eval_main(["report", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "holds rows measured on 2 different data (data/a; hf:owner/set@v1)" in err and "--mixed-data" in err
    assert not (tmp_path / "report.md").exists()

    assert eval_main(["report", "--results", str(results), "--mixed-data"]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "| case | data | users | exact |" in table
    # data/a: 2 users, both exact; hf: 1 user, wrong triggers and actions (Jaccard 0 of 4 leaves)
    assert "| m / r / rules | data/a | 2 | 100.0% | 100.0% | 100.0% | 1.000 | 0.00 |" in table
    assert "| m / r / rules | hf:owner/set@v1 | 1 | 0.0% | 0.0% | 0.0% | 0.000 | 0.00 |" in table
    assert "| case | data | tv.volume |" in table and "| case | data | triggers.time_of_day |" in table
    assert "| *" in table and "| original | 200 |" in table  # the paper's rows: its own data


def test_one_data_needs_no_flag_and_has_no_data_column(tmp_path: Path):
    # the generated sample is its size and seed: where it was written does not make it other data
    sample = {"spec": "sample", "users": 2, "sessions": 3, "seed": 0}
    results = _write(tmp_path / "results.jsonl", [_row(0, {**sample, "folder": "out/sample-data"}, TRUTH),
                                                  _row(1, {**sample, "folder": "/abs/out/sample-data"}, TRUTH)])
    assert eval_main(["report", "--results", str(results)]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "| case | users | exact |" in table and "| m / r / rules | 2 | 100.0% |" in table


def test_data_labels_stay_apart_when_two_read_the_same():
    one, two = {"spec": "data/x", "sha256": "1"}, {"spec": "data/x", "sha256": "2"}
    keys = [data_key({"data": one}), data_key({"data": two}), data_key({})]
    labels = data_labels(keys)
    assert labels[keys[2]] == "unknown"
    assert labels[keys[0]].startswith("data/x #") and labels[keys[1]].startswith("data/x #")
    assert labels[keys[0]] != labels[keys[1]]
    assert data_labels([data_key({"data": {"spec": "sample", "users": 8, "sessions": 40, "seed": 3}})]) == {
        '{"seed": 3, "sessions": 40, "spec": "sample", "users": 8}': "sample (8 users x 40 sessions, seed 3)"}


def test_time_per_update_is_wall_over_sessions_and_single_pass_pays_its_whole_wall(tmp_path: Path):
    from eval.report import update_seconds

    row = {**_row(0, {"spec": "d"}, TRUTH), "wall_s": 30.0, "prompt_notes": {"sessions_total": 40}}
    assert update_seconds(row) == 0.75
    assert update_seconds({**row, "strategy": "single-pass", "case": "m/r/single-pass/host"}) == 30.0
    assert update_seconds({**row, "prompt_notes": {}}) is None and update_seconds({**row, "wall_s": None}) is None
    slow = {**_row(1, {"spec": "d"}, TRUTH), "wall_s": 10.0, "prompt_notes": {"sessions_total": 4}}
    results = _write(tmp_path / "results.jsonl", [row, slow])
    assert eval_main(["report", "--results", str(results)]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "| Δlen | cat. acc (avg) | MAE (avg) | s / update |" in table
    assert "| 0.00 | 100.0% | 0.00 | 1.62 |" in table  # the mean of 0.75 and 2.5 s over the two users
