"""Strategies turn a User into Requests and the Completions back into routines.

- `single-pass` (the paper's protocol): the whole history in one prompt, "exactly N routines",
  output constrained to the routines schema.  The history is cut to the context budget from
  the oldest session on, and the cut is recorded.
- `incremental`: each session is read once, when it happens: the pattern extractor takes what
  it recognises, and the model answers one short multiple-choice question per setting left
  open (choosing among the values said in the session; prompts/fields.py); the deterministic
  aggregator of prompts/aggregate.py then builds the profile.  The fixed instructions and examples are a shared prefix that an
  engine with a KV cache evaluates once.
- `rules`: the same aggregation over a pattern-matching extractor, no model: the baseline row.

A strategy never runs a model: the caller runs `plan.requests` on any runtime and hands the
completions to `finish`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from eval.errors import unknown_name
from eval.parse import parse_routines
from eval.schema import Routine, Session, User, compact, routines_json_schema
from runtimes.base import Completion, GenerationSettings, Request

from . import render
from .aggregate import ProfileAggregator
from .fields import FIELDS, NONE, Field
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

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan: ...

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome: ...


class SinglePass:
    name = "single-pass"
    needs_model = True
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


class Incremental:
    """Each session read once: the pattern extractor first, then one multiple-choice question
    to the model for every setting the patterns left open but the session could have set
    (its device is mentioned and a candidate value was said); see fields.py and rules.py."""

    name = "incremental"
    needs_model = True

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

    def session_requests(
        self, session: Session, settings: GenerationSettings
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[Field, dict[str, Any], Request]]]:
        """The patterns' settings, and (field, choice text -> value, request) for each open field."""
        found = compact(extract_settings(session))
        text = render.dialogue(render.session_turns(session))
        taken = {v for fields in found.values() for v in fields.values() if type(v) is int}
        numbers = render.numbers_said(text) - taken
        questions = []
        for f in FIELDS:
            if f.name in found.get(f.device, {}) or not mentions_device(f.device, text):
                continue
            candidates = f.candidates(text, numbers)
            if not candidates:
                continue
            choices = {" " + render_value(v): v for v in candidates} | {" " + NONE: None}
            prompt = self.prefix + render.template("fields_question.txt").substitute(dialogue=text, label=f.label)
            request = Request(
                prompt=prompt.rstrip("\n"),
                choices=tuple(choices),
                settings=GenerationSettings(max_tokens=8, temperature=settings.temperature, seed=settings.seed),
                cache_prefix=self.prefix,
            )
            questions.append((f, choices, request))
        return found, questions

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        found, questions = [], []
        for index, session in enumerate(user.sessions):
            settings_found, asked = self.session_requests(session, settings)
            found.append(settings_found)
            questions += [(index, *q) for q in asked]
        requests = [q[3] for q in questions]
        digest = render.sha256("\n\x00".join(r.prompt or "" for r in requests))
        notes = {"sessions_total": len(user.sessions), "questions": len(requests),
                 "prefix_sha256": render.sha256(self.prefix)}
        return Plan(requests, digest, notes, private={"questions": questions, "found": found})

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        per_session = [json.loads(json.dumps(found)) for found in plan.private["found"]]
        errors: list[str] = []
        lines = []
        for (session_index, f, choices, _), completion in zip(plan.private["questions"], completions):
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


def render_value(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Rules:
    name = "rules"
    needs_model = False

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        return Plan([], render.sha256(""), {"extractor": "prompts/rules.py"})

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        aggregator = ProfileAggregator()
        extracted = []
        for session in user.sessions:
            settings = extract_settings(session)
            extracted.append(settings)
            aggregator.update(session.meta, settings)
        output = "\n".join(json.dumps(s) for s in extracted)
        return Outcome(aggregator.profile(n_routines), output, [])


STRATEGIES: dict[str, type] = {"single-pass": SinglePass, "incremental": Incremental, "rules": Rules}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    return STRATEGIES[name]()


__all__ = ["Budget", "Outcome", "Plan", "STRATEGIES", "Strategy", "get_strategy"]
