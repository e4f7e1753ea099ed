"""`python -m eval {synth,score,report}`: the benchmark's own commands.

An entry point, so a composition root: `synth --writer openai|llamacpp` builds the runtime that
writes the dialogues here (make_writer) and hands it to eval.synth through prompts.writer's
RuntimeWriter; eval.synth itself imports no prompt and no runtime (README, "Layering").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.catalogue import default_model_path
from prompts.writer import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    LLAMACPP_MAX_TEXT_CHARS,
    RuntimeWriter,
)
from runtimes import get_runtime

from .errors import HarnessError
from .jsonl import BadLine, lines_of, loads_line
from .parse import check_routine
from .schema import Routine
from .score import ALL_METRICS, score
from .synth import DEFAULT_RETRIES, DEFAULT_STYLE, OUTPUT_FILES, STYLES, WRITER_LOG_FILE, write_sample


def _read_routine_lists(path: Path, what: str) -> list[list[Any]]:
    """Each line: a JSON list of routines or an object holding one under "routines"."""
    if not path.is_file():
        raise HarnessError(f"The {what} file '{path}' does not exist.")
    out = []
    for number, raw, _ in lines_of(path.read_bytes()):
        try:
            obj = loads_line(raw)
        except BadLine as exc:
            raise HarnessError(f"{path}, line {number}: {exc}; each line must be one user's routines as JSON "
                               "(fix that line, or write [] for a user with none).") from None
        if isinstance(obj, dict) and isinstance(obj.get("routines"), list):
            obj = obj["routines"]
        if not isinstance(obj, list):
            raise HarnessError(f"{path}, line {number}: expected a list of routines or {{\"routines\": [...]}}.")
        out.append(obj)
    return out


def _check_truth(path: Path, users: list[list[Any]]) -> list[list[Routine]]:
    """Ground truth must follow the schema exactly: a bad routine stops with a sentence."""
    checked = []
    for number, routines in enumerate(users, start=1):
        row = []
        for index, item in enumerate(routines):
            routine, reason = check_routine(item)
            if routine is None:
                raise HarnessError(f"{path}, line {number}, routine {index}: {reason}. Ground truth must follow "
                                   "the schema of eval/schema.py exactly; fix that routine.")
            row.append(routine)
        checked.append(row)
    return checked


def _check_predictions(path: Path, users: list[list[Any]]) -> tuple[list[list[Routine | None]], list[str]]:
    """Predictions validated against the schema, never coerced: a routine that fails keeps its
    place (None: it scores as nothing) and its reasons are reported."""
    checked, reasons = [], []
    for number, routines in enumerate(users, start=1):
        row: list[Routine | None] = []
        for index, item in enumerate(routines):
            routine, reason = check_routine(item)
            if routine is None:
                reasons.append(f"{path.name}, line {number}, routine {index}: {reason}")
            row.append(routine)
        checked.append(row)
    return checked, reasons


def cmd_score(args: argparse.Namespace) -> int:
    truth_raw = _read_routine_lists(Path(args.routines), "routines")
    preds_raw = _read_routine_lists(Path(args.predictions), "predictions")
    if len(truth_raw) != len(preds_raw):
        raise HarnessError(
            f"{args.routines} has {len(truth_raw)} users but {args.predictions} has {len(preds_raw)} lines; "
            "line n of the predictions must be user n's prediction (write [] for a user with none)."
        )
    truth = _check_truth(Path(args.routines), truth_raw)
    preds, reasons = _check_predictions(Path(args.predictions), preds_raw)
    report = score(truth, preds)
    if args.json:
        print(json.dumps({**report.to_dict(), "parse_errors": {"count": len(reasons), "reasons": reasons}}))
        return 0
    print(f"{report.n_users} users, {report.n_truth_routines} ground-truth routines, "
          f"{report.n_predicted_routines} predicted (after the cut). Scorer: {report.version}")
    if reasons:
        print(f"{len(reasons)} predicted routine{'s' if len(reasons) != 1 else ''} could not be read against the "
              "schema; each keeps its place and scores as nothing:")
        for reason in reasons:
            print(f"  {reason}")
    width = max(len(n) for n in ALL_METRICS)
    for name in ALL_METRICS:
        value = report.metrics[name]
        print(f"  {name:<{width}}  {'n/a' if value is None else f'{value:.4f}'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    md, pngs, text = write_report(args.results, args.out, mixed_data=args.mixed_data)
    print(text)
    print(f"Wrote {md} and {', '.join(str(p) for p in pngs)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("synth", help="write a generated sample (see `python -m eval synth --help`)", add_help=False)
    p_score = sub.add_parser("score", help="score predictions against ground-truth routines")
    p_score.add_argument("--routines", required=True, help="routines.jsonl (ground truth, one user per line)")
    p_score.add_argument("--predictions", required=True, help="predictions, line-aligned with --routines")
    p_score.add_argument("--json", action="store_true", help="print one JSON object")
    p_report = sub.add_parser("report", help="Markdown table and PNG charts from a results.jsonl")
    p_report.add_argument("--results", required=True)
    p_report.add_argument("--out", default=None, help="folder for report.md and charts (default: beside results)")
    p_report.add_argument("--mixed-data", action="store_true",
                          help="allow rows measured on different data (their `data` field) in one report, "
                               "each case split by data and labelled in a data column")
    try:
        if argv and argv[0] == "synth":
            return synth_main(argv[1:])
        args = parser.parse_args(argv)
        return {"score": cmd_score, "report": cmd_report}[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2



# --- python -m eval synth --------------------------------------------------------------------

def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _retries(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


WRITERS = ("templates", "openai", "llamacpp")


def _make_writer(args: argparse.Namespace) -> Any:
    """The runtime-backed writer the arguments ask for; None for the templates."""
    only = {"--base-url": ("openai", args.base_url), "--model": ("openai", args.model),
            "--schema-mode": ("openai", args.schema_mode), "--gguf": ("llamacpp", args.gguf),
            "--chat-format": ("llamacpp", args.chat_format)}
    for option, (kind, value) in only.items():
        if value is not None and args.writer != kind:
            raise HarnessError(f"{option} goes with --writer {kind}, not --writer {args.writer}.")
    if args.writer == "templates":
        for option, value in (("--temperature", args.temperature), ("--max-tokens", args.max_tokens)):
            if value is not None:
                raise HarnessError(f"{option} goes with a language-model writer (--writer openai or llamacpp), "
                                   "not --writer templates.")
        return None
    return make_writer(args.writer, base_url=args.base_url, model=args.model, schema_mode=args.schema_mode,
                       gguf=args.gguf, chat_format=args.chat_format, temperature=args.temperature,
                       max_tokens=args.max_tokens)


def _progress_line(n_users: int, n_sessions: int) -> Callable[[dict[str, Any]], None]:
    def report(row: dict[str, Any]) -> None:
        tries = f"{row['attempts']} tr{'y' if row['attempts'] == 1 else 'ies'}"
        more = f", and {len(row['reasons']) - 1} more" if len(row["reasons"]) > 1 else ""
        what = "written" if row["outcome"] == "kept" else f"templates instead ({row['reasons'][0]}{more})"
        print(f"user {row['user'] + 1}/{n_users}, session {row['session_id'] + 1}/{n_sessions}: "
              f"{what} after {tries}", file=sys.stderr, flush=True)
    return report


def synth_main(argv: list[str] | None = None) -> int:
    """`python -m eval synth --users N --sessions M --seed S --out DIR [--writer ...]`: write a sample folder."""
    parser = argparse.ArgumentParser(
        prog="python -m eval synth",
        description="Write a synthetic EdgeWisePersona sample (characters, routines, sessions, session labels).",
    )
    parser.add_argument("--users", type=_count, default=8, help="number of users (default 8)")
    parser.add_argument("--sessions", type=_count, default=40, help="sessions per user (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--out", default="data/sample", help="folder to write (default data/sample)")
    parser.add_argument("--style", choices=STYLES, default=DEFAULT_STYLE,
                        help="how the template dialogues talk: natural (default: numbers as words, nicknames, "
                             "vague requests, corrections, ...) or plain (every value in digits, plain names)")
    writing = parser.add_argument_group(
        "writing the dialogues with a language model",
        "The plan (users, routines, contexts, settings, labels) is the same for every writer. A written "
        "session is checked against its plan and rewritten with the reasons; one that never passes keeps "
        f"its template dialogue. {WRITER_LOG_FILE} records every try.")
    writing.add_argument("--writer", choices=WRITERS, default="templates",
                         help="who writes the dialogues: the offline phrase templates (default), an "
                              "OpenAI-compatible endpoint, or llama.cpp on a GGUF model")
    writing.add_argument("--base-url", help="openai: the endpoint up to /v1 (default $OPENAI_BASE_URL, else "
                                            "OpenAI's); the key comes from $OPENAI_API_KEY")
    writing.add_argument("--model", help="openai: the model id (default: the server's only model)")
    writing.add_argument("--schema-mode", choices=("json_schema", "json_object", "auto", "none"),
                         help="openai: how the dialogue's JSON schema is sent (default auto; none = ask in words only)")
    writing.add_argument("--gguf", help="llamacpp: the GGUF model (default: the packaged Gemma 3 270M)")
    writing.add_argument("--chat-format", help="llamacpp: a llama-cpp-python chat format such as gemma, for a "
                                               "GGUF without its own chat template (default: the GGUF's template)")
    writing.add_argument("--retries", type=_retries, default=DEFAULT_RETRIES,
                         help=f"rewrites of a session that fails its check (default {DEFAULT_RETRIES})")
    writing.add_argument("--temperature", type=float, help="sampling temperature (default 0.8)")
    writing.add_argument("--max-tokens", type=_count, help="tokens per written session (default 1200)")
    args = parser.parse_args(argv)
    writer = None
    try:
        writer = _make_writer(args)
        progress = _progress_line(args.users, args.sessions) if writer is not None else None
        path = write_sample(args.out, args.users, args.sessions, args.seed, writer=writer, retries=args.retries,
                            progress=progress, style=args.style)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if writer is not None:
            writer.close()
    files = [*OUTPUT_FILES, WRITER_LOG_FILE] if writer is not None else OUTPUT_FILES
    print(f"Wrote {args.users} users x {args.sessions} sessions (seed {args.seed}) to {path}: "
          f"{', '.join(files)}.")
    return 0


def make_writer(kind: str, *, base_url: str | None = None, model: str | None = None,
                schema_mode: str | None = None, gguf: str | None = None, chat_format: str | None = None,
                temperature: float | None = None, max_tokens: int | None = None,
                max_text_chars: int | None = None, runtime_options: dict[str, Any] | None = None,
                ) -> RuntimeWriter:
    """The writer `python -m eval synth --writer KIND` uses.

    openai: an OpenAI-compatible endpoint (`base_url`, default $OPENAI_BASE_URL or OpenAI's;
    key from $OPENAI_API_KEY; `model`, default the server's only model; `schema_mode` as in
    runtimes.openai, default "auto", or "none" to send no schema).  llamacpp: llama.cpp in this
    process on `gguf` (default: the packaged Gemma 3 270M), with the GGUF's own chat template
    or `chat_format` (a llama-cpp-python family name; "gemma" for the packaged model, which has
    no template), its messages bounded to LLAMACPP_MAX_TEXT_CHARS unless `max_text_chars` says
    otherwise.  `runtime_options` go to the runtime as they are (e.g. max_retries, timeout).
    """
    options = {"temperature": DEFAULT_TEMPERATURE if temperature is None else temperature,
               "max_tokens": max_tokens or DEFAULT_MAX_TOKENS}
    if kind == "openai":
        mode = schema_mode or "auto"
        runtime = get_runtime("openai", base_url=base_url, model=model,
                              schema_mode="auto" if mode == "none" else mode, **(runtime_options or {}))
        if not model:
            runtime.load("")  # asks the server for its models (and fails early if it is not there)
            served = runtime.served_models or []
            if len(served) != 1:
                raise HarnessError(f"Pass --model: the server at {runtime.base_url} serves "
                                   f"{', '.join(served) or 'no model it names'}.")
            runtime.model = served[0]
        return RuntimeWriter(runtime, f"openai:{runtime.model}", use_schema=mode != "none",
                             max_text_chars=max_text_chars, **options)
    if kind == "llamacpp":
        if gguf is None:
            gguf = str(default_model_path())
            chat_format = chat_format or "gemma"  # the packaged base model ships no chat template
        runtime = get_runtime("llamacpp", **{"n_ctx": 4096, "chat_format": chat_format, **(runtime_options or {})})
        runtime.load(gguf)
        return RuntimeWriter(runtime, f"llamacpp:{Path(gguf).name}",
                             max_text_chars=max_text_chars or LLAMACPP_MAX_TEXT_CHARS, **options)
    raise HarnessError(f"Unknown writer '{kind}'. Available: openai, llamacpp (or templates, in eval.synth).")


if __name__ == "__main__":
    sys.exit(main())
