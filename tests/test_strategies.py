"""Strategies and the aggregator, with stand-in completions (no model needed)."""

from __future__ import annotations

import json

import pytest

from eval.errors import HarnessError
from eval.schema import Message, Routine, Session, SessionMeta, User
from eval.score import score
from prompts.aggregate import ProfileAggregator
from prompts.fields import FIELDS
from prompts.strategies import STRATEGIES, Budget, get_strategy
from runtimes.base import Completion, GenerationSettings, Timings

EVENING = SessionMeta(time_of_day="evening", day_of_week="weekend", sun_phase="after_sunset", weather="snowy",
                      outdoor_temp="cold")
MORNING = SessionMeta(time_of_day="morning", day_of_week="weekday", sun_phase="daylight", weather="sunny",
                      outdoor_temp="mild")


def test_aggregator_ranks_by_support_and_votes_per_field():
    agg = ProfileAggregator()
    agg.update(MORNING, {"tv": {"volume": 10}})
    for volume in (20, 20, 30):
        agg.update(EVENING, {"tv": {"volume": volume}, "lights": {"color": "warm"} if volume == 30 else {}})
    routines = agg.profile(2)
    assert [r.triggers for r in routines] == [EVENING.as_triggers(), MORNING.as_triggers()]
    # majority value; lights.color was set in 1 of 3 sessions: below half, left out
    assert routines[0].compact()["actions"] == {"tv": {"volume": 20}}
    assert len(agg.profile(1)) == 1


def test_aggregator_state_is_json_and_updates_continue():
    agg = ProfileAggregator()
    agg.update(EVENING, {"ac": {"temperature": 22}})
    restored = ProfileAggregator.from_json(json.loads(json.dumps(agg.to_json())))
    restored.update(EVENING, {"ac": {"temperature": 22, "mode": "heat"}})
    agg.update(EVENING, {"ac": {"temperature": 22, "mode": "heat"}})
    assert restored.profile(1) == agg.profile(1)
    assert restored.profile(1)[0].compact()["actions"] == {"ac": {"temperature": 22}}  # mode: 1 of 2, not more
    restored.update(EVENING, {"ac": {"mode": "heat"}})
    assert restored.profile(1)[0].compact()["actions"] == {"ac": {"temperature": 22, "mode": "heat"}}


def test_field_candidates_are_values_said():
    by_name = {(f.device, f.name): f for f in FIELDS}
    text = "User: Volume to 40... no, make it 47. Warm lights, and the AC on cool at 21."
    numbers = {40, 47, 21}
    assert by_name[("tv", "volume")].candidates(text, numbers) == [40, 47, 21]
    assert by_name[("ac", "temperature")].candidates(text, numbers) == [21]  # 40 and 47 are out of range
    assert by_name[("lights", "color")].candidates(text, numbers) == ["warm", "cool"]
    assert by_name[("tv", "input_source")].candidates(text, numbers) == []
    assert by_name[("security", "armed")].candidates("User: disarm it please", set()) == [False]


def _user(sessions: int = 6) -> User:
    # The patterns read the AC and the corrected volume; the speaker volume ("Low, like 10",
    # an answer to the assistant's question) is left to the model.
    messages = [Message(role="user", text="Heat to 22, fan 2 please. Then TV volume 40... no, 47."),
                Message(role="assistant", text="AC heating to 22 with fan 2; TV volume 47. What speaker volume?"),
                Message(role="user", text="Low, like 10."),
                Message(role="assistant", text="Speaker at 10.")]
    routine = Routine.model_validate({"triggers": EVENING.model_dump(mode="json"),
                                      "actions": {"ac": {"temperature": 22, "mode": "heat", "fan_speed": 2},
                                                  "tv": {"volume": 47}, "speaker": {"volume": 10}}})
    session_list = [Session(session_id=i, meta=EVENING if i % 3 else MORNING, messages=messages,
                            applied_routines=[0] if i % 3 else []) for i in range(sessions)]
    return User(index=0, character="test", routines=[routine], sessions=session_list)


def _answer(request, truth: dict) -> Completion:
    """A stand-in model that knows the truth: picks the true value's choice, else " none"."""
    label = request.prompt.rsplit("\n", 1)[-1].rstrip(":")
    field = next(f for f in FIELDS if f.label == label)
    value = truth.get(field.device, {}).get(field.name)
    text = next((c for c in request.choices if c.strip() == str(value)), " none")
    return Completion(text=text, timings=Timings(prompt_tokens=10, generated_tokens=1))


def test_hybrid_end_to_end_with_an_oracle():
    user = _user()
    strategy = get_strategy("hybrid")
    plan = strategy.plan(user, 1, Budget(), GenerationSettings())
    truth = user.routines[0].compact()["actions"]
    assert plan.requests and all(r.choices and r.prompt.startswith(strategy.prefix) for r in plan.requests)
    asked = {r.prompt.rsplit("\n", 1)[-1] for r in plan.requests}
    assert "speaker volume:" in asked and "AC temperature:" not in asked  # the patterns had that one
    outcome = strategy.finish(user, 1, plan, [_answer(r, truth) for r in plan.requests])
    assert score([user.routines], [outcome.routines]).metrics["acc.routine_exact"] == 1.0
    # A model that answers "none" everywhere leaves only what the patterns found.
    empty = strategy.finish(user, 1, plan, [Completion(" none", Timings()) for _ in plan.requests])
    assert "speaker" not in empty.routines[0].compact()["actions"]
    assert empty.routines[0].compact()["actions"]["tv"] == {"volume": 47}
    bogus = strategy.finish(user, 1, plan, [Completion(" banana", Timings()) for _ in plan.requests])
    assert len(bogus.parse_errors) == len(plan.requests)


def test_single_pass_truncates_oldest_sessions_and_says_so():
    user = _user(sessions=30)
    strategy = get_strategy("single-pass")
    full = strategy.plan(user, 1, Budget(context_tokens=100_000), GenerationSettings())
    assert full.notes["truncated"] is False and "left out" not in full.requests[0].prompt
    cut = strategy.plan(user, 1, Budget(context_tokens=1500), GenerationSettings())
    assert cut.notes["truncated"] is True
    kept = cut.notes["sessions_in_prompt"]
    assert 1 <= kept < 30
    prompt = cut.requests[0].prompt
    assert f"({30 - kept} older sessions were left out" in prompt
    log = prompt.split("\nLog:\n", 1)[1]  # after the worked example
    assert "Session 29 [" in log and "Session 0 [" not in log and f"Session {30 - kept} [" in log
    schema = cut.requests[0].json_schema["properties"]["routines"]
    assert schema["minItems"] == schema["maxItems"] == 1
    assert full.prompt_sha256 != cut.prompt_sha256


def test_rules_strategy_needs_no_model():
    user = _user()
    strategy = get_strategy("rules")
    plan = strategy.plan(user, 1, Budget(), GenerationSettings())
    assert plan.requests == [] and not strategy.needs_model
    outcome = strategy.finish(user, 1, plan, [])
    assert outcome.routines[0].compact()["actions"]["ac"]["temperature"] == 22


def test_unknown_strategy_suggests_the_closest():
    with pytest.raises(HarnessError, match="Unknown strategy 'incremantal'. Did you mean: incremental"):
        get_strategy("incremantal")


def _same_as_the_tv_user() -> User:
    # The patterns give 30 to the TV's volume; the speaker's volume is "the same", said only as 30.
    messages = [Message(role="user", text="Set the TV volume to 30."),
                Message(role="assistant", text="TV volume at 30. Anything for the speaker?"),
                Message(role="user", text="Same as the TV.")]
    session = Session(session_id=3, meta=EVENING, messages=messages, applied_routines=[])
    return User(index=0, character="test", routines=[], sessions=[session])


def test_a_number_the_patterns_gave_one_field_is_still_a_choice_for_another():
    user = _same_as_the_tv_user()
    strategy = get_strategy("hybrid")
    plan = strategy.plan(user, 1, Budget(), GenerationSettings())
    asked = {r.prompt.rsplit("\n", 1)[-1]: r.choices for r in plan.requests}
    assert asked == {"TV brightness:": (" 30", " none"), "speaker volume:": (" 30", " none")}
    answers = [Completion(" 30" if r.prompt.endswith("speaker volume:") else " none", Timings())
               for r in plan.requests]
    outcome = strategy.finish(user, 1, plan, answers)
    assert outcome.extra["sessions"] == [{"tv": {"volume": 30}, "speaker": {"volume": 30}}]
    assert outcome.parse_errors == []


@pytest.mark.parametrize("name", ["incremental", "hybrid"])
def test_fewer_completions_than_questions_is_an_error_not_a_shorter_row(name):
    user = _user()
    strategy = get_strategy(name)
    plan = strategy.plan(user, 1, Budget(), GenerationSettings())
    n = len(plan.requests)
    assert n > 1
    with pytest.raises(HarnessError, match=f"returned {n - 1} completions for {n} questions"):
        strategy.finish(user, 1, plan, [Completion(" none", Timings()) for _ in range(n - 1)])


def test_the_strategies_are_registered():
    assert set(STRATEGIES) == {"single-pass", "incremental", "hybrid", "rules"}
    assert all(get_strategy(name).needs_model for name in ("single-pass", "incremental", "hybrid"))
