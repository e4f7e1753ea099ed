"""Loading and writing EdgeWisePersona data: three line-aligned JSONL files per folder.

Line n of `characters.jsonl`, `routines.jsonl` and `sessions.jsonl` is user n.  Bad input
raises a HarnessError naming the file, the line and the field, never a bare traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import HarnessError
from .jsonl import BadLine, lines_of, loads_line
from .schema import Routine, Session, User

FILES = ("characters.jsonl", "routines.jsonl", "sessions.jsonl")
HF_PREFIX = "hf:"
HF_DEFAULT_REPO = "TCLResearchEurope/EdgeWisePersona"


def _describe(error: ValidationError, prefix: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    extra = f" ({error.error_count() - 1} more)" if error.error_count() > 1 else ""
    value = first.get("input")
    shown = f" (got {json.dumps(value)[:60]})" if isinstance(value, (str, int, float, bool)) else ""
    return f"field '{where}': {first['msg']}{shown}{extra}"


def _read_jsonl(path: Path, key: str) -> list[Any]:
    """The value under `key` on every line of a JSONL file, with errors naming file and line."""
    values = []
    for number, raw, _ in lines_of(path.read_bytes()):
        if not raw.strip():
            raise HarnessError(f"{path}, line {number}: empty line; every line must hold one user.")
        try:
            obj = loads_line(raw)
        except BadLine as exc:
            raise HarnessError(f"{path}, line {number}: {exc}; the file is damaged: fix that line "
                               "or download the data again.") from None
        if not isinstance(obj, dict) or key not in obj:
            raise HarnessError(f"{path}, line {number}: expected an object with the field '{key}'.")
        values.append(obj[key])
    return values


def load_folder(folder: str | os.PathLike[str]) -> list[User]:
    """Load every user from a folder holding the three line-aligned files."""
    root = Path(folder)
    if not root.is_dir():
        raise HarnessError(
            f"Data folder '{root}' does not exist. Pass a folder with {', '.join(FILES)}, "
            f"'hf:{HF_DEFAULT_REPO}', or 'sample' for a generated sample."
        )
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise HarnessError(f"Data folder '{root}' lacks {', '.join(missing)}; it needs all of {', '.join(FILES)}.")
    characters = _read_jsonl(root / "characters.jsonl", "character")
    routines = _read_jsonl(root / "routines.jsonl", "routines")
    sessions = _read_jsonl(root / "sessions.jsonl", "sessions")
    lengths = {name: len(rows) for name, rows in zip(FILES, (characters, routines, sessions))}
    if len(set(lengths.values())) != 1:
        counts = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise HarnessError(f"The three files in '{root}' must have one line per user each, but {counts} lines.")
    return [
        _build_user(index, character, user_routines, user_sessions, root)
        for index, (character, user_routines, user_sessions) in enumerate(zip(characters, routines, sessions))
    ]


def _build_user(index: int, character: Any, routines: Any, sessions: Any, root: Path) -> User:
    line = index + 1
    if not isinstance(character, str):
        raise HarnessError(f"{root / 'characters.jsonl'}, line {line}: field 'character' must be a string.")
    for name, value in (("routines", routines), ("sessions", sessions)):
        if not isinstance(value, list):
            raise HarnessError(f"{root / (name + '.jsonl')}, line {line}: field '{name}' must be a list.")
    parsed_routines = []
    for i, routine in enumerate(routines):
        try:
            parsed_routines.append(Routine.model_validate(routine))
        except ValidationError as exc:
            raise HarnessError(f"{root / 'routines.jsonl'}, line {line}: {_describe(exc, f'routines.{i}')}.") from None
    parsed_sessions = []
    for i, session in enumerate(sessions):
        try:
            parsed = Session.model_validate(session)
        except ValidationError as exc:
            raise HarnessError(f"{root / 'sessions.jsonl'}, line {line}: {_describe(exc, f'sessions.{i}')}.") from None
        bad = [r for r in parsed.applied_routines or [] if not 0 <= r < len(parsed_routines)]
        if bad:
            raise HarnessError(
                f"{root / 'sessions.jsonl'}, line {line}: field 'sessions.{i}.applied_routines' names routine "
                f"{bad[0]}, but this user has {len(parsed_routines)} routines."
            )
        parsed_sessions.append(parsed)
    return User(index=index, character=character, routines=parsed_routines, sessions=parsed_sessions)


def write_folder(users: Sequence[User], folder: str | os.PathLike[str]) -> Path:
    """Write users as the three line-aligned files (the dataset's own format)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Iterable[dict[str, Any]]] = {
        "characters.jsonl": ({"character": u.character} for u in users),
        "routines.jsonl": (
            {"routines": [r.model_dump(mode="json", exclude_none=True) for r in u.routines]} for u in users
        ),
        "sessions.jsonl": (
            {"sessions": [s.model_dump(mode="json", exclude_none=True) for s in u.sessions]} for u in users
        ),
    }
    for name, lines in rows.items():
        tmp = root / (name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for obj in lines:
                handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
        tmp.replace(root / name)
    return root


def load_hf(spec: str, cache_dir: str | None = None) -> list[User]:
    """Load `hf:OWNER/NAME[@revision]` from the Hugging Face hub (needs network and huggingface_hub)."""
    ref = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    repo, _, revision = ref.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ModuleNotFoundError:
        raise HarnessError(
            f"Loading '{spec}' needs huggingface_hub: `pip install -e '.[hub]'`, or download the dataset "
            "elsewhere and pass its folder with --data DIR."
        ) from None
    try:
        path = snapshot_download(
            repo_id=repo, repo_type="dataset", revision=revision or None, cache_dir=cache_dir,
            allow_patterns=["*.jsonl", "**/*.jsonl"],
        )
    except Exception as exc:  # the hub client raises many types for "offline"
        raise HarnessError(
            f"Could not download '{repo}' from the Hugging Face hub ({type(exc).__name__}: {str(exc)[:200]}). "
            "Check the network (or HF_HUB_OFFLINE), or download the dataset elsewhere and pass its "
            "folder with --data DIR; `--data sample` runs on a generated sample."
        ) from None
    candidates = [p.parent for p in Path(path).rglob("sessions.jsonl")]
    if not candidates:
        raise HarnessError(f"The dataset '{repo}' has no sessions.jsonl; pass a folder with --data DIR instead.")
    return load_folder(sorted(candidates)[0])


def load(spec: str | os.PathLike[str]) -> list[User]:
    """A folder path or `hf:OWNER/NAME[@revision]`."""
    if isinstance(spec, str) and spec.startswith(HF_PREFIX):
        return load_hf(spec)
    return load_folder(spec)
