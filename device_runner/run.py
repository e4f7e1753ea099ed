"""Plan and run benchmark cases: every (model, runtime, strategy) on every chosen user.

`--device host` runs the cases in this process through runtimes/ (`run_host`); phones run
the same plan over ADB (device_runner/devices.py).  Both hand each case to `run_case`, so
both write the same rows (device_runner/results.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from eval import dataset
from eval.errors import HarnessError
from eval.schema import User
from eval.score import SCORER_VERSION, score
from export.catalogue import find_artifact, get_recipe
from prompts.strategies import Budget, Outcome, get_strategy
from runtimes import (
    AddsRowFields,
    Completion,
    CountsTokens,
    GenerationSettings,
    LimitsContext,
    Request,
    RunsBatches,
    Runtime,
    Timings,
    get_runtime,
    runtime_spec,
)

from .provenance import file_sha256, git_commit, host_facts
from .results import ResultsFile

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
    sample_style: str = "natural"  # eval.synth: "natural" (speech as people talk) or "plain"
    progress: bool = True
    runtime_options: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1  # measured repetitions of each user's requests (host; phones: PhoneOptions.repeat)
    warmup: int = 0  # unmeasured repetitions before them

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.warmup < 0:
            raise HarnessError(f"--repeat {self.repeat} must be >= 1 and --warmup {self.warmup} >= 0.")


# A case whose repeated decode rate spreads more than this ((max - min) / median over the
# repetitions) is flagged as unstable in its rows and in the report (MLPerf Mobile's 5% rule).
SPREAD_LIMIT = 0.05
SPREAD_KEYS = ("ttft_ms", "prefill_tps", "decode_tps", "total_ms", "peak_rss_mb")


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
    """The users and the row's "data": what was asked for and a sha256 of what was read (the
    parsed users, canonical JSON), so that rows of different data never pass for each other."""
    if options.data == "sample":
        from eval.synth import write_sample

        folder = write_sample(options.out / "sample-data", options.sample_users, options.sample_sessions, options.seed,
                              style=options.sample_style)
        info = {"spec": "sample", "folder": str(folder), "users": options.sample_users,
                "sessions": options.sample_sessions, "seed": options.seed, "style": options.sample_style}
        users = dataset.load_folder(folder)
    else:
        users = dataset.load(options.data)
        info = {"spec": options.data}
    canonical = json.dumps([u.model_dump(mode="json") for u in users], sort_keys=True, ensure_ascii=False)
    return users, {**info, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def resolve_artifact(model: str, runtime: str, artifact: Path | None) -> Path:
    """The file or folder `runtime` loads for `model`: `artifact` when given, else the model's
    export in the format the runtime's registry row names (export/catalogue.py finds it)."""
    if artifact is not None:
        if not artifact.exists():
            raise HarnessError(f"--artifact {artifact} does not exist.")
        return artifact
    fmt = runtime_spec(runtime).artifact_format
    if fmt is None:
        raise HarnessError(f"The '{runtime}' runtime serves its own model; it has no artifact to run for '{model}'.")
    return find_artifact(model, fmt)


def open_runtime(name: str, **options: Any) -> Runtime:
    """The runtime `name`, in this process when its engine is importable here, else (a registry
    row with a toolchain) in its export toolchain env, made on first use (runtimes/isolated.py)."""
    spec = runtime_spec(name)
    if spec.toolchain and importlib.util.find_spec(spec.engine_module) is None:
        from export.env import ensure_env, env_dir

        python = ensure_env(spec.toolchain)
        return get_runtime(name, python=python, env_label=f"{spec.toolchain} toolchain env {env_dir(spec.toolchain)}",
                           **options)
    return get_runtime(name, **options)


def check_names(options: RunOptions) -> None:
    """Unknown strategies, runtimes and models fail before any work, with a "did you mean"."""
    for name in options.strategies:
        get_strategy(name)
    for name in options.runtimes:
        runtime_spec(name)
    for model in options.models:
        get_recipe(model)
    check_single_artifact(options)


def check_single_artifact(options: RunOptions) -> None:
    if options.artifact is not None and (len(options.models) > 1 or len(options.runtimes) > 1):
        raise HarnessError("--artifact names one file or folder, so it runs with one --model and one --runtime; "
                           "run each runtime in its own command (the same --out collects them).")


def case_id(model: str, runtime: str, strategy: str, device: str, variant: str | None = None) -> str:
    return f"{model}{f'@{variant}' if variant else ''}/{runtime}/{strategy}/{device}"


def artifact_variant(model: str, options: RunOptions) -> str | None:
    """What `--artifact` names, as cases and reports show it beside the model ("q8_0" for
    artifacts/M/gguf-Q8_0/M-q8_0.gguf, "executorch-8da8w" for that folder), so that two
    quantizations of one model are two cases; None for the model's default artifact."""
    if options.artifact is None:
        return None
    path = options.artifact
    name = path.stem if path.is_file() else path.name
    return name[len(model) + 1:] if name.startswith(f"{model}-") and len(name) > len(model) + 1 else name


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


@dataclass(frozen=True)
class Case:
    """One case: a model on a runtime with a strategy, on a device (host or a phone)."""

    model: str  # NO_MODEL for a strategy that needs none
    runtime: str  # NO_MODEL likewise
    strategy: str
    device: dict[str, Any]  # the device's facts; device["name"] names the case
    artifact: Path | None = None  # what the runtime loaded
    load_ms: float | None = None  # the host's one load; None where each invocation loads (phones)
    variant: str | None = None  # artifact_variant: set when --artifact chose the artifact

    @property
    def id(self) -> str:
        return case_id(self.model, self.runtime, self.strategy, self.device["name"], self.variant)


@dataclass(frozen=True)
class RunInputs:
    """What every case of one run shares."""

    users: list[User]
    chosen: list[int]  # indices of the users to run
    data_info: dict[str, Any]
    options: RunOptions
    settings: GenerationSettings


def prepare(options: RunOptions) -> tuple[RunInputs, dict[tuple[str, str], Path]]:
    """Checks names, finds every artifact (a missing export fails now, not an hour in), loads
    the data.  Returns the run's inputs and the artifact of each (model, runtime) case."""
    check_names(options)
    needs_model = any(get_strategy(s).needs_model for s in options.strategies)
    artifacts = {(m, r): resolve_artifact(m, r, options.artifact)
                 for m in options.models for r in options.runtimes} if needs_model else {}
    users, data_info = load_data(options)
    chosen = parse_users(options.users, len(users))
    return RunInputs(users, chosen, data_info, options, GenerationSettings(seed=options.seed)), artifacts


def model_strategies(options: RunOptions) -> list[str]:
    return [s for s in options.strategies if get_strategy(s).needs_model]


def run_no_model_cases(inputs: RunInputs, device: dict[str, Any], results: Any) -> None:
    for strategy_name in [s for s in inputs.options.strategies if not get_strategy(s).needs_model]:
        run_case(Case(NO_MODEL, NO_MODEL, strategy_name, device), None, inputs, results)


def case_identity(model: str, runtime: str, strategy: str, artifact: Path | None, inputs: RunInputs) -> dict[str, Any]:
    """Everything that changes a case's rows (results.py: --resume skips only rows with the same).

    The prompts and the engine versions are functions of these: prompts of the code, the data
    and the artifact's tokenizer; versions are pinned by the code (runtimes/versions.env).
    """
    options = inputs.options
    return {"data_sha256": inputs.data_info["sha256"], "model": model, "runtime": runtime, "strategy": strategy,
            "artifact_sha256": file_sha256(artifact) if artifact else None, "seed": options.seed,
            "context_tokens": options.context_tokens, "scorer_version": SCORER_VERSION, "code": git_commit()}


def pending_strategies(model: str, runtime: str, device: dict[str, Any], artifact: Path, inputs: RunInputs,
                       results: Any) -> list[str]:
    """The model strategies of (model, runtime) with a chosen user still to run on `device`."""
    pending = []
    for s in model_strategies(inputs.options):
        identity = case_identity(model, runtime, s, artifact, inputs)
        case = case_id(model, runtime, s, device["name"], artifact_variant(model, inputs.options))
        if any(not results.is_done(case, u, identity) for u in inputs.chosen):
            pending.append(s)
    return pending


def run_model_cases(inputs: RunInputs, device: dict[str, Any], artifacts: dict[tuple[str, str], Path], results: Any,
                    open_case: Callable[[str, str, Path], tuple[Any, float | None]]) -> None:
    """Every (model, runtime) case with work left on `device`: `open_case(model, runtime, artifact)`
    gives the loaded runtime and its load time (None where each invocation loads: phones)."""
    for (model, runtime_name), artifact in artifacts.items():
        pending = pending_strategies(model, runtime_name, device, artifact, inputs, results)
        if not pending:
            continue
        runtime, load_ms = open_case(model, runtime_name, artifact)
        try:
            for strategy_name in pending:
                case = Case(model, runtime_name, strategy_name, device, artifact, load_ms,
                            artifact_variant(model, inputs.options))
                run_case(case, runtime, inputs, results)
        finally:
            runtime.close()


def run_host(options: RunOptions) -> Path:
    """Run every case on this machine; returns the results file."""
    inputs, artifacts = prepare(options)
    results = ResultsFile(options.out / "results.jsonl", options.resume)
    device = host_facts()

    def open_case(model: str, runtime_name: str, artifact: Path) -> tuple[Runtime, float]:
        runtime_options = dict(options.runtime_options)
        if options.threads:
            runtime_options["n_threads"] = options.threads
        if runtime_spec(runtime_name).artifact_format == "gguf":  # llama.cpp sizes its context at load
            runtime_options.setdefault("n_ctx", options.context_tokens or get_recipe(model).context_length)
        runtime = open_runtime(runtime_name, **runtime_options)
        started = time.perf_counter()
        runtime.load(str(artifact))
        return runtime, (time.perf_counter() - started) * 1000

    run_no_model_cases(inputs, device, results)
    run_model_cases(inputs, device, artifacts, results, open_case)
    return results.path


def run_case(case: Case, runtime: Runtime | None, inputs: RunInputs, results: Any) -> None:
    """Run `case` for every chosen user not yet done in `results` and append one row per user.

    The host and the phones both call this: `runtime` is a runtimes.Runtime or a phone's
    (device_runner/phone_runtime.py), None for a strategy that needs no model.  Optional
    capabilities are checked with the Protocols of runtimes/base.py.
    """
    strategy = get_strategy(case.strategy)
    options, users = inputs.options, inputs.users
    identity = case_identity(case.model, case.runtime, case.strategy, case.artifact, inputs)
    todo = [u for u in inputs.chosen if not results.is_done(case.id, u, identity)]
    if not todo:
        return
    recipe = get_recipe(case.model) if case.model != NO_MODEL else None
    context = options.context_tokens or (recipe.context_length if recipe else 8192)
    if isinstance(runtime, LimitsContext) and runtime.max_context:
        context = min(context, runtime.max_context)  # e.g. the max_seq_len an ExecuTorch .pte was exported with
    budget = Budget(context, runtime.count_tokens) if isinstance(runtime, CountsTokens) else Budget(context)
    plans = {u: strategy.plan(users[u], len(users[u].routines), budget, inputs.settings) for u in todo}
    # An instruct model (the recipe says so) reads a strategy's instructions in its chat template;
    # cloze questions stay raw text for every model (prompts/strategies.py `instruction`).
    chat = bool(recipe and recipe.instruct and strategy.instruction)
    repeats = 1 if isinstance(runtime, RunsBatches) else options.warmup + options.repeat
    total_requests = sum(len(p.requests) for p in plans.values()) * repeats
    info = runtime.info() if runtime is not None else None
    artifact_sha = file_sha256(case.artifact) if case.artifact else None
    progress = _progress(total_requests, case.id, options.progress)
    for user_index in todo:
        user, plan = users[user_index], plans[user_index]
        started = time.perf_counter()
        completions: list[Completion] = []
        measurement: dict[str, Any] = {}
        requests = as_chat(plan.requests) if chat else plan.requests
        if isinstance(runtime, RunsBatches):  # a phone runs one user's requests in one invocation
            completions = runtime.generate_batch(requests)
            progress.update(len(plan.requests))
        elif runtime is not None:
            runs = []
            for _ in range(options.warmup + options.repeat):
                run: list[Completion] = []
                for request in requests:
                    completion = runtime.generate([request])[0]
                    run.append(completion)
                    progress.update(1)
                    if completion.timings.decode_tps:
                        progress.set_postfix_str(f"user {user_index}, decode {completion.timings.decode_tps:.0f} tok/s")
                runs.append(run)
            completions, measurement = repetitions(runs[options.warmup:], options.warmup) if plan.requests else ([], {})
        outcome: Outcome = strategy.finish(user, len(user.routines), plan, completions)
        wall_s = time.perf_counter() - started
        truth = [r.compact() for r in user.routines]
        predicted = [r.compact() for r in outcome.routines]
        user_score = score([truth], [predicted]).metrics
        results.append({
            "case": case.id,
            "user": user_index,
            "identity": identity,
            "model": case.model,
            **({"variant": case.variant} if case.variant else {}),
            "model_revision": recipe.revision if recipe else None,
            "recipe_sha256": recipe.sha256() if recipe else None,
            "runtime": case.runtime,
            "runtime_version": info.version if info else None,
            "runtime_details": info.details if info else None,
            "artifact": str(case.artifact) if case.artifact else None,
            "artifact_sha256": artifact_sha,
            "strategy": case.strategy,
            "prompt_sha256": plan.prompt_sha256,
            "prompt_notes": plan.notes,
            "prompt_format": "chat" if chat else "raw",
            "seed": options.seed,
            "device": case.device,
            "data": inputs.data_info,
            "git_commit": git_commit(),
            "scorer_version": SCORER_VERSION,
            "truth": truth,
            "routines": predicted,
            "output": outcome.output,
            "parse_errors": outcome.parse_errors,
            "extra": outcome.extra,
            "timings": aggregate_timings(completions, _load_ms(case, completions)),
            "wall_s": round(wall_s, 3),
            "score": {k: user_score[k] for k in ("acc.routine_exact", "jaccard.flattened")},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"measurement": measurement} if measurement else {}),
            **(runtime.row_extra() if isinstance(runtime, AddsRowFields) else {}),  # phones: facts + thermal per case
        })
    progress.close()


def as_chat(requests: list[Request]) -> list[Request]:
    """Each raw-prompt request as one user message, for an instruct model: the runtime applies
    the model's own chat template.  The shared-prefix hint stays, a prefix of the message's
    content (runtimes.base.Request): llama.cpp keeps its KV state as it does for a raw prompt, so
    an instruct model's questions cost their few tokens too."""
    return [replace(r, messages=({"role": "user", "content": r.prompt},), prompt=None)
            if r.prompt is not None else r for r in requests]


def median_completion(reps: list[Completion]) -> Completion:
    """The first repetition's text with each timing's median over the repetitions."""
    first = reps[0]
    if len(reps) == 1:
        return first

    def med(name: str) -> Any:
        values = [getattr(c.timings, name) for c in reps if getattr(c.timings, name) is not None]
        return statistics.median(values) if values else None
    return Completion(first.text, Timings(**{k: med(k) for k in first.timings.to_dict()}), first.finish_reason)


def repetitions(measured: list[list[Completion]], warmup: int) -> tuple[list[Completion], dict[str, Any]]:
    """One user's measured repetitions (each a list of completions, one per request) -> the
    completions to score (median timings) and the row's "measurement": the spread of each
    timing over the repetitions and whether the decode rate spread more than SPREAD_LIMIT."""
    completions = [median_completion([run[i] for run in measured]) for i in range(len(measured[0]))]
    spread: dict[str, Any] = {}
    for key in SPREAD_KEYS:
        values = [rep[key] for rep in (aggregate_timings(run, None) for run in measured) if rep[key] is not None]
        if values:
            middle = statistics.median(values)
            spread[key] = {"median": middle, "min": min(values), "max": max(values),
                           "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                           "spread": (max(values) - min(values)) / middle if middle else 0.0}
    decode = spread.get("decode_tps", {}).get("spread")
    texts_differ = any(run[i].text != measured[0][i].text for run in measured for i in range(len(run)))
    return completions, {"warmup": warmup, "repeat": len(measured), "spread": spread,
                         "unstable": decode is not None and decode > SPREAD_LIMIT,
                         "outputs_differ_between_repeats": texts_differ}


def _load_ms(case: Case, completions: list[Completion]) -> float | None:
    """The host's one load, or (phones: a load per invocation) the median the engine reported."""
    if case.artifact is None:
        return None
    if case.load_ms is not None:
        return case.load_ms
    loads = [c.timings.load_ms for c in completions if c.timings.load_ms is not None]
    return statistics.median(loads) if loads else None


def _progress(total: int, label: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="req", disable=not enabled or total == 0, leave=True)
