"""Plan and run benchmark cases: every (model, runtime, strategy) on every chosen user.

`--device host` runs the cases in this process through runtimes/; phones run the same
plan over ADB.  Both write the same rows (device_runner/results.py).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval import dataset
from eval.errors import HarnessError, unknown_name
from eval.schema import User
from eval.score import SCORER_VERSION, score
from export.recipes import get_recipe
from prompts.strategies import Budget, Outcome, get_strategy
from runtimes import REGISTRY, Completion, GenerationSettings, Timings, get_runtime

from .provenance import file_sha256, git_commit, host_facts
from .results import ResultsFile

ARTIFACTS = Path("artifacts")
NO_MODEL = "none"


@dataclass(frozen=True)
class RunOptions:
    models: tuple[str, ...] = ("gemma-3-270m",)
    runtimes: tuple[str, ...] = ("llamacpp",)
    strategies: tuple[str, ...] = ("single-pass", "incremental")
    data: str = "sample"
    users: str | None = None  # "0,2,5" or "0-3"; None = all
    out: Path = Path("results/run")
    resume: bool = False
    artifact: Path | None = None  # run this file / folder instead of the model's export (one model and runtime)
    seed: int = 0
    threads: int | None = None
    context_tokens: int | None = None  # None: the recipe's context length
    sample_users: int = 8
    sample_sessions: int = 40
    progress: bool = True
    runtime_options: dict[str, Any] = field(default_factory=dict)


def parse_users(spec: str | None, available: int) -> list[int]:
    """"0,2,5" or "0-3" (inclusive) or a mix; indices must exist in the data."""
    if spec is None or spec == "all":
        return list(range(available))
    chosen: list[int] = []
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            chosen += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise HarnessError(f"--users '{spec}' is not a list like 0,2,5 or a range like 0-3.") from None
    bad = [u for u in chosen if not 0 <= u < available]
    if bad:
        raise HarnessError(f"--users names user {bad[0]}, but the data has users 0-{available - 1}.")
    return sorted(set(chosen))


def load_data(options: RunOptions) -> tuple[list[User], dict[str, Any]]:
    if options.data == "sample":
        from eval.synth import write_sample

        folder = write_sample(options.out / "sample-data", options.sample_users, options.sample_sessions, options.seed)
        info = {"spec": "sample", "folder": str(folder), "users": options.sample_users,
                "sessions": options.sample_sessions, "seed": options.seed}
        return dataset.load_folder(folder), info
    users = dataset.load(options.data)
    return users, {"spec": options.data}


def resolve_artifact(model: str, runtime: str, artifact: Path | None) -> Path:
    """The file or folder `runtime` loads for `model`: `artifact` when given, else the model's export."""
    if artifact is not None:
        if not artifact.exists():
            raise HarnessError(f"--artifact {artifact} does not exist.")
        return artifact
    recipe = get_recipe(model)
    if runtime == "llamacpp" and recipe.packaged:
        from runtimes.llamacpp import default_model_path

        return default_model_path()
    fmt = {"llamacpp": "gguf", "onnxruntime": "onnx"}.get(runtime, runtime)  # runtime -> export format
    folder = ARTIFACTS / model / fmt
    found = sorted(folder.glob("*.gguf")) if fmt == "gguf" else ([folder] if folder.is_dir() else [])
    if not found:
        raise HarnessError(
            f"No {fmt} artifact for model '{model}' under {folder}. Run `make export MODEL={model} FORMAT={fmt}`"
            + (" or pass --artifact FILE." if fmt == "gguf" else ".")
        )
    return found[0]


def check_single_artifact(options: RunOptions) -> None:
    if options.artifact is not None and (len(options.models) > 1 or len(options.runtimes) > 1):
        raise HarnessError("--artifact names one file or folder, so it runs with one --model and one --runtime; "
                           "run each runtime in its own command (the same --out collects them).")


def case_id(model: str, runtime: str, strategy: str, device: str) -> str:
    return f"{model}/{runtime}/{strategy}/{device}"


def aggregate_timings(completions: list[Completion], load_ms: float | None) -> dict[str, Any]:
    """One user's timings over its requests: rates from totals, TTFT as a median, RSS as a max."""
    t: list[Timings] = [c.timings for c in completions]
    if not t:
        return {"load_ms": None, "ttft_ms": None, "prefill_tps": None, "decode_tps": None, "prompt_tokens": 0,
                "prompt_tokens_evaluated": 0, "generated_tokens": 0, "peak_rss_mb": None, "sampling_ms": None,
                "total_ms": 0.0, "requests": 0}

    def total(name: str) -> float:
        return sum(getattr(x, name) or 0 for x in t)

    prefill_s = sum((x.prompt_tokens_evaluated or 0) / x.prefill_tps for x in t if x.prefill_tps)
    decode_s = sum(max((x.generated_tokens or 0) - 1, 0) / x.decode_tps for x in t if x.decode_tps)
    decoded_after_first = sum(max((x.generated_tokens or 0) - 1, 0) for x in t if x.decode_tps)
    ttfts = [x.ttft_ms for x in t if x.ttft_ms is not None]
    rss = [x.peak_rss_mb for x in t if x.peak_rss_mb is not None]
    sampling = [x.sampling_ms for x in t if x.sampling_ms is not None]
    return {
        "load_ms": load_ms,
        "ttft_ms": statistics.median(ttfts) if ttfts else None,
        "prefill_tps": total("prompt_tokens_evaluated") / prefill_s if prefill_s else None,
        "decode_tps": decoded_after_first / decode_s if decode_s else None,
        "prompt_tokens": int(total("prompt_tokens")),
        "prompt_tokens_evaluated": int(total("prompt_tokens_evaluated")),
        "generated_tokens": int(total("generated_tokens")),
        "peak_rss_mb": max(rss) if rss else None,
        "sampling_ms": sum(sampling) if sampling else None,
        "total_ms": total("total_ms"),
        "requests": len(t),
    }


def run_host(options: RunOptions) -> Path:
    """Run every case on this machine; returns the results file."""
    for name in options.strategies:
        get_strategy(name)  # unknown names fail before any work
    for name in options.runtimes:
        if name not in REGISTRY:
            raise unknown_name("runtime", name, REGISTRY)
    for model in options.models:
        get_recipe(model)
    check_single_artifact(options)
    users, data_info = load_data(options)
    chosen = parse_users(options.users, len(users))
    results = ResultsFile(options.out / "results.jsonl", options.resume)
    device = host_facts()
    settings = GenerationSettings(seed=options.seed)

    model_strategies = [s for s in options.strategies if get_strategy(s).needs_model]
    model_cases = [(m, r) for m in options.models for r in options.runtimes] if model_strategies else []
    # Every artifact is found before any case runs: a missing export fails now, not an hour in.
    artifacts = {case: resolve_artifact(case[0], case[1], options.artifact) for case in model_cases}
    for strategy_name in [s for s in options.strategies if not get_strategy(s).needs_model]:
        _run_case(NO_MODEL, NO_MODEL, strategy_name, None, None, users, chosen, results, device, data_info,
                  options, settings)
    for model, runtime_name in model_cases:
        pending = [s for s in model_strategies
                   if any(not results.is_done(case_id(model, runtime_name, s, "host"), u) for u in chosen)]
        if not pending:
            continue
        artifact = artifacts[(model, runtime_name)]
        recipe = get_recipe(model)
        runtime_options = dict(options.runtime_options)
        if options.threads:
            runtime_options["n_threads"] = options.threads
        if runtime_name == "llamacpp":
            runtime_options.setdefault("n_ctx", options.context_tokens or recipe.context_length)
        runtime = get_runtime(runtime_name, **runtime_options)
        started = time.perf_counter()
        runtime.load(str(artifact))
        load_ms = (time.perf_counter() - started) * 1000
        try:
            for strategy_name in pending:
                _run_case(model, runtime_name, strategy_name, runtime, (artifact, load_ms), users, chosen, results,
                          device, data_info, options, settings)
        finally:
            runtime.close()
    return results.path


def _run_case(model: str, runtime_name: str, strategy_name: str, runtime: Any,
              loaded: tuple[Path, float | None] | None, users: list[User], chosen: list[int],
              results: ResultsFile, device: dict[str, Any], data_info: dict[str, Any], options: RunOptions, settings: GenerationSettings) -> None:
    strategy = get_strategy(strategy_name)
    case = case_id(model, runtime_name, strategy_name, device["name"])
    todo = [u for u in chosen if not results.is_done(case, u)]
    if not todo:
        return
    recipe = get_recipe(model) if model != NO_MODEL else None
    context = options.context_tokens or (recipe.context_length if recipe else 8192)
    limit = getattr(runtime, "max_context", None)  # e.g. the max_seq_len an ExecuTorch .pte was exported with
    if limit:
        context = min(context, limit)
    count = getattr(runtime, "count_tokens", None)
    budget = Budget(context, count) if count else Budget(context)
    plans = {u: strategy.plan(users[u], len(users[u].routines), budget, settings) for u in todo}
    total_requests = sum(len(p.requests) for p in plans.values())
    info = runtime.info() if runtime is not None else None
    artifact_sha = file_sha256(loaded[0]) if loaded else None
    progress = _progress(total_requests, f"{case}", options.progress)
    for user_index in todo:
        user, plan = users[user_index], plans[user_index]
        started = time.perf_counter()
        if getattr(runtime, "batched", False):  # a phone runs one user's requests in one invocation
            completions = runtime.generate(plan.requests)
            progress.update(len(plan.requests))
        else:
            completions = []
            for request in plan.requests:
                completion = runtime.generate([request])[0]
                completions.append(completion)
                progress.update(1)
                if completion.timings.decode_tps:
                    progress.set_postfix_str(f"user {user_index}, decode {completion.timings.decode_tps:.0f} tok/s")
        outcome: Outcome = strategy.finish(user, len(user.routines), plan, completions)
        wall_s = time.perf_counter() - started
        truth = [r.compact() for r in user.routines]
        predicted = [r.compact() for r in outcome.routines]
        user_score = score([truth], [predicted]).metrics
        results.append({
            "case": case,
            "user": user_index,
            "model": model,
            "model_revision": recipe.revision if recipe else None,
            "recipe_sha256": recipe.sha256() if recipe else None,
            "runtime": runtime_name,
            "runtime_version": info.version if info else None,
            "runtime_details": info.details if info else None,
            "artifact": str(loaded[0]) if loaded else None,
            "artifact_sha256": artifact_sha,
            "strategy": strategy_name,
            "prompt_sha256": plan.prompt_sha256,
            "prompt_notes": plan.notes,
            "seed": options.seed,
            "device": device,
            "data": data_info,
            "git_commit": git_commit(),
            "scorer_version": SCORER_VERSION,
            "truth": truth,
            "routines": predicted,
            "output": outcome.output,
            "parse_errors": outcome.parse_errors,
            "extra": outcome.extra,
            "timings": aggregate_timings(completions, _load_ms(loaded, completions)),
            "wall_s": round(wall_s, 3),
            "score": {k: user_score[k] for k in ("acc.routine_exact", "jaccard.flattened")},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(runtime.row_extra() if hasattr(runtime, "row_extra") else {}),  # phones: facts + thermal per case
        })
    progress.close()


def _load_ms(loaded: tuple[Path, float | None] | None, completions: list[Completion]) -> float | None:
    """The host's one load, or (phones: a load per invocation) the median the engine reported."""
    if not loaded:
        return None
    if loaded[1] is not None:
        return loaded[1]
    loads = [c.timings.load_ms for c in completions if c.timings.load_ms is not None]
    return statistics.median(loads) if loads else None


def _progress(total: int, label: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="req", disable=not enabled or total == 0, leave=True)
