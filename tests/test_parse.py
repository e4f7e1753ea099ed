"""Model text -> routines: repairs, field-level drops, and never raising."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from eval.parse import parse_routines
from eval.schema import Routine

GOOD = {"triggers": {"time_of_day": "morning", "weather": "rainy"},
        "actions": {"ac": {"temperature": 21, "mode": "heat"}, "security": {"armed": True}}}
OTHER = {"triggers": {"time_of_day": "night"}, "actions": {"tv": {"volume": 30, "input_source": "Netflix"}}}


def test_wrapped_object_in_fence_with_chatter():
    text = "Sure! Here are the routines:\n```json\n" + json.dumps({"routines": [GOOD, OTHER]}) + "\n```\nHope it helps."
    result = parse_routines(text)
    assert [r.compact() for r in result.routines] == [GOOD, OTHER]
    assert "code fence" in result.repairs and result.dropped == 0


def test_bare_list_and_single_routine():
    assert len(parse_routines(json.dumps([GOOD, OTHER])).routines) == 2
    assert parse_routines("The answer: " + json.dumps(GOOD)).routines[0].compact() == GOOD


def test_trailing_commas_are_repaired():
    text = '{"routines": [{"triggers": {"time_of_day": "night",}, "actions": {"tv": {"volume": 30,},},},]}'
    result = parse_routines(text)
    assert result.routines[0].compact() == {"triggers": {"time_of_day": "night"}, "actions": {"tv": {"volume": 30}}}
    assert "trailing comma" in result.repairs


def test_truncated_final_routine_is_dropped():
    full = json.dumps({"routines": [GOOD, OTHER]})
    cut = full[: full.index('"input_source"')]  # ends inside the second routine
    result = parse_routines(cut)
    assert [r.compact() for r in result.routines] == [GOOD]
    assert any("cut off" in e for e in result.errors)


def test_truncation_after_a_complete_routine_keeps_it():
    full = json.dumps([GOOD, OTHER])
    result = parse_routines(full[: full.rindex("}") + 1])  # the list's "]" is missing
    assert len(result.routines) == 2


def test_invalid_fields_are_dropped_one_by_one_with_reasons():
    bad = {"triggers": {"time_of_day": "noon", "weather": "rainy", "mood": "happy"},
           "actions": {"ac": {"temperature": 45, "mode": "Cool", "fan_speed": "2"},
                       "fridge": {"temp": 3}, "tv": {"volume": True}}}
    result = parse_routines(json.dumps([bad]))
    routine = result.routines[0].compact()
    assert routine == {"triggers": {"weather": "rainy"}, "actions": {"ac": {"mode": "cool", "fan_speed": 2}}}
    assert result.dropped == 5  # time_of_day, mood, temperature, fridge, tv.volume
    joined = "\n".join(result.errors)
    for where in ("triggers.time_of_day", "triggers.mood", "ac.temperature", "actions.fridge", "tv.volume"):
        assert where in joined


def test_enum_spellings_are_normalised():
    text = json.dumps([{"triggers": {"sun_phase": "Before Sunrise", "outdoor_temp": "very_cold"},
                        "actions": {"speaker": {"equalizer": "bass-boost"}, "tv": {"input_source": "youtube"}}}])
    routine = parse_routines(text).routines[0].compact()
    assert routine["triggers"] == {"sun_phase": "before_sunrise", "outdoor_temp": "very cold"}
    assert routine["actions"] == {"speaker": {"equalizer": "bass boost"}, "tv": {"input_source": "YouTube"}}


def test_garbage_gives_no_routines_and_a_reason():
    for text in ("", "no json here", "{{{{", '"just a string"', "[1, 2, 3]", "null", '{"foo": 1}'):
        result = parse_routines(text)
        assert result.routines == []
        assert result.errors, text


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.sampled_from(
        ["morning", "cool", "HDMI1", "bass boost", "x", "triggers", "actions"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["routines", "triggers", "actions", "tv", "ac", "volume", "mode", "time_of_day",
                         "temperature", "armed", "security", "priority", "junk"]), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), _JSONISH.map(json.dumps),
                 _JSONISH.map(lambda v: json.dumps(v)[: max(1, len(json.dumps(v)) // 2)])))
def test_parse_never_raises_and_returns_valid_routines(text):
    result = parse_routines(text)
    for routine in result.routines:
        assert isinstance(routine, Routine)
        assert Routine.model_validate(routine.model_dump()) == routine
    # Every drop is counted once and said once: a field or routine dropped as invalid ("..., dropped")
    # or the routine the output was cut off inside.
    said = [e for e in result.errors if e.endswith(", dropped") or e.startswith("dropped the last routine")]
    assert result.dropped == len(said)


def test_a_cut_inside_something_that_holds_no_routines_drops_nothing():
    # Closed as {"x": {"y": {"z": {}}}}: cut three levels deep, but there is no routine to drop.
    result = parse_routines('{"x": {"y": {"z": {}')
    assert result.routines == [] and result.errors == ["the JSON object has no 'routines' list"]
    assert result.dropped == 0


def test_an_item_that_is_not_a_routine_keeps_its_place_among_the_first_n():
    """The scorer keeps the first N of what the model output; a bad item must not let a later
    routine move up into those N (it parses as an empty routine, which matches nothing)."""
    from eval.score import score

    good = {"triggers": {"time_of_day": "morning"}, "actions": {"tv": {"volume": 10}}}
    late = {"triggers": {"time_of_day": "night"}, "actions": {"tv": {"volume": 30}}}
    parsed = parse_routines(json.dumps({"routines": [good, "oops", late]}))
    assert len(parsed.routines) == 3 and parsed.routines[1].compact() == {}
    assert parsed.dropped == 1 and "routine 1: not an object" in parsed.errors[0]
    truth = [good, late]
    report = score([truth], [[r.compact() for r in parsed.routines]])
    # Only the first two outputs count: `good` matches, the bad item holds the second place.
    assert report.metrics["acc.routine_exact"] == 0.5
