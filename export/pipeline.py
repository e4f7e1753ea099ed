"""`make export MODEL=... FORMAT=...`: recipe -> source checkpoint -> toolchain worker -> verified artifact.

The core venv runs this driver (no torch); each format's worker runs in its own toolchain
env (export/env.py).  The artifact is written into a hidden temporary folder beside its
final place, gets its manifest.json last, and is renamed into place only when the worker
succeeded and parity passed: a failed export leaves nothing that looks complete.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from eval.errors import HarnessError, unknown_name

from . import sources
from .env import ROOT, env_dir, env_ready, requirements_file
from .manifest import Manifest, file_entries, write_manifest
from .catalogue import ARTIFACTS, Recipe, for_random_source, get_recipe

# format -> "module:Class"; imported lazily (rule 1).
EXPORTERS: dict[str, str] = {
    "gguf": "export.gguf:GgufExporter",
    "onnx": "export.onnx:OnnxExporter",
    "executorch": "export.executorch:ExecuTorchExporter",
    "mnn": "export.mnn:MnnExporter",
}
ALL = ("gguf", "onnx", "executorch", "mnn")
# Disk an export needs, in units of the source checkpoint's size on disk (checked before it starts).
# gguf: the float GGUF in the source's dtype (scratch, ~1x) and the artifact (<= 1x).  The other
# tools' intermediates are not measured at size: 2x is an estimate.
DISK_FACTOR = {"gguf": 2.0}


class Exporter(Protocol):
    format: str
    env: str  # the toolchain env its worker runs in

    def variant(self, options: dict[str, Any]) -> str:
        """The artifact's variant name (quantization / precision) from the recipe's options."""

    def plan(self, options: dict[str, Any]) -> list[str]:
        """Human-readable steps, for --dry-run."""

    def worker_args(self, source: Path, out: Path, result: Path, options: dict[str, Any], name: str) -> list[str]:
        """Arguments of `python ...` in the toolchain env; the worker writes the result JSON."""


@runtime_checkable
class Refuses(Protocol):
    """An exporter that can refuse before any work (absent vendor SDK, known-bad converter)."""

    def preflight(self, options: dict[str, Any], recipe: Any = None, source: Path | None = None) -> None:
        """Raise HarnessError with the reason; return when the export can go ahead.  `source`: the
        checkpoint folder the user passed (SOURCE=), when there is one."""


@runtime_checkable
class UsesExtraEnvs(Protocol):
    """An exporter whose worker also runs in other toolchain envs (QNN's script has its own)."""

    def extra_envs(self, options: dict[str, Any]) -> list[str]: ...


def get_exporter(fmt: str) -> Exporter:
    if fmt not in EXPORTERS:
        raise unknown_name("format", fmt, [*EXPORTERS, "all"])
    module_name, class_name = EXPORTERS[fmt].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise HarnessError(f"The {fmt} exporter is not written yet ({module_name}); available now: gguf.") from exc
        raise
    return getattr(module, class_name)()


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    format: str
    variant: str
    options: dict[str, Any]
    out: Path
    steps: list[str]


def artifact_dir(recipe: Recipe, fmt: str, variant: str, root: Path = ARTIFACTS) -> Path:
    """artifacts/<model>/<format> for the recipe's default variant, <format>-<variant> for others."""
    default = get_exporter(fmt).variant(recipe.format_options(fmt))
    name = fmt if variant == default else f"{fmt}-{variant.lower()}"
    return root / recipe.key / name


def make_plans(model: str, formats: list[str], variant: str | None = None, root: Path = ARTIFACTS,
               skip_refused: bool = False, source: Path | None = None) -> list[Plan]:
    """One plan per format.  A format whose preflight refuses (absent SDK, known-bad converter)
    fails the whole call, unless `skip_refused` (FORMAT=all), which skips it with a note."""
    recipe = get_recipe(model)
    plans = []
    for fmt in formats:
        exporter = get_exporter(fmt)
        options = recipe.format_options(fmt)
        if variant:
            options = {**options, **_variant_option(fmt, variant)}
        name = exporter.variant(options)
        if isinstance(exporter, Refuses):  # e.g. a vendor SDK that is absent: say so before any work
            try:
                exporter.preflight(options, recipe, source)
            except HarnessError as exc:
                if not skip_refused:
                    raise
                print(f"note: skipping {fmt}: {exc}", file=sys.stderr)
                continue
        plans.append(Plan(recipe, fmt, name, options, artifact_dir(recipe, fmt, name, root), exporter.plan(options)))
    return plans


def _variant_option(fmt: str, variant: str) -> dict[str, Any]:
    if fmt == "executorch" and variant.split("-")[0] in ("xnnpack", "mediatek", "qnn"):
        backend, _, qlinear = variant.partition("-")
        # A vendor backend's suffix is its own quantization (qnn-16a4w, mediatek-a16w4), not XNNPACK's qlinear.
        key = "qlinear" if backend == "xnnpack" else "vendor_quant"
        return {"backend": backend, **({key: qlinear} if qlinear else {})}
    if fmt == "onnx" and "-" in variant:  # e.g. int4-xnnpack, int4-qnn
        precision, _, ep = variant.partition("-")
        return {"precision": precision, "execution_provider": ep}
    key = {"gguf": "quantization", "onnx": "precision", "executorch": "qlinear", "mnn": "quant_bit"}[fmt]
    return {key: int(variant) if key == "quant_bit" else variant}


def parse_formats(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == ["all"]:
        written = [fmt for fmt in ALL if importlib.util.find_spec(EXPORTERS[fmt].split(":")[0]) is not None]
        missing = [fmt for fmt in ALL if fmt not in written]
        if missing:
            print(f"note: FORMAT=all covers {', '.join(written)}; no exporter yet for {', '.join(missing)}.",
                  file=sys.stderr)
        return written
    for name in names:
        if name not in EXPORTERS:
            raise unknown_name("format", name, [*EXPORTERS, "all"])
    return names


def print_plan(plans: list[Plan], source: Path | None, out=None) -> None:
    out = out or sys.stdout
    recipe = plans[0].recipe
    print(f"Export plan for {recipe.key} ({recipe.architecture})", file=out)
    print(f"  checkpoint: {sources.describe(recipe, source)}", file=out)
    for plan in plans:
        print(f"  {plan.format} [{plan.variant}] -> {plan.out}", file=out)
        exporter = get_exporter(plan.format)
        extra_envs = exporter.extra_envs(plan.options) if isinstance(exporter, UsesExtraEnvs) else []
        for name in [plan.format, *extra_envs]:  # e.g. QNN's script runs in an env of its own
            state = "ready" if env_ready(name) else "created on first use"
            print(f"    toolchain env: {env_dir(name)} ({state}, from {requirements_file(name).relative_to(ROOT)})",
                  file=out)
        for step in plan.steps:
            print(f"    - {step}", file=out)


# Memory an export was measured to need at least, in units of the source checkpoint's size on disk
# (export/README.md, "At real size"): optimum-executorch took a bf16 4B checkpoint (7.8 GB) past
# 20.2 GB (2.6x, stopped by hand, still rising).  A lower bound; an export whose bound exceeds the
# memory available now is refused before any work, instead of taking the whole machine down.  (ONNX
# was here at 3.1x until export/onnx_builder.py quantized one weight at a time: 1.67x now.)
MEMORY_AT_LEAST = {"executorch": (2.2, "the random Gemma 3 4B's peak: torch.export's and the XNNPACK lowering's "
                                        "copies of the quantized model")}
MEMORY_CHECK_ENV = "EDGEWISE_EXPORT_MEMORY_CHECK"


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(fmt: str, model: str, source_bytes: int) -> None:
    """A HarnessError sentence when `fmt` is known to need more memory than is available now."""
    if fmt not in MEMORY_AT_LEAST or os.environ.get(MEMORY_CHECK_ENV) == "0":
        return
    factor, why = MEMORY_AT_LEAST[fmt]
    needed, available = int(factor * source_bytes), available_memory()
    if available is None or needed <= available:
        return
    raise HarnessError(
        f"The {fmt} export of {model} needs at least {needed / 1e9:.1f} GB of memory ({factor}x the "
        f"{source_bytes / 1e9:.1f} GB checkpoint, measured here: {why}), and {available / 1e9:.1f} GB are "
        f"available. Export FORMAT=gguf or onnx (measured at 1.1x and 1.7x), or use a machine with more memory; "
        f"{MEMORY_CHECK_ENV}=0 skips this check."
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Say how much `what` needs on `folder`'s disk; a HarnessError sentence when less is free."""
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    print(f"{what} needs about {needed / 1e9:.1f} GB free on {probe} ({free / 1e9:.1f} GB free)", flush=True)
    if free < needed:
        raise HarnessError(
            f"{what} needs about {needed / 1e9:.1f} GB free on the disk of {probe}, and {free / 1e9:.1f} GB are "
            f"free. Free {(needed - free) / 1e9:.1f} GB (old artifacts under {probe}, caches) or pass --out DIR "
            "on a larger disk, then run it again."
        )


def run_plan(plan: Plan, source: sources.Source) -> Path:
    """Run one format's export into plan.out; returns the artifact folder."""
    from .env import run_in_env

    from .memory import TreeSampler

    exporter = get_exporter(plan.format)
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(plan.out.parent)
    # Scratch (a float copy in the source's dtype, or the tool's own intermediates) plus the artifact.
    check_free_space(plan.out.parent, int(DISK_FACTOR.get(plan.format, 2.0) * folder_bytes(source.path)),
                     f"The {plan.format} export of {plan.recipe.key}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{plan.out.name}.partial-{os.getpid()}-", dir=plan.out.parent))
    result_file = tmp.parent / f"{tmp.name}.result.json"
    started = time.monotonic()
    sampler = TreeSampler()
    try:
        options = plan.options
        if source.kind == "random":  # flat random logits: the thresholds measured on random weights
            options = for_random_source(plan.format, options)
            print(f"note: {source.path} has random weights: parity uses the random-weight thresholds "
                  "(export/catalogue.py RANDOM_MIN_TOP1); the figures say nothing about accuracy.", flush=True)
        args = exporter.worker_args(source.path, tmp, result_file, options, plan.recipe.key)
        print(f"Exporting {plan.recipe.key} to {plan.format} [{plan.variant}] from {source.checkpoint}", flush=True)
        try:
            with sampler:
                run_in_env(exporter.env, args, what=f"The {plan.format} export of {plan.recipe.key}")
        except HarnessError:
            parity = _read(result_file).get("parity")
            if parity and not parity.get("passed"):
                raise HarnessError(
                    f"The {plan.format} export of {plan.recipe.key} failed its parity check against the source "
                    f"model ({_figures(parity)}); nothing was kept. See the figures above, and "
                    "export/parity.py for the criteria."
                ) from None
            raise
        result = _read(result_file)
        _check_parity_entry(result.get("parity"), plan)
        seconds = time.monotonic() - started
        memory = {**sampler.report(), "worker_reported_mb": round(float(result.get("peak_rss_mb") or 0.0), 1)}
        # The tree's sampled peak; where /proc cannot be read, the worker's own getrusage figure.
        peak = memory["tree_peak_mb"] if sampler.available and sampler.samples else memory["worker_reported_mb"]
        source_bytes = folder_bytes(source.path)
        memory["source_bytes"] = source_bytes
        memory["peak_over_source"] = round(peak * 2**20 / source_bytes, 2) if source_bytes else None
        source_entry = {"kind": source.kind, "checkpoint": source.checkpoint, "revision": source.revision,
                        "path": str(source.path), "bytes": source_bytes}
        if source.note:
            source_entry["note"] = source.note
        manifest = Manifest(
            model=plan.recipe.key, format=plan.format, variant=plan.variant, files=file_entries(tmp),
            tools=result.get("tools", {}), export_seconds=round(seconds, 2),
            peak_rss_mb=round(float(peak), 1), parity=result["parity"], source=source_entry,
            recipe=_recipe_dict(plan.recipe), recipe_sha256=plan.recipe.sha256(),
            quantization=result.get("quantization", {}), details={**result.get("details", {}), "memory": memory},
            created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        write_manifest(tmp, manifest)
        os.chmod(tmp, 0o755)
        _swap_into_place(tmp, plan.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for sibling in tmp.parent.glob(f"{tmp.name}.*"):  # a worker's scratch beside it (onnx)
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
        raise
    finally:
        result_file.unlink(missing_ok=True)
    return plan.out


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove staging folders (`.<name>.partial-<pid>-*`) whose export process is gone: a driver
    killed outright (SIGKILL, power loss) could not remove its own."""
    removed = []
    for path in Path(folder).glob(".*.partial-*"):
        pid = path.name.split(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)  # its .result.json
        removed.append(path)
    if removed:
        print(f"note: removed {len(removed)} staging folder(s) left by an interrupted export in {folder}", flush=True)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp`; an old artifact is moved aside first and deleted after."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(recipe)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _check_parity_entry(parity: Any, plan: Plan) -> None:
    """passed must be True, or None for an artifact whose engine cannot run on the host (vendor NPU
    backends: QNN HTP, NeuroPilot), and then only with the reason in "skipped", which the manifest keeps."""
    if isinstance(parity, dict) and (parity.get("passed") is True or (
            parity.get("passed") is None and "passed" in parity and str(parity.get("skipped") or "").strip())):
        return
    raise HarnessError(
        f"The {plan.format} worker for {plan.recipe.key} returned no parity verdict ({parity!r}); nothing was kept. "
        "This is a bug in export/: report it with the output above."
    )


def parity_line(parity: dict[str, Any]) -> str:
    """How the console reports an artifact's parity."""
    if parity.get("passed") is None:
        return f"parity NOT run: {parity.get('skipped')}"
    return f"parity passed: top-1 agreement {parity.get('top1_agreement')}"


def _figures(parity: dict[str, Any]) -> str:
    keys = ("top1_agreement", "max_abs_diff", "rel_diff", "greedy_identical", "tokenizer_match", "criterion")
    return ", ".join(f"{k}={parity[k]}" for k in keys if k in parity)


def export(model: str, formats: str = "all", source: Path | None = None, *, dry_run: bool = False,
           variant: str | None = None, root: Path = ARTIFACTS) -> list[Path]:
    """Export `model` to each of `formats`; returns the artifact folders written."""
    # Absolute: the workers run in other working folders (MNN's llmexport in its scratch folder).
    plans = make_plans(model, parse_formats(formats), variant, Path(root).resolve(),
                       skip_refused=formats.strip() == "all", source=source)
    if not plans:
        raise HarnessError(f"No format is left to export {model} to; see the notes above.")
    if dry_run:
        print_plan(plans, source)
        return []
    resolved = sources.resolve(plans[0].recipe, source)
    written = []
    for plan in plans:
        try:
            check_memory(plan.format, plan.recipe.key, folder_bytes(resolved.path))
        except HarnessError as exc:
            if formats.strip() != "all":
                raise
            print(f"note: skipping {plan.format}: {exc}", file=sys.stderr, flush=True)
            continue
        out = run_plan(plan, resolved)
        manifest = json.loads((out / "manifest.json").read_text())
        size = sum(f["bytes"] for f in manifest["files"])
        print(f"Wrote {out} ({size / 1e6:.1f} MB, {manifest['export_seconds']:.0f} s, "
              f"{parity_line(manifest['parity'])})", flush=True)
        written.append(out)
    return written
