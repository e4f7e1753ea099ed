"""Benchmarks (not tests): `python -m device_runner.bench overhead|strategy-cost|phone-overhead|phone-engines|models`.

- overhead: prefill and decode tok/s through runtimes.llamacpp against a minimal loop over
  llama.cpp's own C API (llama_decode + greedy sampler, through llama-cpp-python's ctypes
  bindings) on the same GGUF, threads, context and prompt; runs interleaved; prints the ratio.
- strategy-cost: prompt tokens evaluated and wall time, single-pass vs incremental, for one
  profile update (one new session arrives) and for a whole history.
- phone-overhead: one user's `incremental` case through the loopback phone (tests/fakeadbd, the
  host-built ew_llama: android/build.sh --abi host) against `--device host`, interleaved; wall
  time per request both ways, with and without the phone path's fixed cost per case (model load,
  ADB round trips).
- phone-engines: every engine on the loopback phone with our host-built runners (ew_llama,
  ew_et, ew_mnn, ew_ort), both model strategies, one `python -m device_runner` call, then the same
  with `--device host`: per engine and strategy, the answers that differ, the scores and the
  wall time per request both ways.
- models: the model x strategy table (README, "Models and strategies"): a random-weight tiny
  model, SmolLM2 135M, Gemma 3 270M at Q4_K_M and Q8_0, each with every strategy, on the dev
  set and on a generated natural sample, llama.cpp, one thread; exact, Jaccard, s / update.

Timings depend on what else the machine is doing: they are printed side by side from one
run, never asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from eval.errors import HarnessError


def _reference_loop(lib: Any, model_path: str, tokens: list[int], n_gen: int, n_threads: int, n_ctx: int,
                    n_batch: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) of llama.cpp's C API with no harness around it."""
    mparams = lib.llama_model_default_params()
    model = lib.llama_model_load_from_file(model_path.encode(), mparams)
    cparams = lib.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, n_batch
    cparams.n_threads, cparams.n_threads_batch = n_threads, n_threads
    cparams.swa_full = True  # as runtimes.llamacpp (prefix reuse needs the full SWA cache)
    ctx = lib.llama_init_from_model(model, cparams)
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
    try:
        started = time.perf_counter()
        for start in range(0, len(tokens), n_batch):
            chunk = tokens[start:start + n_batch]
            array = (ctypes.c_int32 * len(chunk))(*chunk)
            if lib.llama_decode(ctx, lib.llama_batch_get_one(array, len(chunk))) != 0:
                raise HarnessError("llama_decode failed in the reference loop.")
        token = lib.llama_sampler_sample(chain, ctx, -1)
        prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n_gen - 1):
            array = (ctypes.c_int32 * 1)(token)
            lib.llama_decode(ctx, lib.llama_batch_get_one(array, 1))
            token = lib.llama_sampler_sample(chain, ctx, -1)
        decode_s = time.perf_counter() - started
        return len(tokens) / prefill_s, (n_gen - 1) / decode_s
    finally:
        lib.llama_sampler_free(chain)
        lib.llama_free(ctx)
        lib.llama_model_free(model)


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    from runtimes import GenerationSettings, Request
    from export.catalogue import default_model_path
    from runtimes.llamacpp import LlamaCppRuntime

    path = str(args.gguf or default_model_path())
    words = ("The smart home assistant keeps the lights warm in the evening and the heating at twenty one "
             "degrees when it snows. ") * 40
    runtime = LlamaCppRuntime(n_threads=args.threads, n_ctx=args.n_ctx)
    runtime.load(path)
    prompt = " ".join(words.split()[: args.prompt_tokens * 3 // 4])
    tokens = runtime.tokenize(prompt)  # the very same tokens go to the reference loop
    ours, ref, bench, phone = [], [], [], []
    tools = _host_tools()
    for repeat in range(args.repeats):
        # Interleaved, and a fresh cache each time: no prefix reuse in either.
        runtime.reset_cache()
        c = runtime.generate([Request(prompt=prompt, settings=GenerationSettings(max_tokens=args.gen_tokens))])[0]
        ours.append((c.timings.prefill_tps, c.timings.decode_tps, c.timings.generated_tokens))
        ref.append(_reference_loop(llama_cpp, path, tokens, c.timings.generated_tokens or args.gen_tokens,
                                   runtime.n_threads,
                                   args.n_ctx, runtime.n_batch))
        line = (f"run {repeat + 1}: harness prefill {ours[-1][0]:.0f} decode {ours[-1][1]:.1f} tok/s "
                f"({ours[-1][2]} tokens) | C-API loop prefill {ref[-1][0]:.0f} decode {ref[-1][1]:.1f}")
        if tools:
            n_gen = c.timings.generated_tokens or args.gen_tokens
            bench.append(_llama_bench(tools["llama-bench"], path, len(tokens), n_gen, runtime.n_threads,
                                      runtime.n_batch))
            phone.append(_ew_llama_direct(tools["ew_llama"], path, prompt, n_gen, runtime.n_threads, args.n_ctx,
                                          runtime.n_batch))
            line += (f" | llama-bench prefill {bench[-1][0]:.0f} decode {bench[-1][1]:.1f}"
                     f" | ew_llama prefill {phone[-1][0]:.0f} decode {phone[-1][1]:.1f}")
        print(line + " tok/s", flush=True)
    runtime.close()
    result: dict[str, Any] = {
        "gguf": path, "threads": runtime.n_threads, "prompt_tokens": len(tokens), "gen_tokens": args.gen_tokens,
        "harness_prefill_tps": statistics.median(o[0] for o in ours),
        "harness_decode_tps": statistics.median(o[1] for o in ours),
        "llamacpp_prefill_tps": statistics.median(r[0] for r in ref),
        "llamacpp_decode_tps": statistics.median(r[1] for r in ref),
    }
    result["prefill_ratio"] = result["harness_prefill_tps"] / result["llamacpp_prefill_tps"]
    result["decode_ratio"] = result["harness_decode_tps"] / result["llamacpp_decode_tps"]
    print(f"\nmedian of {args.repeats}: prefill ratio {result['prefill_ratio']:.3f}, "
          f"decode ratio {result['decode_ratio']:.3f} (harness / C-API loop; target >= 0.97)")
    if tools:
        for name, runs in (("llama_bench", bench), ("ew_llama", phone)):
            result[f"{name}_prefill_tps"] = statistics.median(r[0] for r in runs)
            result[f"{name}_decode_tps"] = statistics.median(r[1] for r in runs)
        for name in ("harness", "ew_llama"):
            for stage in ("prefill", "decode"):
                result[f"{name}_{stage}_vs_llama_bench"] = (result[f"{name}_{stage}_tps"]
                                                            / result[f"llama_bench_{stage}_tps"])
        print(f"against llama-bench (pp{len(tokens)}; tg at depth {len(tokens)}): host runtime prefill "
              f"{result['harness_prefill_vs_llama_bench']:.3f} decode {result['harness_decode_vs_llama_bench']:.3f}; "
              f"ew_llama prefill {result['ew_llama_prefill_vs_llama_bench']:.3f} decode "
              f"{result['ew_llama_decode_vs_llama_bench']:.3f} (target >= 0.97)")
    else:
        print("(llama-bench and ew_llama not built for this machine: `make android-host` adds them to this table)")
    return result


def _host_tools() -> dict[str, Path] | None:
    """android/build/host/bin's llama-bench and ew_llama (make android-host), or None."""
    from device_runner.provenance import PROJECT_ROOT

    folder = PROJECT_ROOT / "android" / "build" / "host" / "bin"
    tools = {name: folder / name for name in ("llama-bench", "ew_llama")}
    return tools if all(p.is_file() for p in tools.values()) else None


def _llama_bench(exe: Path, model: str, n_prompt: int, n_gen: int, threads: int, n_batch: int) -> tuple[float, float]:
    """llama-bench's (prefill tok/s over n_prompt tokens, decode tok/s of n_gen tokens after n_prompt),
    with the harness's batch size and flash attention."""
    import subprocess

    def run(*extra: str) -> float:
        cmd = [str(exe), "-m", model, "-t", str(threads), "-b", str(n_batch), "-ub", str(n_batch), "-fa", "on",
               "-ngl", "0", "-r", "1", "-o", "json", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise HarnessError(f"llama-bench failed: {done.stderr.strip()[-300:]}")
        return float(json.loads(done.stdout)[0]["avg_ts"])

    return run("-p", str(n_prompt), "-n", "0"), run("-p", "0", "-n", str(n_gen), "-d", str(n_prompt))


def _ew_llama_direct(exe: Path, model: str, prompt: str, n_gen: int, threads: int, n_ctx: int,
                     n_batch: int) -> tuple[float, float]:
    """Our phone runner run directly on this machine, one request: (prefill tok/s, decode tok/s)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as case:
        Path(case, "0000.prompt").write_text(prompt)
        Path(case, "requests.tsv").write_text(f"0000\t{n_gen}\t0.0\t0\t-\t-\n")
        done = subprocess.run([str(exe), "--model", model, "--case", case, "--threads", str(threads),
                               "--ctx", str(n_ctx), "--batch", str(n_batch)],
                              capture_output=True, text=True, timeout=1800)
    stats = dict(item.split("=", 1) for line in done.stdout.splitlines() if line.startswith("EW_STAT ")
                 for item in line.split()[1:])
    if done.returncode != 0 or not stats:
        raise HarnessError(f"ew_llama failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    prefill = float(stats["evaluated_tokens"]) / (float(stats["prefill_ms"]) / 1000.0)
    generated = int(stats["generated_tokens"])
    decode = (generated - 1) / (float(stats["decode_ms"]) / 1000.0) if generated > 1 else float("nan")
    return prefill, decode


def strategy_cost(args: argparse.Namespace) -> dict[str, Any]:
    from eval import dataset
    from prompts.strategies import Budget, get_strategy
    from runtimes import GenerationSettings
    from export.catalogue import default_model_path
    from runtimes.llamacpp import LlamaCppRuntime

    users = dataset.load(args.data)
    user = users[args.user]
    runtime = LlamaCppRuntime(n_threads=args.threads, n_ctx=args.n_ctx)
    runtime.load(str(args.gguf or default_model_path()))
    budget = Budget(args.n_ctx, runtime.count_tokens)
    settings = GenerationSettings()
    n = len(user.routines)
    single, incremental = get_strategy("single-pass"), get_strategy("incremental")

    def run(requests: list) -> tuple[int, int, float]:
        started = time.perf_counter()
        completions = runtime.generate(requests)
        evaluated = sum(c.timings.prompt_tokens_evaluated or 0 for c in completions)
        prompt = sum(c.timings.prompt_tokens or 0 for c in completions)
        return evaluated, prompt, time.perf_counter() - started

    history, latest = user.model_copy(update={"sessions": user.sessions[:-1]}), user
    rows = {}
    # Single-pass, one update: the whole prompt again (cold), or with the KV cache of the
    # unchanged earlier history kept (warm: the prompt before the update was just run).
    runtime.reset_cache()
    rows["single-pass update, cold"] = run(single.plan(latest, n, budget, settings).requests)
    run(single.plan(history, n, budget, settings).requests)
    rows["single-pass update, warm cache"] = run(single.plan(latest, n, budget, settings).requests)
    # Incremental: sessions arrive one at a time; each update runs that session's questions
    # (the fixed instructions and examples stay cached between updates).
    runtime.reset_cache()
    updates = [run(incremental.plan(latest.model_copy(update={"sessions": [session]}), n, budget,
                                    settings).requests) for session in latest.sessions]
    # The first update that asks the model evaluates the fixed prefix, once per device.
    first = next((i for i, u in enumerate(updates) if u[0] > 0), 0)
    warm = updates[:first] + updates[first + 1:]
    rows["incremental 1st model update"] = updates[first]
    rows["incremental update, mean"] = tuple(statistics.mean(u[i] for u in warm) for i in range(3))
    rows["incremental update, max"] = max(warm)
    rows["incremental whole history"] = tuple(sum(u[i] for u in updates) for i in range(3))
    rows["single-pass whole history"] = rows["single-pass update, cold"]
    runtime.close()
    print(f"user {args.user}: {len(user.sessions)} sessions, {n} routines, data {args.data}")
    print(f"{'':34} {'tokens evaluated':>16} {'prompt tokens':>14} {'wall s':>8}")
    for name, (evaluated, prompt, wall) in rows.items():
        print(f"{name:34} {evaluated:>16.0f} {prompt:>14.0f} {wall:>8.1f}")
    update_ratio = rows["incremental update, max"][0] / rows["single-pass update, cold"][0]
    whole_ratio = rows["incremental whole history"][0] / rows["single-pass whole history"][0]
    print(f"\nper update (worst session): incremental evaluates {update_ratio:.3f} of single-pass (cold) "
          "(target <= 0.05); "
          f"whole history: {whole_ratio:.2f} of single-pass")
    return {"rows": {k: dict(zip(("evaluated", "prompt_tokens", "wall_s"), v)) for k, v in rows.items()},
            "update_ratio": update_ratio, "whole_history_ratio": whole_ratio, "user": args.user, "data": args.data}


def phone_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Wall time per request: --device host against the loopback phone running ew_llama."""
    import shutil
    import tempfile

    from device_runner.__main__ import main as run_main
    from device_runner.adb import load_signer
    from device_runner.provenance import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # the loopback phone lives with the tests
    from fakeadbd import FakeAdbd, unavailable_reason

    host_bin = PROJECT_ROOT / "android" / "build" / "host" / "bin"
    if unavailable_reason() is not None:
        raise HarnessError(f"No loopback phone here: {unavailable_reason()}")
    if not (host_bin / "ew_llama").is_file():
        raise HarnessError("No host ew_llama: run `make android-host` first.")
    common = ["--data", "sample", "--sample-users", "1", "--sample-sessions", str(args.sessions), "--users", "0",
              "--strategy", "incremental", "--threads", str(args.threads), "--context", str(args.n_ctx),
              "--no-progress"]
    runs: dict[str, list[dict[str, Any]]] = {"host": [], "phone": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "home" / ".android" / "adbkey"
        load_signer(key)
        with FakeAdbd(root=tmp / "phone") as phone:
            phone.keystore.add(Path(f"{key}.pub").read_text())
            phone.sandbox.install_host_libraries(host_bin / "ew_llama")
            for repeat in range(args.repeats):  # interleaved: host, phone, host, phone, ...
                for where in ("host", "phone"):
                    out = tmp / f"{where}-{repeat}"
                    device = ["--device", "host"] if where == "host" else [
                        "--device", phone.serial, "--adb-key", str(key), "--runner-bin", str(host_bin)]
                    started = time.perf_counter()
                    if run_main([*device, "--out", str(out), *common]) != 0:
                        raise HarnessError(f"The {where} run stopped; see above.")
                    elapsed = time.perf_counter() - started
                    [row] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
                    n = row["timings"]["requests"]
                    load_ms = row["timings"]["load_ms"] or 0.0
                    runs[where].append({
                        "requests": n, "wall_s": row["wall_s"], "command_s": elapsed,
                        "per_request_ms": row["wall_s"] * 1000 / n,
                        # the phone's fixed cost per case: ew_llama loads the model once per case
                        "per_request_loaded_ms": (row["wall_s"] * 1000 - (load_ms if where == "phone" else 0)) / n,
                        "engine_per_request_ms": row["timings"]["total_ms"] / n,
                        "answers": row["output"]})
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"run {repeat + 1} {where:5}: {n} requests, {row['wall_s']:.2f} s, "
                          f"{runs[where][-1]['per_request_ms']:.0f} ms per request "
                          f"({runs[where][-1]['per_request_loaded_ms']:.0f} once loaded)", flush=True)
    result: dict[str, Any] = {"sessions": args.sessions, "threads": args.threads, "repeats": args.repeats}
    for where, rows in runs.items():
        for key_ in ("per_request_ms", "per_request_loaded_ms", "engine_per_request_ms"):
            result[f"{where}_{key_}"] = statistics.median(r[key_] for r in rows)
        result[f"{where}_requests"] = rows[0]["requests"]
    result["same_answers"] = all(h["answers"] == p["answers"] for h, p in zip(runs["host"], runs["phone"]))
    result["extra"] = result["phone_per_request_ms"] / result["host_per_request_ms"] - 1
    result["extra_loaded"] = result["phone_per_request_loaded_ms"] / result["host_per_request_ms"] - 1
    print(f"\nmedian of {args.repeats}, {result['host_requests']} requests: host {result['host_per_request_ms']:.0f} ms "
          f"per request; phone {result['phone_per_request_ms']:.0f} ms ({100 * result['extra']:+.1f}%), "
          f"{result['phone_per_request_loaded_ms']:.0f} ms once the model is loaded "
          f"({100 * result['extra_loaded']:+.1f}%; goal <= +5%); same answers: {result['same_answers']}")
    return result


PHONE_ENGINES = ("llamacpp", "executorch", "mnn", "onnxruntime")


def phone_engines(args: argparse.Namespace) -> dict[str, Any]:
    """The four engines through the loopback phone and on the host, the same users and requests."""
    from device_runner.__main__ import main as run_main
    from device_runner.adb import load_signer
    from device_runner.phone_runtime import RUNNERS
    from device_runner.provenance import PROJECT_ROOT

    sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # the loopback phone lives with the tests
    from fakeadbd import FakeAdbd, unavailable_reason

    host_bin = PROJECT_ROOT / "android" / "build" / "host" / "bin"
    if unavailable_reason() is not None:
        raise HarnessError(f"No loopback phone here: {unavailable_reason()}")
    missing = [RUNNERS[r].binary for r in PHONE_ENGINES if not (host_bin / RUNNERS[r].binary).is_file()]
    if missing:
        raise HarnessError(f"No host {', '.join(missing)}: run `make android-host` first.")
    out: Path = args.out
    if args.table_only:
        return _phone_engines_table(args, out, {})
    common = ["--model", args.model, "--runtime", ",".join(PHONE_ENGINES), "--strategy", args.strategies,
              "--data", "sample", "--sample-users", str(args.users), "--sample-sessions", str(args.sessions),
              "--threads", str(args.threads), "--no-progress"]
    key = out / "adbkey" / "adbkey"
    load_signer(key)
    walls: dict[str, float] = {}
    with FakeAdbd(root=out / "phone-sandbox") as phone:
        phone.keystore.add(Path(f"{key}.pub").read_text())
        for runtime in PHONE_ENGINES:
            phone.sandbox.install_host_libraries(host_bin / RUNNERS[runtime].binary)
        for where in ("phone", "host"):
            device = ["--device", "host"] if where == "host" else [
                "--device", phone.serial, "--adb-key", str(key), "--runner-bin", str(host_bin)]
            print(f"--- {where}: python -m device_runner {' '.join(device + common)}", flush=True)
            started = time.perf_counter()
            if run_main([*device, "--out", str(out / where), "--resume", *common]) != 0:
                raise HarnessError(f"The {where} run stopped; see above.")
            walls[where] = time.perf_counter() - started
    return _phone_engines_table(args, out, walls)


def _phone_engines_table(args: argparse.Namespace, out: Path, walls: dict[str, float]) -> dict[str, Any]:
    rows = {where: [json.loads(line) for line in (out / where / "results.jsonl").read_text().splitlines()]
            for where in ("phone", "host")}
    table = ["| engine | strategy | decoding on the phone | users | output lines differing (phone vs host) | "
             "exact phone / host | Jaccard phone / host | s per request phone / host |", "|---|---|---|---|---|---|---|---|"]
    figures: dict[str, Any] = {"model": args.model, "walls_s": walls, "cases": []}
    for runtime in PHONE_ENGINES:
        for strategy in args.strategies.split(","):
            pick = {w: sorted((r for r in rows[w] if r["runtime"] == runtime and r["strategy"] == strategy),
                              key=lambda r: r["user"]) for w in rows}
            if not pick["phone"] or not pick["host"]:
                table.append(f"| {runtime} | {strategy} | - | - | no rows (phone {len(pick['phone'])}, host "
                             f"{len(pick['host'])}) | - | - | - |")
                continue
            # Lines of the outputs: one per answer for `incremental` (session, slot, value), the JSON
            # text for `single-pass`.
            differ = total = 0
            for p, h in zip(pick["phone"], pick["host"]):
                a, b = p["output"].splitlines(), h["output"].splitlines()
                differ += sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
                total += max(len(a), len(b))

            def mean(key: str, which: list[dict[str, Any]]) -> float:
                return statistics.mean(r["score"][key] for r in which)

            def per_request(which: list[dict[str, Any]]) -> float:
                n = sum(r["timings"]["requests"] or 0 for r in which)
                return sum(r["wall_s"] for r in which) / max(n, 1)

            details = pick["phone"][0]["runtime_details"]
            method = details.get("decoding", "?") + (f"; schema: {details['schema_decoding']}"
                                                     if details.get("schema_decoding") else "")
            case = {"runtime": runtime, "strategy": strategy, "users": len(pick["phone"]), "differ": differ,
                    "lines": total,
                    "exact": [mean("acc.routine_exact", pick[w]) for w in ("phone", "host")],
                    "jaccard": [mean("jaccard.flattened", pick[w]) for w in ("phone", "host")],
                    "s_per_request": [per_request(pick[w]) for w in ("phone", "host")], "decoding": method}
            figures["cases"].append(case)
            table.append(f"| {runtime} | {strategy} | {method} | {case['users']} | {differ} of {total} "
                         f"| {case['exact'][0]:.1%} / {case['exact'][1]:.1%} | {case['jaccard'][0]:.3f} / "
                         f"{case['jaccard'][1]:.3f} | {case['s_per_request'][0]:.2f} / {case['s_per_request'][1]:.2f} |")
    text = "\n".join(table)
    (out / "table.md").write_text(text + "\n")
    whole = f"; whole runs: phone {walls['phone']:.0f} s, host {walls['host']:.0f} s" if walls else ""
    print(f"\n{args.model}, {args.users} generated user(s) x {args.sessions} sessions, {args.threads} threads"
          f"{whole}\n{text}\n(also {out / 'table.md'})")
    return figures


# The models of the table: (model, its artifact or None for the catalogue's default, why it is there).
TABLE_MODELS = (
    ("tiny-llama", None, "random weights: what the strategies score without a model"),
    ("smollm2-135m", "packaged", "SmolLM2 135M Instruct, the packaged Q4_1"),
    ("gemma-3-270m", None, "Gemma 3 270M base, the packaged Q4_K_M"),
    ("gemma-3-270m", "artifacts/gemma-3-270m/gguf-q8_0", "make export MODEL=gemma-3-270m FORMAT=gguf VARIANT=Q8_0"),
)


def models(args: argparse.Namespace) -> dict[str, Any]:
    """Every model of TABLE_MODELS with every strategy, on each data set, then one table."""
    from device_runner.__main__ import main as run_main
    from eval.report import read_results, summarise
    from export.catalogue import SINGLE_FILE_FORMATS, get_recipe, packaged_model_path

    data_sets = {"natural sample": ["--data", "sample", "--sample-users", str(args.sample_users),
                                    "--sample-sessions", "40", "--sample-style", "natural"]}
    if args.dev and Path(args.dev).is_dir():
        data_sets = {"dev set": ["--data", args.dev], **data_sets}
    else:
        print(f"No dev set at {args.dev}: the table has the natural sample only.", file=sys.stderr)
    table: dict[str, dict[str, Any]] = {}
    for data_name, data_args in data_sets.items():
        out = args.out / data_name.replace(" ", "-")
        for model, artifact, _ in TABLE_MODELS:
            if artifact == "packaged":
                artifact = str(packaged_model_path(get_recipe(model)))
            elif artifact and Path(artifact).is_dir():
                artifact = str(sorted(Path(artifact).glob(SINGLE_FILE_FORMATS["gguf"]))[0])
            elif artifact:
                print(f"{model}: no {artifact}; run `make export MODEL={model} FORMAT=gguf VARIANT=Q8_0` for its "
                      "rows.", file=sys.stderr)
                continue
            strategies = "rules,hybrid,incremental,single-pass" if model == TABLE_MODELS[0][0] else \
                "hybrid,incremental,single-pass"
            if args.table_only:
                continue
            # The tiny random models hold 2048 positions (export/tiny.py); hybrid's few-shot prompt
            # on a long natural session is longer.  Random weights: a longer context costs nothing.
            context = ["--context", "4096"] if model.startswith("tiny-") else []
            print(f"{data_name}: {model} {artifact or ''}", file=sys.stderr, flush=True)
            code = run_main(["--device", "host", "--model", model, "--runtime", "llamacpp", "--strategy", strategies,
                             "--threads", str(args.threads), "--out", str(out), "--resume", "--no-progress",
                             *context, *(["--artifact", artifact] if artifact else []), *data_args])
            if code != 0:
                raise HarnessError(f"The {model} run on the {data_name} stopped (exit {code}); see above. "
                                   "Rerun `make bench-models`: finished rows are kept.")
        if not (out / "results.jsonl").is_file():
            continue
        for case in summarise(read_results(out / "results.jsonl")):
            table.setdefault(case.label, {})[data_name] = case
    lines = ["| model / runtime / strategy | " + " | ".join(f"{d}: exact | Jaccard | s / update" for d in data_sets) + " |",
             "|---|" + "---:|---:|---:|" * len(data_sets)]
    for label, by_data in table.items():
        cells = []
        for d in data_sets:
            case = by_data.get(d)
            m = case.report.metrics if case else {}
            cells += [f"{100 * m['acc.routine_exact']:.1f}%" if case else "–",
                      f"{m['jaccard.flattened']:.3f}" if case else "–",
                      f"{case.update_s:.2f}" if case and case.update_s is not None else "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    print(text)
    print(f"Table: {args.out / 'table.md'}; reports: python -m eval report --results {args.out}/<data>/results.jsonl")
    return {"table": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_runner.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--gguf", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    s = sub.add_parser("strategy-cost")
    s.add_argument("--data", default="sample")
    s.add_argument("--user", type=int, default=0)
    s.add_argument("--gguf", type=Path, default=None)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--n-ctx", type=int, default=16384)
    o = sub.add_parser("phone-overhead")
    o.add_argument("--sessions", type=int, default=5, help="sessions of the one generated user")
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--n-ctx", type=int, default=2048)
    o.add_argument("--repeats", type=int, default=3)
    e = sub.add_parser("phone-engines")
    e.add_argument("--model", default="smollm2-135m", help="a model exported to all four formats (artifacts/)")
    e.add_argument("--strategies", default="incremental,single-pass")
    e.add_argument("--users", type=int, default=1)
    e.add_argument("--sessions", type=int, default=5)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", type=Path, default=Path("results/phone-engines"))
    e.add_argument("--table-only", action="store_true", help="run nothing: the table of the rows already in --out")
    m = sub.add_parser("models")
    m.add_argument("--dev", default="../shared/data/edgewise-dev", help="the dev set's folder (skipped if absent)")
    m.add_argument("--sample-users", type=int, default=4)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--out", type=Path, default=Path("results/models"))
    m.add_argument("--table-only", action="store_true", help="run nothing: the table of the rows already in --out")
    for sp in (p, s, o, e, m):
        sp.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        if args.command == "strategy-cost" and args.data == "sample":
            from eval.synth import write_sample

            args.data = str(write_sample(Path("results/bench-sample-data"), 2, 40, 0))
        result = {"overhead": overhead, "strategy-cost": strategy_cost, "phone-overhead": phone_overhead,
                  "phone-engines": phone_engines, "models": models}[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
