"""Prompt templates (files in prompts/templates) and the small functions that fill them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from eval.schema import Session, SessionMeta

TEMPLATES = Path(__file__).with_name("templates")


@cache
def template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


@cache
def extraction_examples(name: str = "extract_examples.jsonl") -> tuple[dict[str, Any], ...]:
    """Worked examples (a dialogue and the settings it asks for), one JSON object a line."""
    lines = (TEMPLATES / name).read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def context_line(meta: SessionMeta) -> str:
    return ", ".join(str(v) for v in meta.model_dump(mode="json").values())


def dialogue(turns: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)


def session_turns(session: Session) -> list[tuple[str, str]]:
    return [(str(m.role), m.text) for m in session.messages]


def session_block(session: Session) -> str:
    return f"Session {session.session_id} [{context_line(session.meta)}]\n{dialogue(session_turns(session))}"


_NUMBER = re.compile(r"(?<![\w.])(\d{1,3})(?![\w.]\d)")
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
         "seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_NUMBER = re.compile(
    r"\b(?:(?:a|one) hundred|(?:" + "|".join(_TENS) + r")(?:[\s-](?:" + "|".join(_UNITS[1:10]) + r"))?|"
    + "|".join(reversed(_UNITS)) + r")\b",
    re.IGNORECASE,
)


def _word_value(words: str) -> int:
    words = words.lower().replace("-", " ").split()
    if words[-1] == "hundred":
        return 100
    value = 10 * (_TENS.index(words[0]) + 2) if words[0] in _TENS else _UNITS.index(words[0])
    return value + (_UNITS.index(words[1]) if len(words) > 1 else 0)


def digits(text: str) -> str:
    """Numbers written as words in digits: "Seventy percent" -> "70 percent"."""
    return _WORD_NUMBER.sub(lambda m: str(_word_value(m.group(0))), text)


def numbers_said(session_text: str) -> set[int]:
    """Every integer 0-999 in a text, in digits or words (the values a user can have asked for)."""
    return set(numbers_in_order(session_text))


def numbers_in_order(text: str) -> list[int]:
    """`numbers_said`, each once, in the order they are first said."""
    return list(dict.fromkeys(int(n) for n in _NUMBER.findall(digits(text))))
