"""Sessions written by a language model (the paper's Figure 1, left side), over any runtime.

`eval.synth` plans each session (the user's sketch, the context, the settings to ask for)
and hands the plan, as a `WriterInput`, to a writer: a callable that returns the dialogue as
a `WriterOutput`.  `RuntimeWriter` is that callable over a `runtimes.Runtime`: it renders
prompts/templates/writer.txt (plus writer_feedback.txt on a rewrite), asks for JSON
(`{"messages": [{"role", "text"}, ...]}`, constrained by `dialogue_schema()` where the
runtime supports it) and reads the dialogue back.  Checking the dialogue against its plan,
rewriting and falling back are `eval.synth`'s job (`check_dialogue`, `write_session`).

The runtime is handed in: `python -m eval synth --writer openai|llamacpp` builds it from its
name (eval/__main__.py, `make_writer`), so neither eval.synth nor this module picks an engine.
"""

from __future__ import annotations

import json
import re
from typing import Any

from eval.errors import HarnessError
from eval.synth import MAX_MESSAGES, MIN_MESSAGES, WriterInput, WriterOutput
from runtimes.base import GenerationSettings, Request, Runtime

from . import render

TEMPLATE = "writer.txt"
FEEDBACK_TEMPLATE = "writer_feedback.txt"
DEFAULT_TEMPERATURE = 0.8  # some variety between sessions and between rewrites
DEFAULT_MAX_TOKENS = 1200  # ~10 messages of everyday speech, in JSON, with room to spare
# A small local model can run one message on until max_tokens; bounding each text in the
# grammar makes it close the message instead.
LLAMACPP_MAX_TEXT_CHARS = 400
SUN_WORDS = {"before_sunrise": "before sunrise", "daylight": "in daylight", "after_sunset": "after sunset"}
NO_SUMMARY = "(none: this is their first conversation)"


def dialogue_schema(max_text_chars: int | None = None) -> dict[str, Any]:
    """The JSON a writer answers with: `{"messages": [{"role", "text"}, ...]}`, no $refs."""
    text: dict[str, Any] = {"type": "string"}
    if max_text_chars is not None:
        text |= {"minLength": 1, "maxLength": max_text_chars}
    message = {
        "type": "object",
        "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "text": text},
        "required": ["role", "text"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"messages": {"type": "array", "items": message,
                                    "minItems": MIN_MESSAGES, "maxItems": MAX_MESSAGES}},
        "required": ["messages"],
        "additionalProperties": False,
    }


def context_words(context: dict[str, str]) -> str:
    """"a weekday evening, after sunset; rainy and mild outside"."""
    return (f"a {context['day_of_week']} {context['time_of_day']}, {SUN_WORDS[context['sun_phase']]}; "
            f"{context['weather']} and {context['outdoor_temp']} outside")


def settings_lines(settings: dict[str, dict[str, Any]]) -> list[str]:
    """One line per planned setting: "- tv -> volume -> 30"."""
    lines = []
    for device, values in settings.items():
        for field, value in values.items():
            if isinstance(value, bool):
                said = "true (the person asks to arm it)" if value else "false (the person asks to disarm it)"
            else:
                said = str(value)
            lines.append(f"- {device} -> {field} -> {said}")
    return lines


def render_prompt(plan: WriterInput) -> str:
    """The writer's prompt for one planned session (and, on a rewrite, why the last try failed)."""
    feedback = ""
    if plan.feedback:
        feedback = render.template(FEEDBACK_TEMPLATE).substitute(
            previous=plan.attempt - 1, reasons="\n".join(f"- {reason}" for reason in plan.feedback))
    return render.template(TEMPLATE).substitute(
        character=plan.character,
        context_words=context_words(plan.context),
        context=", ".join(plan.context.values()),
        summary="\n".join(f"- {line}" for line in plan.summary) or NO_SUMMARY,
        settings="\n".join(settings_lines(plan.settings)),
        n_messages=plan.n_messages,
        feedback=feedback,
    )


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def parse_dialogue(text: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The (role, text) messages in a writer's answer, or () and the reason there are none.

    Takes the outermost JSON object (code fences and words around it are ignored) and its
    "messages" list; each item needs a role and a "text" (or "content").  Roles are kept as
    written (lower-cased), for eval.synth.check_dialogue to judge.
    """
    body = _FENCE.sub("", text)
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return (), 'the answer holds no JSON object; answer with {"messages": [...]} only'
    try:
        data = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        return (), f"the answer is not valid JSON ({exc.msg} at character {exc.pos})"
    items = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return (), 'the JSON has no "messages" list'
    messages = []
    for number, item in enumerate(items, start=1):
        said = item.get("text", item.get("content")) if isinstance(item, dict) else None
        if not isinstance(said, str) or not isinstance(item.get("role"), str):
            return (), f'message {number} is not an object with a "role" and a "text"'
        messages.append((item["role"].strip().lower(), said.strip()))
    return tuple(messages), None


class RuntimeWriter:
    """A session writer (eval.synth.Writer) over a loaded runtime.

    `use_schema`: send dialogue_schema() for constrained decoding (False: ask in words only,
    for endpoints without structured output).  `max_text_chars` bounds each message in the
    schema.  `name` goes into writer_log.jsonl.
    """

    def __init__(self, runtime: Runtime, name: str, *, use_schema: bool = True,
                 temperature: float = DEFAULT_TEMPERATURE, max_tokens: int = DEFAULT_MAX_TOKENS,
                 max_text_chars: int | None = None) -> None:
        if max_tokens < 1:
            raise HarnessError(f"max_tokens={max_tokens} must be at least 1.")
        if temperature < 0:
            raise HarnessError(f"temperature={temperature} must be 0 or more.")
        self.runtime = runtime
        self.name = name
        self.schema = dialogue_schema(max_text_chars) if use_schema else None
        self.temperature = temperature
        self.max_tokens = max_tokens

    def request(self, plan: WriterInput) -> Request:
        prompt = render_prompt(plan)
        return Request(
            messages=({"role": "user", "content": prompt},),
            json_schema=self.schema,
            settings=GenerationSettings(max_tokens=self.max_tokens, temperature=self.temperature, seed=plan.seed),
        )

    def __call__(self, plan: WriterInput) -> WriterOutput:
        request = self.request(plan)
        [completion] = self.runtime.generate([request])
        messages, error = parse_dialogue(completion.text)
        if error is not None and completion.finish_reason == "length":
            error = (f"the answer was cut off at the limit of {self.max_tokens} tokens before its JSON was "
                     "complete; write shorter messages")
        t = completion.timings
        info = {
            "prompt_sha256": render.sha256(request.messages[0]["content"]),
            "prompt_tokens": t.prompt_tokens,
            "generated_tokens": t.generated_tokens,
            "seconds": None if t.total_ms is None else round(t.total_ms / 1000, 3),
            "finish_reason": completion.finish_reason,
        }
        return WriterOutput(messages=messages, raw=completion.text, error=error, info=info)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> RuntimeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
