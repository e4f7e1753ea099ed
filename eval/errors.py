"""The one error base class users see as a sentence (DESIGN.md, house rule 5)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """An error a user can act on.  Its message is a sentence that says what to do next.

    Every `__main__` catches it and prints the message without a traceback.
    """


def unknown_name(kind: str, name: str, available: Iterable[str]) -> HarnessError:
    """`Unknown runtime 'mnm'. Did you mean: mnn? Available: ...`"""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean: {close[0]}?" if close else ""
    return HarnessError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(names)}.")
