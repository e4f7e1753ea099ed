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
def extraction_examples() -> tuple[dict[str, Any], ...]:
    lines = (TEMPLATES / "extract_examples.jsonl").read_text(encoding="utf-8").splitlines()
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


def numbers_said(session_text: str) -> set[int]:
    """Every integer 0-999 written in a text (the values a user can have asked for)."""
    return {int(n) for n in _NUMBER.findall(session_text)}
