"""The results file: JSONL, one row per user per case, appended and flushed as each finishes.

A killed run loses at most the row it was writing (a torn last line is ignored and
overwritten on resume); `--resume` skips every (case, user) already present, so nothing is
written twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eval.errors import HarnessError


class ResultsFile:
    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: set[tuple[str, int]] = set()
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
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line of a killed run: dropped, the case reruns
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            self.done.add((row["case"], int(row["user"])))
            good_end += len(line)
        if good_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)

    def is_done(self, case: str, user: int) -> bool:
        return (case, user) in self.done

    def append(self, row: dict[str, Any]) -> None:
        key = (row["case"], int(row["user"]))
        if key in self.done:
            raise RuntimeError(f"row for case {key[0]!r}, user {key[1]} written twice")
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.done.add(key)
