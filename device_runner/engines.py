"""Parse what the on-device runners print into `runtimes.Timings`.

- llama.cpp: our runner's records (android/run_ew_llama.sh: ew_llama prints one record per
  request with its numbers in an EW_STAT line); and the framed records of android/run_llamacpp.sh
  (llama.cpp's stock llama-completion), with llama.cpp's own `llama_perf_*` lines inside;
- ExecuTorch: the `PyTorchObserver {json}` line of the llama runner;
- MNN: llm_demo's prefill/decode counters and llm_bench's table;
- onnxruntime-genai: model_benchmark's report.
Rates follow DESIGN.md: decode tok/s counts the tokens after the first.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from eval.errors import HarnessError
from runtimes.base import Timings

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass
class Record:
    """One runner invocation on the phone (a request, or llama.cpp's shared prefix evaluation)."""

    kind: str
    id: str
    rc: int | None = None
    rss_kb: int | None = None
    wall_ms: float | None = None
    text: str = ""
    log: list[str] = field(default_factory=list)
    stats: dict[str, str] = field(default_factory=dict)  # EW_STAT key=value (our own runners)


@dataclass
class CaseOutput:
    records: list[Record]
    notes: list[str]
    errors: list[str]
    done: bool  # the script reached its end (EW_DONE)


STREAM = "the on-device runner's output"


def parse_case_output(stdout: str, source: str = STREAM) -> CaseOutput:
    """The EW_* lines of android/run_*.sh.  A damaged record (EW_RC or EW_WALL_MS not a number,
    EW_TEXT not base64, a record cut off before its EW_END, an EW_END with no record open) raises
    a HarnessError naming `source` and the line: its timings and text cannot be trusted."""
    records: list[Record] = []
    notes: list[str] = []
    errors: list[str] = []
    done = False
    current: Record | None = None
    begun = 0
    text_parts: list[str] = []

    def damaged(number: int, what: str) -> HarnessError:
        said = f" The runner said: {'; '.join(errors)}." if errors else ""
        return HarnessError(f"{source}, line {number}: {what}; the record stream is damaged, so that case's "
                            f"timings and text cannot be trusted.{said} Run the case again (--resume keeps the "
                            "finished rows); if it happens again, run the script by hand on the phone "
                            "(`adb shell sh ...`) to see its whole output.")

    lines = stdout.splitlines()
    for number, line in enumerate(lines, start=1):
        tag, _, rest = line.partition(" ")
        rest = rest.strip()
        if tag == "EW_BEGIN":
            if current is not None:
                raise damaged(number, f"a new record begins before the record {current.kind} {current.id} "
                                      f"(line {begun}) ended with EW_END")
            kind, _, rid = rest.partition(" ")
            current, text_parts, begun = Record(kind, rid), [], number
        elif tag == "EW_END":
            if current is None:
                raise damaged(number, "EW_END with no record open (no EW_BEGIN before it)")
            if current.rc is None:
                raise damaged(number, f"the record {current.kind} {current.id} has no EW_RC line")
            try:
                raw = base64.b64decode("".join(text_parts), validate=True)
            except ValueError:  # binascii.Error
                raise damaged(number, f"the EW_TEXT lines of the record {current.kind} {current.id} are not "
                                      "base64") from None
            current.text = raw.decode("utf-8", "replace")
            records.append(current)
            current = None
        elif current is not None and tag == "EW_LOG":
            current.log.append(line.partition(" ")[2])
        elif current is not None and tag == "EW_RC":
            try:
                current.rc = int(rest)
            except ValueError:
                raise damaged(number, f"EW_RC {rest[:40]!r} is not an integer exit code") from None
        elif current is not None and tag == "EW_RSS_KB" and rest.isascii() and rest.isdigit():
            current.rss_kb = int(rest)  # optional: a script that cannot measure it prints nothing
        elif current is not None and tag == "EW_WALL_MS":
            try:
                current.wall_ms = float(rest)
            except ValueError:
                raise damaged(number, f"EW_WALL_MS {rest[:40]!r} is not a number of milliseconds") from None
        elif current is not None and tag == "EW_TEXT":
            text_parts.append(rest)
        elif current is not None and tag == "EW_STAT":
            for item in rest.split():
                key, eq, value = item.partition("=")
                if not eq:
                    raise damaged(number, f"EW_STAT item {item[:40]!r} is not key=value")
                current.stats[key] = value
        elif tag == "EW_NOTE":
            notes.append(line.partition(" ")[2])
        elif tag == "EW_ERROR":
            errors.append(line.partition(" ")[2])
        elif tag == "EW_DONE":
            done = True
    if current is not None:
        raise damaged(begun, f"the record {current.kind} {current.id} is cut off: the output ends before its "
                             f"EW_END{'' if done else ' (and without EW_DONE: the script stopped early)'}")
    return CaseOutput(records, notes, errors, done)


def llamacpp_perf(lines: list[str]) -> dict[str, float]:
    """llama.cpp's perf lines (`common_perf_print:` in the tools of 0.3.36, `llama_perf_*_print:` in
    older ones), plus the
    prompt-cache lines of llama-completion ("session file matches N / M tokens")."""
    out: dict[str, float] = {}
    for line in lines:
        if m := re.search(r"load time =\s*" + _NUM + r" ms", line):
            out["load_ms"] = float(m.group(1))
        elif m := re.search(r"prompt eval time =\s*" + _NUM + r" ms /\s*(\d+) tokens", line):
            out["prompt_eval_ms"], out["prompt_eval_tokens"] = float(m.group(1)), int(m.group(2))
        elif m := re.search(r"\beval time =\s*" + _NUM + r" ms /\s*(\d+) runs", line):
            out["eval_ms"], out["eval_runs"] = float(m.group(1)), int(m.group(2))
        elif m := re.search(r"\bsampling time =\s*" + _NUM + r" ms(?: /\s*(\d+) runs)?", line):
            out["sampling_ms"] = float(m.group(1))
            if m.group(2):
                out["sampling_runs"] = int(m.group(2))
        elif m := re.search(r"total time =\s*" + _NUM + r" ms /\s*(\d+) tokens", line):
            out["total_ms"], out["total_tokens"] = float(m.group(1)), int(m.group(2))
        elif m := re.search(r"session file matches (\d+) / (\d+) tokens", line):
            out["cached_tokens"], out["prompt_tokens"] = int(m.group(1)), int(m.group(2))
        elif "session file has exact match" in line:
            out["exact_match"] = 1
    return out


def ew_llama_completion(record: Record, runner: str = "ew_llama") -> tuple[str, str, Timings]:
    """(text, finish reason, timings) of one request as our runners report it (EW_STAT; ew_llama,
    ew_ort): the same quantities the host runtime measures, in the same process.  `runner` names it
    in messages."""
    st = record.stats
    try:
        def num(key: str) -> float:
            return float(st[key])

        prompt, evaluated, generated = int(num("prompt_tokens")), int(num("evaluated_tokens")), int(num("generated_tokens"))
        prefill_ms, decode_ms, ttft_ms = num("prefill_ms"), num("decode_ms"), num("ttft_ms")
        timings = Timings(
            load_ms=num("load_ms"),
            ttft_ms=ttft_ms if ttft_ms >= 0 else None,
            prefill_tps=evaluated / prefill_ms * 1000 if prefill_ms > 0 and evaluated else None,
            decode_tps=(generated - 1) / decode_ms * 1000 if generated > 1 and decode_ms > 0 else None,
            prompt_tokens=prompt,
            prompt_tokens_evaluated=evaluated,
            generated_tokens=generated,
            peak_rss_mb=round(record.rss_kb / 1024, 1) if record.rss_kb else None,
            sampling_ms=num("sampling_ms"),
            total_ms=num("total_ms"),
        )
        return record.text, st.get("finish", "length"), timings
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{runner}'s EW_STAT line of request {record.id} lacks or garbles {exc}") from None


END_OF_TEXT = " [end of text]\n"


def llamacpp_text(stdout_text: str) -> tuple[str, str]:
    """llama-completion's stdout -> (generated text, finish reason).  It prints the text, then
    " [end of text]" when the model (or grammar) ended it, then a blank line or two."""
    text = stdout_text
    while text.endswith("\n\n"):
        text = text[:-1]
    if text.endswith(END_OF_TEXT):
        return text[: -len(END_OF_TEXT)], "stop"
    return text.rstrip("\n") if text.endswith("\n\n") else text.removesuffix("\n"), "length"


def llamacpp_timings(record: Record, prefix: Record | None = None) -> Timings:
    """Timings of one request.  With a shared prefix, the prefix's own evaluation (done once per
    case) is charged to the first request that used it, as the host runtime does."""
    perf = llamacpp_perf(record.log)
    evaluated = int(perf.get("prompt_eval_tokens", 0))
    prompt_ms = perf.get("prompt_eval_ms", 0.0)
    cached = int(perf.get("cached_tokens", 0))
    if prefix is not None:
        pre = llamacpp_perf(prefix.log)
        evaluated += int(pre.get("prompt_eval_tokens", 0))
        prompt_ms += pre.get("prompt_eval_ms", 0.0)
    eval_runs = int(perf.get("eval_runs", 0))
    sampling_runs = int(perf.get("sampling_runs", 0))
    generated = max(sampling_runs, eval_runs + 1) if (sampling_runs or eval_runs) else 0
    per_sample = perf.get("sampling_ms", 0.0) / sampling_runs if sampling_runs else 0.0
    prompt_tokens = perf.get("prompt_tokens") or (cached + int(perf.get("prompt_eval_tokens", 0)))
    return Timings(
        load_ms=perf.get("load_ms"),
        ttft_ms=round(prompt_ms + per_sample, 3) if "prompt_eval_ms" in perf else None,
        prefill_tps=evaluated / prompt_ms * 1000 if prompt_ms and evaluated else None,
        decode_tps=eval_runs / perf["eval_ms"] * 1000 if perf.get("eval_ms") and eval_runs else None,
        prompt_tokens=int(prompt_tokens) if prompt_tokens else None,
        prompt_tokens_evaluated=evaluated,
        generated_tokens=generated,
        peak_rss_mb=round(max(record.rss_kb, prefix.rss_kb if prefix and prefix.rss_kb else 0) / 1024, 1)
        if record.rss_kb else None,
        sampling_ms=perf.get("sampling_ms"),
        total_ms=_total_ms(record, perf) + (_total_ms(prefix, llamacpp_perf(prefix.log)) if prefix else 0.0),
    )


def _total_ms(record: Record, perf: dict[str, float]) -> float:
    """The runner's wall clock when it has milliseconds, else llama.cpp's load + total time."""
    if record.wall_ms is not None:
        return record.wall_ms
    return perf.get("load_ms", 0.0) + perf.get("total_ms", 0.0)


def executorch_timings(output: str) -> Timings:
    """ExecuTorch's llama runner prints `PyTorchObserver {json}` with millisecond stamps."""
    for line in reversed(output.splitlines()):
        if "PyTorchObserver" in line:
            stats = json.loads(line.split("PyTorchObserver", 1)[1].strip())
            break
    else:
        raise ValueError("no 'PyTorchObserver {...}' line in the ExecuTorch runner's output")
    scale = 1000 / float(stats.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))  # -> ms
    t = {k: float(v) * scale for k, v in stats.items() if k.endswith("_ms")}
    prompt, generated = int(stats.get("prompt_tokens", 0)), int(stats.get("generated_tokens", 0))
    prefill_ms = t["prompt_eval_end_ms"] - t["inference_start_ms"]
    decode_ms = t["inference_end_ms"] - t["first_token_ms"]
    return Timings(
        load_ms=t["model_load_end_ms"] - t["model_load_start_ms"],
        ttft_ms=t["first_token_ms"] - t["inference_start_ms"],
        prefill_tps=prompt / prefill_ms * 1000 if prefill_ms > 0 else None,
        decode_tps=(generated - 1) / decode_ms * 1000 if decode_ms > 0 and generated > 1 else None,
        prompt_tokens=prompt, prompt_tokens_evaluated=prompt, generated_tokens=generated,
        sampling_ms=t.get("aggregate_sampling_time_ms"),
        total_ms=t["inference_end_ms"] - t["inference_start_ms"],
    )


def mnn_timings(output: str) -> Timings:
    """MNN llm_demo's summary ("prompt tokens num = N", "prefill time = S s", ...)."""
    def grab(name: str) -> float | None:
        m = re.search(re.escape(name) + r"\s*=\s*" + _NUM, output)
        return float(m.group(1)) if m else None

    prompt, decoded = grab("prompt tokens num"), grab("decode tokens num")
    prefill_s, decode_s = grab("prefill time"), grab("decode time")
    if prompt is None or prefill_s is None:
        raise ValueError("no 'prompt tokens num' / 'prefill time' counters in MNN llm_demo's output")
    load_s = grab("load time")
    return Timings(
        load_ms=load_s * 1000 if load_s is not None else None,
        ttft_ms=prefill_s * 1000,
        prefill_tps=grab("prefill speed") or (prompt / prefill_s if prefill_s else None),
        # llm_demo counts decode tokens after the prefill produced the first one
        decode_tps=grab("decode speed") or (decoded / decode_s if decode_s and decoded else None),
        prompt_tokens=int(prompt), prompt_tokens_evaluated=int(prompt),
        generated_tokens=int(decoded) + 1 if decoded is not None else None,
        total_ms=((prefill_s or 0) + (decode_s or 0)) * 1000,
    )


def mnn_bench(output: str) -> dict[str, dict[str, float]]:
    """MNN llm_bench's Markdown table: {"pp512": {"tps": 123.4, "sd": 1.2}, "tg128": {...}}."""
    found: dict[str, dict[str, float]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for i, cell in enumerate(cells[:-1]):
            if re.fullmatch(r"(pp|tg)\d+", cell) and (m := re.match(_NUM + r"(?:\s*±\s*" + _NUM + ")?", cells[i + 1])):
                found[cell] = {"tps": float(m.group(1)), "sd": float(m.group(2) or 0)}
    return found


def ortgenai_timings(output: str) -> Timings:
    """onnxruntime-genai's benchmark/c model_benchmark report (averages over its iterations)."""
    def section(title: str) -> str:
        m = re.search(re.escape(title) + r".*?:\n((?:[ \t]+.*\n?)+)", output)
        return m.group(1) if m else ""

    def value(block: str, key: str) -> float | None:
        m = re.search(re.escape(key) + r"\s*" + _NUM, block)
        return float(m.group(1)) if m else None

    prompt_block = section("Prompt processing")
    gen_block = section("Token generation")
    if not prompt_block:
        raise ValueError("no 'Prompt processing' section in model_benchmark's output")
    m = re.search(r"prompt tokens:\s*(\d+),\s*tokens to generate:\s*(\d+)", output)
    prompt, generate = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    ttft_us = value(prompt_block, "avg (us):")
    rss = re.search(r"Peak working set size \(bytes\):\s*(\d+)", output)
    e2e = value(section("E2E generation"), "avg (ms):")
    return Timings(
        ttft_ms=ttft_us / 1000 if ttft_us is not None else None,
        prefill_tps=value(prompt_block, "avg (tokens/s):"),
        decode_tps=value(gen_block, "avg (tokens/s):"),
        prompt_tokens=prompt, prompt_tokens_evaluated=prompt, generated_tokens=generate,
        sampling_ms=(value(section("Token sampling"), "avg (us):") or 0) / 1000 or None,
        peak_rss_mb=round(int(rss.group(1)) / 2**20, 1) if rss else None,
        total_ms=e2e,
    )


# ---- android/run_executorch.sh, run_mnn.sh, run_onnxruntime.sh: one record per request whose
# EW_TEXT is the runner's whole stdout and whose EW_LOG lines are its stderr.

_ET_LOG = re.compile(r"^[DIEWF] \d\d:\d\d:\d\d\.\d+ ")  # ExecuTorch's ET_LOG lines


def executorch_text(stdout: str, prompt: str) -> str:
    """llama_main's stdout -> the generated text: it echoes the prompt, streams the tokens, then
    prints its report (the `PyTorchObserver {json}` line)."""
    lines = stdout.split("\n")
    cut = next((i for i, line in enumerate(lines) if line.startswith("PyTorchObserver")), len(lines))
    text = "\n".join(line for line in lines[:cut] if not _ET_LOG.match(line))
    echoed = prompt.rstrip("\n")  # the script passes the prompt as $(cat file): trailing newlines go
    if text.startswith(echoed):
        text = text[len(echoed):]
    return text.removesuffix("\n")


_MNN_SUMMARY = "\n#################################\n"


def mnn_text(stdout: str) -> str:
    """llm_demo's stdout -> the generated text: the stream between its `prompt file is ...` line
    and the `####` line that opens its counters."""
    start = stdout.find("prompt file is ")
    start = stdout.find("\n", start) + 1 if start >= 0 else 0
    end = stdout.find(_MNN_SUMMARY, start)
    return stdout[start:end if end >= 0 else len(stdout)]


def mnn_load_ms(stdout: str) -> float | None:
    """llm_demo times its model load with MNN's AUTOTIME ("<func>, <line>, cost time: X ms"), the
    first such line it prints."""
    m = re.search(r"cost time: " + _NUM + r" ms", stdout)
    return float(m.group(1)) if m else None


def _executorch_report(stdout: str, report: str, prompt: str) -> tuple[str, Timings]:
    return executorch_text(stdout, prompt), executorch_timings(report)


def _mnn_report(stdout: str, report: str, prompt: str) -> tuple[str, Timings]:
    t = mnn_timings(report)
    return mnn_text(stdout), t if t.load_ms is not None else replace(t, load_ms=mnn_load_ms(stdout))


def _ortgenai_report(stdout: str, report: str, prompt: str) -> tuple[str, Timings]:
    return "", ortgenai_timings(report)  # model_benchmark prints no generated text


# runtime -> (its runner's stdout, stdout + stderr, the prompt) -> (generated text, timings)
REPORTS = {"executorch": _executorch_report, "mnn": _mnn_report, "onnxruntime": _ortgenai_report}


def engine_completion(runtime: str, record: Record, prompt: str, max_tokens: int) -> tuple[str, str, Timings]:
    """(text, finish reason, timings) of one request run by run_executorch.sh, run_mnn.sh or
    run_onnxruntime.sh.  The engine's own report gives the timings; the script's peak RSS and wall
    clock fill what the report lacks."""
    if runtime not in REPORTS:
        raise ValueError(f"no on-device parser for runtime {runtime!r}")
    stdout = record.text
    text, t = REPORTS[runtime](stdout, stdout + "\n" + "\n".join(record.log), prompt)
    if t.peak_rss_mb is None and record.rss_kb:
        t = replace(t, peak_rss_mb=round(record.rss_kb / 1024, 1))
    if record.wall_ms is not None:
        t = replace(t, total_ms=record.wall_ms)
    reason = "length" if (t.generated_tokens or 0) >= max_tokens else "stop"
    return text, reason, t


def timings_dict(t: Timings) -> dict[str, Any]:
    return t.to_dict()
