"""The results file: JSONL, one row per user per case, appended and flushed as each finishes.

A killed run loses at most the row it was writing: on resume, a torn last line (cut off before
its newline) is moved to `results.jsonl.corrupt` beside the file, said so, and its user runs
again; `--resume` skips every (case, user) already present, so nothing is written twice.  Any
other line that is not a row stops the resume with a sentence naming the file and the line,
and the file is left as it is.

A row's identity is everything that changes it (device_runner/run.py `case_identity`: the data's
sha256, model, artifact sha256, runtime, strategy, seed, context, scorer version, code commit
with a hash of uncommitted changes).  `--resume` skips a (case, user) only when its row has the
same identity; rows made from other inputs are stale: they move to `results.stale.jsonl` beside
the file (nothing is deleted), a note says how many rows of which case and what differed, and
their users run again when asked for.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from eval.errors import HarnessError
from eval.jsonl import BadLine, lines_of, loads_line


class ResultsFile:
    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        # (case, user) -> the row's identity (None for a row written before rows had one)
        self.done: dict[tuple[str, int], dict[str, Any] | None] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise HarnessError(
                    f"{path} already holds results. Pass --resume to continue that run, or choose another --out."
                )
            self._load_and_trim()

    def _load_and_trim(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        for number, raw, ended in lines_of(data):
            if not ended:  # the last line, cut off before its newline
                key = _row_key(raw) if raw.strip() else None
                if isinstance(key, tuple):  # the whole row is there, only its newline is not: keep it
                    self.done[key[0]] = key[1]
                    with self.path.open("ab") as handle:
                        handle.write(b"\n")
                        handle.flush()
                        os.fsync(handle.fileno())
                    return
                if raw.strip():
                    self._set_aside(number, raw)
                break
            if raw.strip():
                key = _row_key(raw)
                if not isinstance(key, tuple):
                    raise HarnessError(
                        f"{self.path}, line {number}: {key}; the results file is damaged there, not at its end "
                        "(a killed run only cuts the last line). Move that line out of the file and rerun with "
                        "--resume (its user runs again), or choose another --out."
                    )
                self.done[key[0]] = key[1]
            good_end += len(raw) + 1
        if good_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)

    def _set_aside(self, number: int, raw: bytes) -> None:
        """Keep a torn last line in `<file>.corrupt` (appended: never overwritten) before the file
        is cut back to its last whole row."""
        corrupt = self.path.with_name(self.path.name + ".corrupt")
        with corrupt.open("ab") as handle:
            handle.write(raw + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        print(f"note: {self.path}, line {number}: the last line was cut off (a killed run); it is kept in "
              f"{corrupt} and its user runs again.", file=sys.stderr)

    def is_done(self, case: str, user: int, identity: dict[str, Any] | None = None) -> bool:
        """Whether (case, user) has a row; with `identity`, a row made from the same inputs.  The
        first time a row of `case` turns out made from other inputs, every such row of the case
        moves to the .stale.jsonl file (said once), so the file only holds rows of these inputs."""
        key = (case, user)
        if key not in self.done:
            return False
        if identity is None or self.done[key] == identity:
            return True
        self._move_stale(case, identity)
        return False

    @property
    def stale_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".stale.jsonl")

    def _move_stale(self, case: str, identity: dict[str, Any]) -> None:
        """Append the rows of `case` made from other inputs to the .stale.jsonl file, then rewrite
        the results without them (a temporary file renamed into place: a kill leaves one or the
        other, and the stale rows are written first)."""
        stale = {key: old for key, old in self.done.items() if key[0] == case and old != identity}
        kept, moved = [], []
        for _, raw, _ in lines_of(self.path.read_bytes()):
            if raw.strip():
                parsed = _row_key(raw)
                (moved if isinstance(parsed, tuple) and parsed[0] in stale else kept).append(raw)
        with self.stale_path.open("ab") as handle:
            handle.write(b"".join(raw + b"\n" for raw in moved))
            handle.flush()
            os.fsync(handle.fileno())
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as handle:
            handle.write(b"".join(raw + b"\n" for raw in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        for key in stale:
            del self.done[key]
        olds = list(stale.values())
        differ = sorted({k for old in olds if old is not None for k in set(old) | set(identity)
                         if old.get(k) != identity.get(k)})
        why = ", ".join(differ) + " differ" if differ else ""
        if any(old is None for old in olds):
            why = (why + "; " if why else "") + "some were written before rows recorded their inputs"
        print(f"note: {self.path}: {len(stale)} row(s) of {case} were made from other inputs ({why}); they moved to "
              f"{self.stale_path.name} and their users run again when asked for.", file=sys.stderr)

    def append(self, row: dict[str, Any]) -> None:
        key = (row["case"], int(row["user"]))
        if key in self.done:
            raise RuntimeError(f"row for case {key[0]!r}, user {key[1]} written twice")
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.done[key] = row.get("identity")


def _row_key(raw: bytes) -> tuple[tuple[str, int], dict[str, Any] | None] | str:
    """((case, user), identity) of one line of a results file, or why the line is not a row."""
    try:
        row = loads_line(raw)
    except BadLine as exc:
        return str(exc)
    if not isinstance(row, dict):
        return f"not a result row (a JSON object), got {type(row).__name__}"
    case, user = row.get("case"), row.get("user")
    if not isinstance(case, str):
        return "field 'case' is missing or not a string"
    if not isinstance(user, int) or isinstance(user, bool):
        return "field 'user' is missing or not an integer"
    identity = row.get("identity")
    return (case, user), identity if isinstance(identity, dict) else None
