"""The synthetic sample generator: Table 1 statistics, consistency, determinism, honest labels."""

from __future__ import annotations

import json
import random
import re
import statistics

import pytest

from eval import synth
from eval.dataset import load_folder
from eval.schema import DEVICE_FIELDS, NUMERIC_FIELDS
from eval.synth_phrases import FIELD_REQUESTS, VALUE_WORDS

# The paper's Table 1 and the tolerance each statistic gets over 50 users x 50 sessions.
TABLE_1 = {
    "routines per user": (3.98, 0.3),
    "triggers per routine": (4.98, 0.3),
    "devices per routine": (3.11, 0.3),
    "actions per routine": (8.24, 0.8),
    "messages per session": (9.88, 1.0),
    "routine-driven share": (0.75, 0.05),
}

# Written out here rather than taken from eval.synth, so a wrong rule there fails a test.
SUN_PHASES_AT = {
    "morning": {"before_sunrise", "daylight"},
    "afternoon": {"daylight"},
    "evening": {"daylight", "after_sunset"},
    "night": {"after_sunset", "before_sunrise"},
}


def violations(ctx: dict) -> list[str]:
    tod, sun = ctx.get("time_of_day"), ctx.get("sun_phase")
    weather, temp = ctx.get("weather"), ctx.get("outdoor_temp")
    found = []
    if tod and sun and sun not in SUN_PHASES_AT[tod]:
        found.append(f"{sun} in the {tod}")
    if weather == "snowy" and temp and temp not in ("very cold", "cold"):
        found.append(f"snow when {temp}")
    if weather == "sunny" and sun and sun != "daylight":
        found.append(f"sunny {sun}")
    return found


def matches(meta: dict, triggers: dict) -> bool:
    return all(meta[name] == value for name, value in triggers.items())


def user_text(session) -> str:
    return " ".join(m.text for m in session.messages if m.role.value == "user")


@pytest.fixture(scope="module")
def sample():
    users, labels = synth.generate_sample(50, 50, seed=0)
    routines = [[r.compact() for r in u.routines] for u in users]
    return users, labels, routines


def test_statistics_match_table_1(sample):
    users, _, routines = sample
    flat = [r for rs in routines for r in rs]
    sessions = [s for u in users for s in u.sessions]
    measured = {
        "routines per user": statistics.mean(len(rs) for rs in routines),
        "triggers per routine": statistics.mean(len(r["triggers"]) for r in flat),
        "devices per routine": statistics.mean(len(r["actions"]) for r in flat),
        "actions per routine": statistics.mean(sum(map(len, r["actions"].values())) for r in flat),
        "messages per session": statistics.mean(len(s.messages) for s in sessions),
        "routine-driven share": statistics.mean(bool(s.applied_routines) for s in sessions),
    }
    off = {k: (round(v, 3), TABLE_1[k][0]) for k, v in measured.items() if abs(v - TABLE_1[k][0]) > TABLE_1[k][1]}
    assert not off, f"measured vs Table 1: {off}"
    assert {len(rs) for rs in routines} <= {3, 4, 5}
    assert all(len(s.applied_routines) <= 1 for s in sessions)


def test_contexts_are_consistent(sample):
    users, _, routines = sample
    bad = [(u.index, s.session_id, v)
           for u in users for s in u.sessions for v in violations(s.meta.model_dump(mode="json"))]
    bad += [(i, "routine", v) for i, rs in enumerate(routines) for r in rs for v in violations(r["triggers"])]
    assert not bad, bad[:5]


def test_routines_are_distinguishable_and_drive_their_sessions(sample):
    users, _, routines = sample
    for user, rs in zip(users, routines):
        triggers = [r["triggers"] for r in rs]
        for i, a in enumerate(triggers):
            for b in triggers[i + 1:]:
                # Some field set in both must differ, or one context would match both routines.
                assert any(b.get(k) not in (None, v) for k, v in a.items()), (user.index, a, b)
        for session in user.sessions:
            meta = session.meta.model_dump(mode="json")
            matching = [i for i, t in enumerate(triggers) if matches(meta, t)]
            if session.applied_routines:
                assert matching == session.applied_routines, (user.index, session.session_id)


def test_spontaneous_sessions_mostly_miss_every_routine(sample):
    users, _, routines = sample
    spontaneous = [(s, rs) for u, rs in zip(users, routines) for s in u.sessions if not s.applied_routines]
    assert spontaneous
    hits = sum(any(matches(s.meta.model_dump(mode="json"), r["triggers"]) for r in rs) for s, rs in spontaneous)
    assert hits / len(spontaneous) < 0.1


def test_labels_of_routine_sessions_are_the_routine_actions(sample):
    users, labels, routines = sample
    for user, user_labels, rs in zip(users, labels, routines):
        assert [label["session_id"] for label in user_labels] == [s.session_id for s in user.sessions]
        for session, label in zip(user.sessions, user_labels):
            if session.applied_routines:
                assert label["routine"] == session.applied_routines[0]
                assert label["settings"] == rs[label["routine"]]["actions"]
            else:
                assert label["routine"] is None
                assert 1 <= sum(map(len, label["settings"].values())) <= 8


def test_values_are_in_range(sample):
    _, labels, routines = sample
    settings = [r["actions"] for rs in routines for r in rs] + [lab["settings"] for ls in labels for lab in ls]
    numeric = set(NUMERIC_FIELDS) | {("ac", "fan_speed")}
    for actions in settings:
        for device, values in actions.items():
            for field, value in values.items():
                assert field in DEVICE_FIELDS[device]
                if (device, field) == ("ac", "temperature"):
                    assert 16 <= value <= 30
                elif (device, field) == ("ac", "fan_speed"):
                    assert value in (0, 1, 2, 3)
                elif (device, field) in numeric:
                    assert type(value) is int and 0 <= value <= 100
                elif field == "armed":
                    assert type(value) is bool
                else:
                    assert value in VALUE_WORDS[(device, field)]


def test_every_labelled_value_is_said_by_the_user(sample):
    users, labels, _ = sample
    for user, user_labels in zip(users, labels):
        for session, label in zip(user.sessions, user_labels):
            text = user_text(session)
            for device, values in label["settings"].items():
                for field, value in values.items():
                    if (device, field) in VALUE_WORDS:
                        patterns = VALUE_WORDS[(device, field)][value]
                    else:
                        patterns = [rf"(?<!\d){value}(?!\d)"]
                    assert any(re.search(rf"\b(?:{p})\b", text, re.IGNORECASE) for p in patterns), (
                        user.index, session.session_id, device, field, value, text)


def test_corrections_happen_and_the_label_holds_the_final_value(sample):
    """For fields whose words appear nowhere else, the last user turn naming one of their values
    names the labelled value ("Sorry, I meant Netflix, not YouTube" names both)."""
    users, labels, _ = sample
    fields = [("tv", "input_source"), ("speaker", "equalizer"), ("lights", "mode")]
    corrected = 0
    for user, user_labels in zip(users, labels):
        for session, label in zip(user.sessions, user_labels):
            turns = [m.text for m in session.messages if m.role.value == "user"]
            for device, field in fields:
                if field not in label["settings"].get(device, {}):
                    continue
                named = [{value for value, words in VALUE_WORDS[(device, field)].items()
                          if any(re.search(rf"\b{re.escape(w)}\b", turn, re.IGNORECASE) for w in words)}
                         for turn in turns]
                last = [values for values in named if values][-1]
                assert label["settings"][device][field] in last, (user.index, session.session_id, turns)
                corrected += len(set().union(*named)) > 1
    assert corrected >= 20, "corrections of categorical values should be common"


INLINE_NUMBER_FIX = re.compile(r"\b(\d+)(?:\.\.\. no,|, actually|, no wait, make it|, hmm, a touch more,"
                               r"|\.\.\. no, a bit less,) (\d+)\b")


def test_numbers_corrected_mid_sentence_end_on_the_labelled_value(sample):
    users, labels, _ = sample
    seen = 0
    for user, user_labels in zip(users, labels):
        for session, label in zip(user.sessions, user_labels):
            numbers = {v for values in label["settings"].values() for v in values.values() if type(v) is int}
            for first, final in INLINE_NUMBER_FIX.findall(user_text(session)):
                seen += 1
                assert int(final) in numbers, (user.index, session.session_id, first, final, label["settings"])
    assert seen >= 20, "mid-sentence corrections ('40... no, 47') should be common"


def test_dialogues_alternate_and_read_cleanly(sample):
    users, _, _ = sample
    user_turns = []
    for session in (s for u in users for s in u.sessions):
        roles = [m.role.value for m in session.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert 6 <= len(roles) <= 14
        for message in session.messages:
            assert message.text and message.text == message.text.strip()
            assert message.text[0].isupper() or message.text[0].isdigit(), message.text
            assert not re.search(r"[{}|]|\s[,.]|  ", message.text), message.text
        user_turns += [m.text for m in session.messages if m.role.value == "user"]
    assert len(set(user_turns)) / len(user_turns) > 0.6, "user turns repeat too often"
    assert all(len(templates) >= 4 for templates in FIELD_REQUESTS.values())


def test_characters_are_one_line_sketches(sample):
    users, _, _ = sample
    characters = [u.character for u in users]
    assert all("\n" not in c and 30 < len(c) < 200 and c.endswith(".") for c in characters)
    assert len(set(characters)) > 40


def test_generation_is_a_pure_function_of_its_arguments():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    users = synth.generate_users(3, 5, seed=9)
    assert random.random() == expected, "the global random state must not be used"
    assert users == synth.generate_sample(3, 5, seed=9)[0]
    assert synth.generate_users(2, 5, seed=9) == users[:2]
    assert synth.generate_users(3, 5, seed=10) != users


def test_same_seed_gives_the_same_bytes(tmp_path):
    paths = [synth.write_sample(tmp_path / name, 4, 6, seed) for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    for name in synth.OUTPUT_FILES:
        first, second, other = ((p / name).read_bytes() for p in paths)
        assert first == second, name
        assert first != other, name
    assert sorted(p.name for p in paths[0].iterdir()) == sorted(synth.OUTPUT_FILES)


def test_written_sample_loads_with_line_aligned_labels(tmp_path):
    folder = synth.write_sample(tmp_path / "sample", 3, 7, seed=1)
    users = load_folder(folder)
    assert [len(u.sessions) for u in users] == [7, 7, 7]
    rows = [json.loads(line) for line in (folder / synth.LABELS_FILE).read_text(encoding="utf-8").splitlines()]
    assert [len(row["labels"]) for row in rows] == [7, 7, 7]
    assert users == synth.generate_users(3, 7, seed=1)


def test_main_writes_replaces_a_sample_and_refuses_other_folders(tmp_path, capsys):
    out = tmp_path / "sample"
    assert synth.main(["--users", "2", "--sessions", "3", "--seed", "5", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert synth.main(["--users", "1", "--sessions", "3", "--out", str(out)]) == 0
    assert len(load_folder(out)) == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert synth.main(["--out", str(other)]) == 1
    assert "other things" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folders left behind"
