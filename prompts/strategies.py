"""Strategies turn a User into Requests and the Completions back into routines.

- `single-pass` (the paper's protocol): the whole history in one prompt, "exactly N routines",
  output constrained to the routines schema.  The history is cut to the context budget from
  the oldest session on, and the cut is recorded.
- `incremental` (model-first): each session is read once, when it happens, one user turn at a
  time; the model decides every setting value with short multiple-choice questions whose
  choices are what the patterns of prompts/fields.py propose (the numbers said, in digits or
  words; the category words; "none") and never decide; the deterministic aggregator of
  prompts/aggregate.py then builds the profile.  Each turn's window is the shared prefix of
  its questions (`cache_prefix`), so a question costs a few tokens.
- `hybrid` (what `incremental` was before): the pattern extractor of prompts/rules.py fixes
  what it recognises and the model answers only for the settings left open.
- `rules`: the same aggregation over the pattern extractor alone, no model: the baseline row.

A strategy never runs a model: the caller runs `plan.requests` on any runtime and hands the
completions to `finish`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from eval.errors import HarnessError, unknown_name
from eval.parse import parse_routines
from eval.schema import Routine, Session, User, compact, routines_json_schema
from runtimes.base import Completion, GenerationSettings, Request

from . import render
from .aggregate import ProfileAggregator
from .fields import FIELDS, NONE, Field, devices_named, propose, settings_meant
from .rules import extract_settings, mentions_device


@dataclass(frozen=True)
class Budget:
    """How many prompt tokens fit, and how to count them (the engine's tokenizer if known)."""

    context_tokens: int = 8192
    count: Callable[[str], int] = field(default=lambda text: len(text) // 3 + 1)


@dataclass
class Plan:
    requests: list[Request]
    # sha256 of the rendered prompts (one text, or all of them joined), for provenance.
    prompt_sha256: str
    # Anything about how the prompt was built that a reader of the results must know.
    notes: dict[str, Any] = field(default_factory=dict)
    # What the strategy needs back in finish() (not written to results).
    private: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    routines: list[Routine]
    # The model's raw text (incremental: the per-session outputs, one per line).
    output: str
    parse_errors: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    name: str
    needs_model: bool
    instruction: bool  # its prompts are instructions (an instruct model gets them in its chat template)

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan: ...

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome: ...


class SinglePass:
    name = "single-pass"
    needs_model = True
    # An instruction ("write the routines as JSON"): an instruct model reads it in its chat template.
    instruction = True
    tokens_per_routine = 160  # compact JSON of a full routine is ~100-130 tokens

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        max_tokens = self.tokens_per_routine * n_routines + 32
        blocks = [render.session_block(s) for s in user.sessions]
        kept = len(blocks)
        prompt = self._render(blocks, n_routines, dropped=0)
        # Drop the oldest sessions until the prompt and the answer fit; say so in the prompt.
        while kept > 1 and budget.count(prompt) + max_tokens > budget.context_tokens:
            kept -= 1
            prompt = self._render(blocks[-kept:], n_routines, dropped=len(blocks) - kept)
        request = Request(
            prompt=prompt,
            json_schema=routines_json_schema(n_routines, min_routines=n_routines),
            settings=GenerationSettings(max_tokens=max_tokens, temperature=settings.temperature, seed=settings.seed),
        )
        notes = {"sessions_total": len(blocks), "sessions_in_prompt": kept, "truncated": kept < len(blocks)}
        return Plan([request], render.sha256(prompt), notes)

    @staticmethod
    def _render(blocks: list[str], n_routines: int, dropped: int) -> str:
        note = f"({dropped} older sessions were left out: they did not fit the model's context.)\n" if dropped else ""
        return render.template("single_pass.txt").substitute(
            sessions="\n".join(blocks), n_routines=n_routines, truncation_note=note
        )

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        text = completions[0].text
        parsed = parse_routines(text)
        return Outcome(parsed.routines, text, parsed.errors, {"repairs": parsed.repairs, "dropped": parsed.dropped})


class _Questions:
    """What `incremental` and `hybrid` share: multiple-choice questions about each session (one
    per setting asked, its choices the candidate values and "none"), whose answers become each
    session's settings (a later answer about a setting replaces an earlier one), and the
    deterministic aggregation of prompts/aggregate.py over those."""

    name = ""
    needs_model = True
    # Cloze questions ("So the TV volume is set to" + a choice), not instructions: every model
    # continues the raw text, as lm-evaluation-harness scores multiple choice.  Measured, dev
    # users 0-2, SmolLM2 135M Instruct: in its chat template 0 of 3 users exact (a new turn after
    # a half sentence: "-" for most categories); raw, 2 of 3 exact.
    instruction = False

    def session_requests(
        self, session: Session, settings: GenerationSettings
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[Field, dict[str, Any], Request]]]:
        """The settings fixed without the model, and (field, choice text -> value, request) per question."""
        raise NotImplementedError

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        found, questions = [], []
        for index, session in enumerate(user.sessions):
            settings_found, asked = self.session_requests(session, settings)
            found.append(settings_found)
            questions += [(index, *q) for q in asked]
        requests = [q[3] for q in questions]
        digest = render.sha256("\n\x00".join(r.prompt or "" for r in requests))
        notes = {"sessions_total": len(user.sessions), "questions": len(requests), **self.notes()}
        return Plan(requests, digest, notes, private={"questions": questions, "found": found})

    def notes(self) -> dict[str, Any]:
        return {}

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        questions = plan.private["questions"]
        if len(completions) != len(questions):
            # An error, not parse errors for the missing answers: a row scored on part of the answers
            # would look finished and `--resume` would never redo it.  Raised before this user's row is
            # written, so the rows already written stay, and `--resume` runs this user again.
            raise HarnessError(
                f"The runtime returned {len(completions)} completions for {len(questions)} questions of user "
                f"{user.index}; every question needs its answer. This is a runtime bug: rerun with --resume, "
                "and if it happens again, report it with the runtime's name."
            )
        per_session = [json.loads(json.dumps(found)) for found in plan.private["found"]]
        errors: list[str] = []
        lines = []
        for (session_index, f, choices, _), completion in zip(questions, completions):
            answer = completion.text.rstrip("\n")
            lines.append(f"{user.sessions[session_index].session_id}\t{f.device}.{f.name}\t{answer.strip()}")
            if answer not in choices:
                errors.append(f"session {user.sessions[session_index].session_id}: {f.device}.{f.name}: "
                              f"answer {answer!r} is not one of the choices, ignored")
            elif choices[answer] is not None:
                per_session[session_index].setdefault(f.device, {})[f.name] = choices[answer]
        aggregator = ProfileAggregator()
        for session, settings in zip(user.sessions, per_session):
            aggregator.update(session.meta, settings)
        return Outcome(aggregator.profile(n_routines), "\n".join(lines), errors,
                       {"sessions": per_session})


def _choices(candidates: list[Any]) -> dict[str, Any]:
    """Choice text -> value: the candidates, then none."""
    return {" " + render_value(v): v for v in candidates} | {" " + NONE: None}


class Incremental(_Questions):
    """Model-first: each session read once, and the model decides every setting value.

    The session is read one user turn at a time, in a short window: the user's turn, the
    assistant's answer after it, and the assistant's question before it when the turn answers
    it ("Which volume?" "Thirty.").  The patterns (prompts/fields.py) only propose: which devices
    a sentence may be about (names and nicknames; a sentence naming none is about the one
    before), which of a device's numeric settings the window's words may name ("louder",
    "degrees"; all of them when none does), and the candidate values (every number said in the
    session in the setting's range, in digits or words; every category word said, in whatever
    sense).  For each setting of a device its sentences say a candidate value for, the model
    answers one multiple-choice question, the candidates or none (see `question`), reading the
    window with the numbers said in words written in digits.  A later turn's answer replaces
    an earlier one (a correction turns later); "none" replaces nothing.  No value is ever fixed
    without the model.  The window is its questions' shared prefix (`cache_prefix`): after it,
    each question costs its few tokens and its answer's."""

    name = "incremental"

    def session_requests(
        self, session: Session, settings: GenerationSettings
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[Field, dict[str, Any], Request]]]:
        turns = render.session_turns(session)
        whole = render.dialogue(turns)
        proposals = dict(propose(whole))
        questions = []
        for window, about in windows(turns):
            text = render.dialogue(window)
            # The model sees numbers said in words as digits, as its choices write them ("sixty-five"
            # -> "65"): a number is then copied from where it was said, not only from a confirmation.
            shared = render.template("incremental_window.txt").substitute(dialogue=render.digits(text))
            meant = {f for device in about for f in settings_meant(device, text)}
            for f, candidates in proposals.items():
                if f.device not in about or not f.said_in(about[f.device]) or (f.numeric and f not in meant):
                    continue
                choices = {spoken(f, v): v for v in [*candidates, None]}
                request = Request(
                    prompt=shared + question(f),
                    choices=tuple(choices),
                    settings=GenerationSettings(max_tokens=choice_tokens(choices), temperature=settings.temperature,
                                                seed=settings.seed),
                    cache_prefix=shared,
                )
                questions.append((f, choices, request))
        return {}, questions


def windows(turns: list[tuple[str, str]]) -> list[tuple[list[tuple[str, str]], dict[str, str]]]:
    """(window, device -> what the user's turn says about it) for each user turn that names a
    device, or answers an assistant's question that does.

    What a turn says about a device is its sentences that name it, and the sentences after
    them that name no device ("Put the telly on. Volume forty."); a turn that starts without a
    device name answers the assistant's question before it, and carries the devices of its last
    sentence that names any.  "Leave the speaker alone." says no value about the speaker."""
    out = []
    for i, (role, text) in enumerate(turns):
        if role != "user":
            continue
        before = turns[i - 1] if i > 0 and turns[i - 1][0] != "user" else None
        after = turns[i + 1] if i + 1 < len(turns) and turns[i + 1][0] != "user" else None
        current: list[str] = []
        if before is not None:
            current = next((d for d in map(devices_named, reversed(_sentences(before[1]))) if d), [])
        about: dict[str, list[str]] = {}
        answered = False
        for index, sentence in enumerate(_sentences(text)):
            named = devices_named(sentence)
            answered = answered or (index == 0 and not named and bool(current))
            current = named or current
            for device in current:
                about.setdefault(device, []).append(sentence)
        if not about:
            continue
        window = ([before] if answered else []) + [turns[i]] + ([after] if after else [])
        out.append((window, {device: " ".join(said) for device, said in about.items()}))
    return out


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+|\.{2,}\s*", text.strip()) if s]


# How each question ends, and how its choices start.  The grammar admits any tokenization of a
# choice and the answer is the greedy path through it, so the first token decides, and a short
# piece that begins a choice can outscore every whole word: Gemma writes a number as a bare " "
# token and then digits, so after "... is set to" the bare space was the likeliest first token
# even for a category question, and the word chosen after it was close to arbitrary (" none" for
# "static mode", " armed" for "disarm the alarm"); after an opening quote, the piece "no" took
# "none" for "Lights warm and static" (measured on 86 category questions of the dev set: 28
# wrong with "none", 2 with "-").  So a number answers after "set to" with a space, a category
# after an opening quote, without one, and a category's "none" is "-".
CATEGORY_NONE = "-"


def question(f: Field) -> str:
    name = "incremental_question.txt" if f.numeric else "incremental_category.txt"
    return render.template(name).substitute(label="security" if f.name == "armed" else f.label)


def spoken(f: Field, value: Any) -> str:
    """A choice as it follows its question: " 47" or " none"; "static", "disarmed" or "-"."""
    if f.numeric:
        return " " + render_value(value)
    if value is None:
        return CATEGORY_NONE
    if f.name == "armed":
        return "armed" if value else "disarmed"
    return render_value(value)


class Hybrid(_Questions):
    """Patterns first (the design `incremental` had before it became model-first): the pattern
    extractor of prompts/rules.py fixes what it recognises, and the model answers one
    multiple-choice question only for each setting left open whose device the session mentions
    (choosing among the values said in the session, or "none")."""

    name = "hybrid"

    def __init__(self) -> None:
        examples = "".join(
            render.template("fields_example.txt").substitute(
                dialogue=render.dialogue(example["dialogue"]),
                answers="\n".join(
                    f"{f.label}: {render_value(example['settings'].get(f.device, {}).get(f.name))}" for f in FIELDS
                ),
            )
            for example in render.extraction_examples()
        )
        self.prefix = render.template("fields_prefix.txt").substitute(examples=examples.rstrip("\n") + "\n\n")

    def notes(self) -> dict[str, Any]:
        return {"prefix_sha256": render.sha256(self.prefix)}

    def session_requests(
        self, session: Session, settings: GenerationSettings
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[Field, dict[str, Any], Request]]]:
        found = compact(extract_settings(session))
        text = render.dialogue(render.session_turns(session))
        # Every number said stays a choice for every open field, even one the patterns gave to another
        # field: "the speaker the same as the TV" sets two fields to one number.
        numbers = render.numbers_said(text)
        questions = []
        for f in FIELDS:
            if f.name in found.get(f.device, {}) or not mentions_device(f.device, text):
                continue
            candidates = f.candidates(text, numbers)
            if not candidates:
                continue
            choices = _choices(candidates)
            prompt = self.prefix + render.template("fields_question.txt").substitute(dialogue=text, label=f.label)
            request = Request(
                prompt=prompt.rstrip("\n"),
                choices=tuple(choices),
                settings=GenerationSettings(max_tokens=choice_tokens(choices), temperature=settings.temperature,
                                            seed=settings.seed),
                cache_prefix=self.prefix,
            )
            questions.append((f, choices, request))
        return found, questions


def choice_tokens(choices: Any) -> int:
    """A token budget that fits the longest choice in any tokenizer: a token holds at least one
    byte (a small vocabulary, e.g. a tiny test model's, spells " bass boost" nearly byte by byte)."""
    return max(8, max(len(choice.encode("utf-8")) for choice in choices) + 1)


def render_value(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Rules:
    name = "rules"
    needs_model = False
    instruction = False

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        return Plan([], render.sha256(""), {"extractor": "prompts/rules.py", "sessions_total": len(user.sessions)})

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        aggregator = ProfileAggregator()
        extracted = []
        for session in user.sessions:
            settings = extract_settings(session)
            extracted.append(settings)
            aggregator.update(session.meta, settings)
        output = "\n".join(json.dumps(s) for s in extracted)
        return Outcome(aggregator.profile(n_routines), output, [])


STRATEGIES: dict[str, type] = {"single-pass": SinglePass, "incremental": Incremental, "hybrid": Hybrid,
                               "rules": Rules}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    return STRATEGIES[name]()


__all__ = ["Budget", "Outcome", "Plan", "STRATEGIES", "Strategy", "get_strategy"]
