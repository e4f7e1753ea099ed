"""The scorer on small hand-computed cases, one per rule of the paper's protocol."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.__main__ import main as eval_main
from eval.schema import Routine
from eval.score import ALL_METRICS, flatten, jaccard, score

MORNING = {"time_of_day": "morning", "day_of_week": "weekday"}
EVENING = {"time_of_day": "evening", "day_of_week": "weekend"}


def r(triggers=None, **actions):
    return {"triggers": dict(triggers or {}), "actions": actions}


def test_flatten_and_jaccard_basics():
    a = r(MORNING, tv={"volume": 10})
    assert flatten(a) == {
        (("triggers", "time_of_day"), "morning"),
        (("triggers", "day_of_week"), "weekday"),
        (("actions", "tv", "volume"), 10),
    }
    b = r({"time_of_day": "morning"}, tv={"volume": 11})
    assert jaccard(a, b) == pytest.approx(1 / 4)  # shared: time_of_day; union: 4 leaves
    assert jaccard({}, {}) == 1.0
    assert jaccard({"x": [1, 2]}, {"x": [1, 2]}) == 1.0  # lists compare as tuples


def test_identity_is_perfect():
    truth = [[r(MORNING, tv={"volume": 10}, ac={"temperature": 20, "mode": "cool"})],
             [r(EVENING, security={"armed": True, "alarm_volume": 50})]]
    m = score(truth, truth).metrics
    assert m["acc.routine_exact"] == m["acc.triggers_exact"] == m["acc.actions_exact"] == 1.0
    assert m["jaccard.flattened"] == 1.0
    assert m["len_diff.avg"] == 0.0
    assert m["mae.tv.volume"] == 0.0 and m["mae.ac.temperature"] == 0.0
    assert m["acc.actions.security.armed"] == 1.0
    assert m["mae.lights.brightness"] is None  # no case -> None, not 0
    assert m["acc.actions.lights.color"] is None


def test_nulls_empty_devices_and_priority_are_unspecified():
    gt = {"triggers": MORNING, "actions": {"tv": {"volume": 10}}, "priority": 1}
    pred = {"triggers": {**MORNING, "weather": None}, "actions": {"tv": {"volume": 10, "brightness": None},
                                                                  "lights": {}, "ac": {"mode": None}},
            "priority": 7}
    m = score([[gt]], [[pred]]).metrics
    assert m["acc.routine_exact"] == 1.0 and m["jaccard.flattened"] == 1.0


def test_predictions_beyond_truth_are_cut_in_model_order():
    gt = [r(MORNING, tv={"volume": 10}), r(EVENING, tv={"volume": 20})]
    wrong = r({"time_of_day": "night"}, speaker={"volume": 5})
    # The perfect copy of gt[1] comes third: it is cut, so gt[1] is not matched exactly.
    preds = [r(MORNING, tv={"volume": 10}), wrong, r(EVENING, tv={"volume": 20})]
    report = score([gt], [preds])
    assert report.n_predicted_routines == 2
    m = report.metrics
    assert m["acc.routine_exact"] == 0.5
    assert m["len_diff.avg"] == 0.0  # after the cut
    # gt[1]'s best among the first two: jaccard with preds[0] is 0/5, with wrong 0/5 -> first (preds[0]).
    assert m["jaccard.flattened"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["mae.tv.volume"] == pytest.approx((0 + 10) / 2)  # gt[1] paired with preds[0]: |20-10|


def test_ties_pick_the_first_maximal_prediction():
    gt = r({"time_of_day": "morning"}, tv={"volume": 10})
    p1 = r({"time_of_day": "morning"}, tv={"volume": 20})  # Jaccard 1/3
    p2 = r({"time_of_day": "morning"}, tv={"volume": 30})  # Jaccard 1/3 too
    assert score([[gt]], [[p1, p2]]).metrics["mae.tv.volume"] == 10
    assert score([[gt]], [[p2, p1]]).metrics["mae.tv.volume"] == 20


def test_one_prediction_may_serve_two_truths():
    gt = [r(MORNING, tv={"volume": 10}), r(MORNING, tv={"volume": 10, "brightness": 50})]
    preds = [r(MORNING, tv={"volume": 10})]
    m = score([gt], [preds]).metrics
    assert m["acc.routine_exact"] == 0.5  # the one prediction is exact for gt[0] only
    assert m["acc.triggers_exact"] == 1.0  # and has the right triggers for both
    assert m["jaccard.flattened"] == pytest.approx((1.0 + 3 / 4) / 2)
    assert m["len_diff.avg"] == 1.0


def test_user_without_predictions_contributes_zeros():
    gt_a = [r(MORNING, tv={"volume": 10})]
    gt_b = [r(EVENING, ac={"mode": "heat"}), r(MORNING, ac={"mode": "cool"})]
    m = score([gt_a, gt_b], [gt_a, []]).metrics
    assert m["acc.routine_exact"] == pytest.approx(1 / 3)
    assert m["jaccard.flattened"] == pytest.approx(1 / 3)
    assert m["len_diff.avg"] == pytest.approx((0 + 2) / 2)
    # Per-field accuracy counts matched ground truths only, as the authors' notebook does.
    assert m["acc.triggers.time_of_day"] == 1.0
    assert m["acc.actions.ac.mode"] is None


def test_categorical_accuracy_counts_only_fields_set_in_truth():
    sunny_evening = {"weather": "sunny", "time_of_day": "evening"}
    gt = [r({"weather": "rainy"}, lights={"color": "warm"}), r(sunny_evening, lights={"mode": "static"})]
    preds = [r({"weather": "rainy"}, lights={"color": "cool", "mode": "static"}),  # J: 1/4 vs gt[0], 1/5 vs gt[1]
             r(sunny_evening, lights={"mode": "dynamic", "color": "warm"})]  # J: 1/5 vs gt[0], 2/5 vs gt[1]
    m = score([gt], [preds]).metrics
    assert m["acc.triggers.weather"] == 1.0
    assert m["acc.triggers.time_of_day"] == 1.0  # one case: gt[1]
    assert m["acc.actions.lights.color"] == 0.0  # one case: gt[0] (paired with preds[0]), wrong
    assert m["acc.actions.lights.mode"] == 0.0  # one case: gt[1] (paired with preds[1]), wrong
    assert m["acc.triggers.sun_phase"] is None


def test_booleans_are_not_numbers_for_mae():
    gt = [r(MORNING, tv={"volume": 10}, security={"alarm_volume": 40})]
    preds = [r(MORNING, tv={"volume": True}, security={"alarm_volume": 43})]
    m = score([gt], [preds]).metrics
    assert m["mae.tv.volume"] is None
    assert m["mae.security.alarm_volume"] == 3


def test_routine_objects_and_dicts_score_the_same():
    raw = r(MORNING, ac={"temperature": 21, "fan_speed": 2}, security={"armed": False})
    as_model = Routine.model_validate(raw)
    assert score([[raw]], [[as_model]]).metrics["acc.routine_exact"] == 1.0


_VALUE = st.one_of(st.integers(0, 100), st.sampled_from(["warm", "cool", "auto", "HDMI1"]), st.booleans())
_ROUTINE = st.builds(
    r,
    st.dictionaries(st.sampled_from(["time_of_day", "weather", "sun_phase"]), st.sampled_from(["a", "b"]),
                    min_size=1),
    tv=st.dictionaries(st.sampled_from(["volume", "brightness"]), _VALUE, min_size=1),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_ROUTINE, min_size=1, max_size=4), min_size=1, max_size=4))
def test_truth_against_itself_is_perfect(truth):
    m = score(truth, truth).metrics
    assert m["acc.routine_exact"] == 1.0
    assert m["jaccard.flattened"] == 1.0
    assert all(m[k] in (0, None) for k in m if k.startswith("mae."))


def test_cli_json_and_table(tmp_path, capsys):
    truth = [[r(MORNING, tv={"volume": 10})], [r(EVENING, ac={"temperature": 22})]]
    preds = [[r(MORNING, tv={"volume": 12})], {"routines": []}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"routines": t}) + "\n" for t in truth))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    assert eval_main(["score", "--routines", str(tmp_path / "r.jsonl"), "--predictions",
                      str(tmp_path / "p.jsonl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["metrics"]) == set(ALL_METRICS)
    assert out["metrics"]["mae.tv.volume"] == 2
    assert out["metrics"]["jaccard.flattened"] == pytest.approx((2 / 4 + 0) / 2)
    assert "scorer_version" in out
    assert eval_main(["score", "--routines", str(tmp_path / "r.jsonl"), "--predictions",
                      str(tmp_path / "p.jsonl")]) == 0
    assert "jaccard.flattened" in capsys.readouterr().out


def test_cli_misaligned_files_say_what_to_do(tmp_path, capsys):
    (tmp_path / "r.jsonl").write_text('{"routines": []}\n{"routines": []}\n')
    (tmp_path / "p.jsonl").write_text("[]\n")
    assert eval_main(["score", "--routines", str(tmp_path / "r.jsonl"), "--predictions",
                      str(tmp_path / "p.jsonl")]) == 2
    assert "write [] for a user with none" in capsys.readouterr().err


# ---- edges: what a bad prediction costs, booleans are not numbers, nothing to score -----------

def test_a_bad_item_keeps_its_slot_among_the_first_n():
    a, b = r(MORNING, tv={"volume": 10}), r(EVENING, tv={"volume": 20})
    # Only one truth: the first of what the model output is kept, and it is not a routine.
    report = score([[a]], [["not a routine", a]])
    assert report.n_predicted_routines == 1
    m = report.metrics
    assert m["acc.routine_exact"] == 0.0 and m["jaccard.flattened"] == 0.0 and m["len_diff.avg"] == 0.0
    assert m["mae.tv.volume"] is None  # a's one prediction is nothing: no pair
    # Two truths: [None, b] are kept (a's exact copy comes third and is cut); a is paired with b.
    m = score([[a, b]], [[None, b, a]]).metrics
    assert m["acc.routine_exact"] == 0.5  # b only
    assert m["jaccard.flattened"] == 0.5  # a vs b: 0 of 6 leaves shared; b vs b: 1
    assert m["mae.tv.volume"] == 5.0  # (|10 - 20| + 0) / 2
    assert m["len_diff.avg"] == 0.0  # two slots for two truths


def test_booleans_and_integers_never_match_each_other():
    gt = r(MORNING, security={"armed": True}, tv={"volume": 1})
    pred = r(MORNING, security={"armed": 1}, tv={"volume": True})
    m = score([[gt]], [[pred]]).metrics
    # shared: time_of_day, day_of_week; union: those 2 + armed True, armed 1, volume 1, volume True
    assert m["jaccard.flattened"] == pytest.approx(2 / 6)
    assert m["acc.routine_exact"] == 0.0 and m["acc.actions_exact"] == 0.0 and m["acc.triggers_exact"] == 1.0
    assert m["acc.actions.security.armed"] == 0.0
    assert m["mae.tv.volume"] is None


def test_a_user_without_truth_has_nothing_to_score():
    report = score([[]], [[r(MORNING, tv={"volume": 10})]])
    m = report.metrics
    for name in ("acc.routine_exact", "acc.triggers_exact", "acc.actions_exact", "jaccard.flattened"):
        assert m[name] is None, name
    assert m["len_diff.avg"] == 0.0  # cut to none: 0 predictions for 0 truths
    assert report.n_truth_routines == 0 and report.n_predicted_routines == 0
    gt = [r(MORNING, tv={"volume": 10})]
    m = score([[], gt], [[], gt]).metrics  # beside a user who has some, only theirs count
    assert m["acc.routine_exact"] == 1.0 and m["jaccard.flattened"] == 1.0 and m["len_diff.avg"] == 0.0


def _score_cli(tmp_path, truth_lines: list[str], pred_lines: list[str], *extra: str) -> int:
    (tmp_path / "r.jsonl").write_text("".join(line + "\n" for line in truth_lines))
    (tmp_path / "p.jsonl").write_text("".join(line + "\n" for line in pred_lines))
    return eval_main(["score", "--routines", str(tmp_path / "r.jsonl"), "--predictions", str(tmp_path / "p.jsonl"),
                      *extra])


def test_cli_validates_raw_predictions_instead_of_coercing(tmp_path, capsys):
    gt0 = {"triggers": {"time_of_day": "morning"}, "actions": {"security": {"armed": True}, "tv": {"volume": 1}}}
    gt1 = {"triggers": {"time_of_day": "evening"}, "actions": {"lights": {"color": "warm"}}}
    bad = {"triggers": {"time_of_day": "morning"}, "actions": {"security": {"armed": 1}, "tv": {"volume": True}}}
    assert _score_cli(tmp_path, [json.dumps({"routines": [gt0, gt1]})], [json.dumps([bad, gt1])], "--json") == 0
    out = json.loads(capsys.readouterr().out)
    m = out["metrics"]
    # bad keeps its slot and scores as nothing: gt0 is paired with gt1's copy (no leaf shared).
    assert m["acc.routine_exact"] == 0.5
    assert m["jaccard.flattened"] == 0.5
    assert m["len_diff.avg"] == 0.0
    assert m["acc.triggers.time_of_day"] == 0.5  # gt0: evening for morning, wrong; gt1 right
    assert m["acc.actions.security.armed"] == 0.0  # gt0's pair has no security block
    assert m["mae.tv.volume"] is None
    assert out["n_predicted_routines"] == 2
    assert out["parse_errors"]["count"] == 1
    [reason] = out["parse_errors"]["reasons"]
    assert "line 1, routine 0" in reason and "actions.security.armed" in reason and "actions.tv.volume" in reason
    assert _score_cli(tmp_path, [json.dumps({"routines": [gt0, gt1]})], [json.dumps([bad, gt1])]) == 0
    text = capsys.readouterr().out
    assert "1 predicted routine could not be read" in text and "actions.security.armed" in text


def test_cli_refuses_ground_truth_that_breaks_the_schema(tmp_path, capsys):
    gt = {"actions": {"security": {"armed": 1}}}
    assert _score_cli(tmp_path, ["[]", json.dumps([gt])], ["[]", "[]"]) == 2
    err = capsys.readouterr().err
    assert "r.jsonl, line 2, routine 0" in err and "actions.security.armed" in err


def test_cli_bad_prediction_lines_name_file_and_line(tmp_path, capsys):
    (tmp_path / "r.jsonl").write_text("[]\n[]\n")
    for content, reason in ((b"[]\n[{\"triggers\": {\n", "malformed JSON"), (b"[]\n[\xff]\n", "not UTF-8"),
                            (b"[]\n7\n", "expected a list of routines")):
        (tmp_path / "p.jsonl").write_bytes(content)
        assert eval_main(["score", "--routines", str(tmp_path / "r.jsonl"), "--predictions",
                          str(tmp_path / "p.jsonl")]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'p.jsonl'}, line 2: " in err and reason in err, err


_VALID_PREDICTIONS = "".join(json.dumps(line) + "\n" for line in (
    [r(MORNING, tv={"volume": 10})],
    {"routines": [r(EVENING, ac={"temperature": 22, "mode": "cool"}), r(MORNING, security={"armed": True})]},
))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(_VALID_PREDICTIONS)), st.lists(st.tuples(st.integers(0, len(_VALID_PREDICTIONS)),
                                                                   st.binary(min_size=1, max_size=3)), max_size=3))
def test_cli_reads_damaged_prediction_files_or_says_why(tmp_path_factory, cut, garbage):
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "r.jsonl").write_text('{"routines": [' + json.dumps(r(MORNING, tv={"volume": 10})) + "]}\n[]\n")
    data = bytearray(_VALID_PREDICTIONS.encode()[:cut])
    for at, junk in garbage:
        data[at:at] = junk
    (folder / "p.jsonl").write_bytes(bytes(data))
    code = eval_main(["score", "--routines", str(folder / "r.jsonl"), "--predictions", str(folder / "p.jsonl"),
                      "--json"])
    assert code in (0, 2)
