"""Model text -> routines, never raising.

Small models wrap JSON in code fences and chatter, leave trailing commas, and run out of
tokens mid-routine.  `parse_routines` takes the outermost JSON object or list, repairs what
is safely repairable (fences, chatter, trailing commas, a truncated tail: the unfinished
routine is dropped), accepts `{"routines": [...]}`, a bare list or a single routine, and
drops each invalid field on its own with the reason recorded, so one bad value costs one
field, not the whole prediction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from .schema import DEVICE_MODELS, Routine, Triggers


@dataclass
class ParseResult:
    routines: list[Routine]
    # One sentence per thing that was dropped or could not be read.
    errors: list[str] = field(default_factory=list)
    # Repairs applied to the text before it parsed ("code fence", "trailing comma", ...).
    repairs: list[str] = field(default_factory=list)
    # Number of fields and routines dropped as invalid.
    dropped: int = 0


_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_MAX_TRUNCATION_TRIES = 400


def parse_routines(text: str) -> ParseResult:
    """Parse model output into validated routines; never raises."""
    try:
        return _parse(text if isinstance(text, str) else str(text))
    except Exception as exc:  # a parser bug must not kill a benchmark run
        return ParseResult([], errors=[f"parser failure: {type(exc).__name__}: {exc}"])


def _parse(text: str) -> ParseResult:
    repairs: list[str] = []
    body = text
    fenced = _FENCE.findall(text)
    if fenced and any(("{" in block or "[" in block) for block in fenced):
        body = next(block for block in fenced if "{" in block or "[" in block)
        repairs.append("code fence")
    value, truncated_inside_item = _load_outermost(body, repairs)
    if value is _NOTHING:
        return ParseResult([], errors=["no JSON object or list found in the output"], repairs=repairs)
    items, errors = _routine_items(value)
    dropped_last = bool(truncated_inside_item and items)
    if dropped_last:
        items = items[:-1]
        errors.append("dropped the last routine: the output was cut off inside it")
    result = ParseResult([], errors=errors, repairs=repairs, dropped=int(dropped_last))
    slots = [_validate_routine(item, index, result) for index, item in enumerate(items)]
    while slots and slots[-1] is None:
        slots.pop()
    # An item that was not a routine keeps its place as an empty routine when a routine follows
    # it: the scorer keeps the model's first N outputs, and a later routine must not move up.
    result.routines = [routine if routine is not None else Routine() for routine in slots]
    return result


_NOTHING = object()


def _load_outermost(body: str, repairs: list[str]) -> tuple[Any, bool]:
    """The first JSON object/list in `body`; returns (value, cut_inside_an_item)."""
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        return _NOTHING, False
    start = min(starts)
    candidate = body[start:]
    decoder = json.JSONDecoder()
    for attempt, fixer in ((None, None), ("trailing comma", _TRAILING_COMMA)):
        text = candidate if fixer is None else fixer.sub(r"\1", candidate)
        try:
            value, _ = decoder.raw_decode(text)
            if attempt:
                repairs.append(attempt)
            return value, False
        except json.JSONDecodeError:
            continue
    # Truncated output: cut back to a closing brace and close what is still open.
    text = _TRAILING_COMMA.sub(r"\1", candidate)
    cuts = [m.start() for m in re.finditer(r"[}\]]", text)]
    for cut in reversed(cuts[-_MAX_TRUNCATION_TRIES:]):
        prefix = text[: cut + 1]
        stack = _open_brackets(prefix)
        if stack is None:
            continue
        closing = "".join("}" if b == "{" else "]" for b in reversed(stack))
        try:
            value = json.loads(_TRAILING_COMMA.sub(r"\1", prefix.rstrip().rstrip(",") + closing))
        except json.JSONDecodeError:
            continue
        repairs.append("truncated output closed")
        return value, len(stack) > _item_depth(value)
    return _NOTHING, False


def _item_depth(value: Any) -> int:
    """How many brackets are open inside a routine: 2 for {"routines": [{...}]}, 1 for [{...}]."""
    return 2 if isinstance(value, dict) else 1


def _open_brackets(text: str) -> list[str] | None:
    """The stack of brackets still open at the end of `text`, or None if it ends inside a string."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]":
            if not stack or (stack[-1] == "{") != (char == "}"):
                return None
            stack.pop()
    return None if in_string else stack


def _routine_items(value: Any) -> tuple[list[Any], list[str]]:
    if isinstance(value, dict):
        if isinstance(value.get("routines"), list):
            return value["routines"], []
        if "triggers" in value or "actions" in value:
            return [value], []
        return [], ["the JSON object has no 'routines' list"]
    if isinstance(value, list):
        return value, []
    return [], [f"expected a JSON object or list, got {type(value).__name__}"]


def _validate_routine(item: Any, index: int, result: ParseResult) -> Routine | None:
    where = f"routine {index}"
    if not isinstance(item, dict):
        result.errors.append(f"{where}: not an object, dropped")
        result.dropped += 1
        return None
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if key == "triggers":
            fields["triggers"] = _validate_block(Triggers, value, f"{where}.triggers", result)
        elif key == "actions":
            fields["actions"] = _validate_actions(value, f"{where}.actions", result)
        elif key == "priority":
            if isinstance(value, int) and not isinstance(value, bool):
                fields["priority"] = value
            elif value is not None:
                _drop(result, f"{where}.priority", "not an integer", value)
        else:
            _drop(result, f"{where}.{key}", "unknown field", value)
    return Routine(**fields)


def _validate_actions(value: Any, where: str, result: ParseResult) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _drop(result, where, "not an object", value)
        return {}
    out = {}
    for device, settings in value.items():
        model = DEVICE_MODELS.get(device)
        if model is None:
            _drop(result, f"{where}.{device}", "unknown device", settings)
        elif settings is not None:
            out[device] = _validate_block(model, settings, f"{where}.{device}", result)
    return out


def _validate_block(model: type[BaseModel], value: Any, where: str, result: ParseResult) -> dict[str, Any]:
    """Validate each field of a flat block on its own; invalid fields are dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _drop(result, where, "not an object", value)
        return {}
    out = {}
    for key, raw in value.items():
        if key not in model.model_fields:
            _drop(result, f"{where}.{key}", "unknown field", raw)
            continue
        if raw is None:
            continue
        if isinstance(raw, bool) and model.model_fields[key].annotation != bool | None:
            _drop(result, f"{where}.{key}", "a boolean is not a number", raw)
            continue
        candidate = _normalise_enum(model, key, raw)
        try:
            out[key] = getattr(model.model_validate({key: candidate}), key)
        except ValidationError as exc:
            _drop(result, f"{where}.{key}", exc.errors()[0]["msg"], raw)
    return out


def _normalise_enum(model: type[BaseModel], key: str, raw: Any) -> Any:
    """'Cool' -> 'cool', 'before sunrise' -> 'before_sunrise', 'bass_boost' -> 'bass boost'."""
    annotation = model.model_fields[key].annotation
    enum = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, StrEnum)), None)
    if enum is None or not isinstance(raw, str):
        return raw
    wanted = _squash(raw)
    return next((member.value for member in enum if _squash(member.value) == wanted), raw)


def _squash(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


def _drop(result: ParseResult, where: str, reason: str, value: Any) -> None:
    result.errors.append(f"{where}: {reason} (got {_shown(value)}), dropped")
    result.dropped += 1


def check_routine(item: Any) -> tuple[Routine | None, str | None]:
    """A routine given as JSON data (a predictions or ground-truth file, not model text), checked
    strictly against the schema: nothing is coerced or repaired (`armed: 1` is not a boolean,
    `volume: true` not an integer, `"hdmi1"` not `"HDMI1"`).  Returns (routine, None), or (None,
    the reasons as one phrase)."""
    if not isinstance(item, dict):
        return None, f"not an object (got {_shown(item)})"
    try:
        return Routine.model_validate_json(json.dumps(item), strict=True), None
    except ValidationError as exc:
        return None, "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'routine'}: {error['msg']} (got {_shown(error.get('input'))})"
            for error in exc.errors()
        )
    except (ValueError, RecursionError) as exc:  # NaN, or nesting json cannot write back
        return None, f"not a routine ({type(exc).__name__})"


def _shown(value: Any) -> str:
    try:
        shown = json.dumps(value, default=str)
    except (ValueError, RecursionError):
        shown = type(value).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


def parse_settings(text: str) -> ParseResult:
    """Model text holding one actions object (device -> field -> value), e.g. one session's
    extracted settings.  Returns a ParseResult with one routine holding only those actions
    (no triggers); never raises."""
    try:
        repairs: list[str] = []
        value, _ = _load_outermost(text if isinstance(text, str) else str(text), repairs)
        if not isinstance(value, dict):
            return ParseResult([], errors=["no JSON object found in the output"], repairs=repairs)
        result = ParseResult([], repairs=repairs)
        actions = _validate_actions(value.get("actions", value), "settings", result)
        result.routines.append(Routine(actions=actions))
        return result
    except Exception as exc:
        return ParseResult([], errors=[f"parser failure: {type(exc).__name__}: {exc}"])
