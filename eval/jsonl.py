"""Reading JSONL files line by line, with every failure a reason the caller can put in a sentence.

The readers of the project's files (dataset, predictions, results) split on b"\\n" only: a
JSON string may hold U+2028 or a lone "\\r" (results are written with ensure_ascii=False),
and str.splitlines() would cut a row there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class BadLine(ValueError):
    """A line that is not one JSON value; its message is the reason ("malformed JSON (...)")."""


def lines_of(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, the line without its newline, whether it ended with a newline)."""
    start = 0
    number = 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        if end < 0:
            yield number, data[start:], False
            return
        yield number, data[start:end], True
        start = end + 1


def loads_line(raw: bytes) -> Any:
    """One line's JSON value; raises BadLine with the reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(f"not UTF-8 text (byte {exc.start + 1} of the line)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadLine("JSON nested too deeply to read") from None
