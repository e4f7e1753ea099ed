"""The leaf module every package may import (DESIGN.md, house rule 5; README "Layering").

It holds the one error base class users see as a sentence, the helpers that write the
common sentences (unknown name, missing optional dependency), and the few file helpers
every package needs.  It imports nothing of the project.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


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


def missing_dependency(what: str, package: str | None, install: str, note: str = "") -> HarnessError:
    """`The 'llamacpp' runtime needs the Python package 'llama_cpp', which is not installed.
    Install it with `make install-llamacpp`.`  (`install`: the command, a make target or pip
    install; `note`: one more clause, e.g. where the package lives.)"""
    needs = f"the Python package '{package}', which is not installed" if package else "a package that is not installed"
    return HarnessError(f"{what} needs {needs}. Install it with `{install}`{f' ({note})' if note else ''}.")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (artifacts are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where built wheels, toolchain envs, checkpoints and models are cached, outside the clone:
    $EDGEWISE_CACHE, else ~/.cache/edgewise-harness (the Makefile's CACHE sets the variable)."""
    return Path(os.environ.get("EDGEWISE_CACHE") or Path.home() / ".cache" / "edgewise-harness")
