"""manifest.json: what an artifact folder holds and how it was made (DESIGN.md, "Every export produces").

Written last into the temporary folder of an export, just before it is renamed into place, so
a folder with a manifest.json is a complete, parity-checked artifact; the one exception is an
artifact for a vendor NPU (ExecuTorch QNN / NeuroPilot), whose engine runs only on the phone:
its parity says `"passed": null` with the reason in `"skipped"`, never true.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import sha256_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the artifact folder
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    model: str  # recipe key (MODEL=)
    format: str  # gguf | executorch | onnx | mnn
    variant: str  # quantization / precision of this artifact, e.g. "Q4_K_M", "int4", "8da4w"
    files: list[FileEntry]
    tools: dict[str, str]  # toolchain package -> version (plus the converter's source)
    export_seconds: float  # wall time of the export, source resolution excluded
    peak_rss_mb: float  # peak resident memory of the export's processes
    parity: dict[str, Any]  # {"passed": bool, ...measured figures} (export/parity.py), or {"passed": None, "skipped": why} when not run on the host
    source: dict[str, Any]  # {"checkpoint": path or hub id, "revision": commit or sha256, "kind": ...}
    recipe: dict[str, Any]  # the recipe row as exported
    recipe_sha256: str
    quantization: dict[str, Any]  # what was quantized how (per format)
    details: dict[str, Any] = field(default_factory=dict)  # format-specific facts (e.g. ORT mobile verdict)
    created_utc: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_entries(folder: Path) -> list[FileEntry]:
    """Every file under `folder` (except the manifest), sorted by path."""
    return [
        FileEntry(str(p.relative_to(folder)), sha256_file(p), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def verify(folder: Path) -> list[str]:
    """Files whose size or sha256 differ from the manifest (empty: the folder is intact)."""
    manifest = read_manifest(folder)
    bad = []
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            bad.append(entry["path"])
    return bad
