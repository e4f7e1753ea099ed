"""Strategies turn a User into Requests and the Completions back into routines.

- `single-pass` (the paper's protocol): the whole history in one prompt, "exactly N routines",
  output constrained to the routines schema.  The history is cut to the context budget from
  the oldest session on, and the cut is recorded.
- `incremental`: one short extraction prompt per session (the settings the user finally asked
  for, constrained to values said in that session), then the deterministic aggregator of
  prompts/aggregate.py.  The fixed instructions and examples are a shared prefix that an
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
from eval.parse import parse_routines, parse_settings
from eval.schema import Routine, User, actions_json_schema, routines_json_schema
from runtimes.base import Completion, GenerationSettings, Request

from . import render
from .aggregate import ProfileAggregator
from .rules import extract_settings


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
    name = "incremental"
    needs_model = True
    max_tokens = 160

    def __init__(self) -> None:
        examples = "".join(
            render.template("extract_example.txt").substitute(
                dialogue=render.dialogue(example["dialogue"]), settings=json.dumps(example["settings"])
            )
            for example in render.extraction_examples()
        )
        self.prefix = render.template("extract_prefix.txt").substitute(examples=examples.rstrip("\n") + "\n\n")

    def session_request(self, session_text: str, settings: GenerationSettings) -> Request:
        prompt = self.prefix + render.template("extract_session.txt").substitute(dialogue=session_text).rstrip("\n")
        return Request(
            prompt=prompt,
            json_schema=settings_schema(render.numbers_said(session_text)),
            settings=GenerationSettings(max_tokens=self.max_tokens, temperature=settings.temperature,
                                        seed=settings.seed, stop=("\n",)),
            cache_prefix=self.prefix,
        )

    def plan(self, user: User, n_routines: int, budget: Budget, settings: GenerationSettings) -> Plan:
        requests = [self.session_request(render.dialogue(render.session_turns(s)), settings) for s in user.sessions]
        digest = render.sha256("\n\x00".join(r.prompt or "" for r in requests))
        return Plan(requests, digest, {"sessions_total": len(requests), "prefix_sha256": render.sha256(self.prefix)})

    def finish(self, user: User, n_routines: int, plan: Plan, completions: list[Completion]) -> Outcome:
        aggregator = ProfileAggregator()
        errors: list[str] = []
        for session, completion in zip(user.sessions, completions):
            parsed = parse_settings(completion.text)
            errors += [f"session {session.session_id}: {e}" for e in parsed.errors]
            settings = parsed.routines[0].compact().get("actions", {}) if parsed.routines else {}
            aggregator.update(session.meta, settings)
        output = "\n".join(c.text.replace("\n", " ") for c in completions)
        return Outcome(aggregator.profile(n_routines), output, errors, {"profile_state": aggregator.to_json()})


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


def settings_schema(numbers: set[int]) -> dict[str, Any]:
    """The actions schema with every integer field limited to the numbers said in the session.

    A base model otherwise copies numbers from its examples; with this grammar it can only
    pick among values that were actually said.  A field with no candidate number is removed.
    """
    schema = actions_json_schema()
    for device in schema["properties"].values():
        for name, prop in list(device["properties"].items()):
            if prop.get("type") == "integer":
                allowed = [v for v in prop["enum"] if v in numbers]
                if allowed:
                    prop["enum"] = allowed
                else:
                    del device["properties"][name]
    return schema


STRATEGIES: dict[str, type] = {"single-pass": SinglePass, "incremental": Incremental, "rules": Rules}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    return STRATEGIES[name]()


__all__ = ["Budget", "Outcome", "Plan", "STRATEGIES", "Strategy", "get_strategy", "settings_schema"]
