"""One engine on a phone, shaped like a runtimes.Runtime for device_runner.run.run_case.

Per case: push the runner script (android/), the engine's runner binary, the model (a GGUF
file, or the artifact folder of the other formats) and, per user, one folder of prompts and
grammars; run the user's requests in one invocation of android/run_<runner>.sh (warm-up
runs, then N measured repetitions), parse the engine's own timings (device_runner/engines.py)
and hand back `Completion`s exactly as a host runtime does.  `RUNNERS` has one row per engine;
its columns (constrained decoding, one-line prompts, pushes, libraries, record format) replace
branches on names.  llama.cpp runs our own runner, ew_llama (android/runners/llamacpp): one
process per case, the KV cache kept across requests, GBNF grammars with the greedy fast path.
The ExecuTorch, MNN and onnxruntime-genai runner binaries have no grammar, so a request with
choices or a JSON schema is refused for them with a sentence before anything is pushed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, unknown_name
from export.catalogue import SINGLE_FILE_FORMATS
from runtimes import Completion, Request, RuntimeInfo, runtime_spec
from runtimes.llamacpp_sampler import choices_grammar, schema_grammar
from runtimes.versions import LLAMACPP_VERSION

from . import engines
from .adb import q
from .phone import DeviceStopped, Phone, PhoneOptions, say
from .provenance import PROJECT_ROOT, file_sha256
from .run import repetitions

ANDROID_DIR = PROJECT_ROOT / "android"


def _onnx_files(folder: Path, files: list[Path]) -> list[Path]:
    """export/onnx.py's mobile/ copy (ORT format) is not what genai_config.json loads: not pushed."""
    config = folder / "genai_config.json"
    if config.is_file() and "mobile/" not in config.read_text():
        return [p for p in files if p.relative_to(folder).parts[0] != "mobile"]
    return files


@dataclass(frozen=True)
class Runner:
    """How one engine runs on a phone (one row of RUNNERS)."""

    script: str  # in android/
    binary: str  # in android/build/<abi>/bin (android/build.sh builds it)
    engine: str  # for messages and runtime_version
    build: str  # android/build.sh --only value
    constrained: bool  # applies Request.choices / json_schema
    # What a request's record holds: "ew" (our runner's EW_STAT numbers, engines.ew_llama_completion),
    # "llamacpp-tools" (llama-completion's perf lines and a shared prefix record, engines.llamacpp_*;
    # android/run_llamacpp.sh, kept for the stock tools), "engine" (the runner's whole report,
    # engines.engine_completion).
    report: str
    decoding: str = "free"  # how choices / json_schema are applied on the phone, as rows record it
    one_line_prompts: bool = False  # reads one prompt per line (MNN's llm_demo)
    seq_len_column: bool = True  # requests.tsv carries prompt + output tokens (llama_main's --seq_len)
    pushes_libraries: bool = True  # pushes android/build/<abi>/lib/*.so beside the binary
    artifact_files: Callable[[Path, list[Path]], list[Path]] | None = None  # which artifact files to push
    # How a constrained request's GRAMMAR_FILE column reaches the runner: "gbnf" (one GBNF grammar,
    # llama.cpp's), or "plain": the choices as a .choices file (one choice per line, exact UTF-8) or
    # the JSON schema as a .schema.json file; the runner applies them itself.
    grammar_format: str = "gbnf"


RUNNERS = {
    "llamacpp": Runner("run_ew_llama.sh", "ew_llama", f"llama.cpp {LLAMACPP_VERSION}", "llamacpp",
                       constrained=True, report="ew", decoding="gbnf", seq_len_column=False,
                       pushes_libraries=False),
    "executorch": Runner("run_executorch.sh", "llama_main", "ExecuTorch", "executorch", constrained=False,
                         report="engine"),
    "mnn": Runner("run_mnn.sh", "llm_demo", "MNN", "mnn", constrained=False, report="engine", one_line_prompts=True),
    "onnxruntime": Runner("run_onnxruntime.sh", "model_benchmark", "onnxruntime-genai", "ortgenai",
                          constrained=False, report="engine", artifact_files=_onnx_files),
}
PHONE_RUNTIMES = tuple(RUNNERS)


def runner_bin_for(abi: str | None, options: PhoneOptions, runtime: str = "llamacpp") -> Path:
    folder = options.runner_bin or ANDROID_DIR / "build" / (abi or "arm64-v8a") / "bin"
    runner = RUNNERS[runtime]
    if not (folder / runner.binary).is_file():
        raise HarnessError(f"No {runner.binary} ({runner.engine}'s runner for --runtime {runtime}) for {abi} in "
                           f"{folder}. Build it: ANDROID_NDK=/path/to/ndk android/build.sh --abi {abi} --only "
                           f"{runner.build} (or pass --runner-bin DIR).")
    return folder


def refuse_unsupported(runtime: str, requests: list[Request]) -> None:
    """A sentence for a request the runtime's on-device runner cannot run as asked."""
    runner = RUNNERS[runtime]
    for index, request in enumerate(requests):
        if not runner.constrained and (request.choices is not None or request.json_schema is not None):
            kind = "a choice among fixed answers" if request.choices is not None else "a JSON schema"
            raise HarnessError(
                f"Request {index} needs constrained decoding ({kind}), which {runner.engine}'s on-device runner "
                f"({runner.binary}) cannot apply: it has no grammar support. On phones, llama.cpp is the engine that "
                f"supports constrained decoding: use --runtime llamacpp, or run --runtime {runtime} with --device host "
                "(the host adapter constrains the output itself).")
        if runner.grammar_format == "plain" and request.choices is not None and any(
                "\n" in choice or not choice for choice in request.choices):
            raise HarnessError(
                f"Request {index} has an empty choice or one with a line break, which {runner.engine}'s on-device "
                f"runner ({runner.binary}) cannot read (it takes one choice per line). Use --runtime llamacpp "
                f"on phones, or --runtime {runtime} with --device host.")
        if runner.one_line_prompts and request.prompt is not None and ("\n" in request.prompt.rstrip("\n")
                                                                       or request.prompt.startswith("#")):
            raise HarnessError(
                f"Request {index} has a multi-line prompt (or one starting with '#'), which {runner.engine}'s "
                f"{runner.binary} cannot take: it reads one prompt per line of its prompt file and skips lines "
                f"starting with '#'. Use --runtime llamacpp on phones, or --runtime {runtime} with --device host.")


def _grammar(request: Request) -> str | None:
    """The GBNF grammar llama.cpp's tools apply, the host runtime's own (runtimes/llamacpp_sampler.py)."""
    if request.choices is not None:
        return choices_grammar(request.choices)
    if request.json_schema is not None:
        return schema_grammar(request.json_schema)
    return None


def _constraint_file(request: Request, runner: Runner) -> tuple[str, str | None]:
    """(file name, text) of a request's constraint in the runner's grammar_format; ("-", None) if none."""
    if runner.grammar_format == "gbnf":
        text = _grammar(request)
        suffix = ".gbnf"
    elif request.choices is not None:
        text, suffix = "\n".join(request.choices), ".choices"
    elif request.json_schema is not None:
        text, suffix = json.dumps(request.json_schema, sort_keys=True), ".schema.json"
    else:
        text = None
    if text is None:
        return "-", None
    return f"g{hashlib.sha256(text.encode()).hexdigest()[:12]}{suffix}", text


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class PhoneRuntime:
    """One engine on a phone, shaped like a runtimes.Runtime for device_runner.run.run_case:
    `generate(requests)` runs one user's whole batch in one on-device invocation of
    android/run_<runtime>.sh.  `artifact` is a GGUF file (llamacpp) or an artifact folder."""

    def __init__(self, phone: Phone, facts: dict[str, Any], artifact: Path, n_ctx: int, threads: int | None,
                 runtime: str = "llamacpp") -> None:
        if runtime not in RUNNERS:
            raise unknown_name("phone runtime", runtime, RUNNERS)
        self.phone = phone
        self.facts = facts
        self.artifact = artifact
        self.n_ctx = n_ctx
        self.threads = threads
        self.runtime = runtime
        self.runner = RUNNERS[runtime]
        self.options = phone.options
        base = self.options.stage_dir.rstrip("/")
        self.remote_model = f"{base}/models/{file_sha256(artifact)[:16]}/{_safe(artifact.name)}"
        self.remote_bin = f"{base}/bin/{_safe(str(facts.get('abi') or 'unknown'))}"
        self.remote_script = f"{base}/scripts/{self.runner.script}"
        self.cases_dir = f"{base}/cases/{_safe(phone.serial)}"
        self._vocab: Any = None
        self._extra: dict[str, Any] = {}
        self._bin_sha: str | None = None
        self._local_bin: Path | None = None
        self._staged = False

    # -- Runtime-like surface --

    def load(self, artifact: str | None = None) -> None:
        """Check what is needed here; llama.cpp pushes at once, the other engines at their first
        batch, after its requests passed refuse_unsupported (no large push for a refused case)."""
        fmt = runtime_spec(self.runtime).artifact_format
        if fmt not in SINGLE_FILE_FORMATS and not self.artifact.is_dir():
            raise HarnessError(f"The {self.runtime} artifact {self.artifact} is not a folder; run "
                               f"`make export MODEL=... FORMAT={fmt}`.")
        self._local_bin = runner_bin_for(self.facts.get("abi"), self.options, self.runtime)
        self._bin_sha = file_sha256(self._local_bin / self.runner.binary)
        self.phone.check_writable(self.options.stage_dir)
        if self.runner.constrained:  # nothing it could refuse later: push now
            self._stage_all()

    def _stage_all(self) -> None:
        assert self._local_bin is not None
        local_bin = self._local_bin

        def push_all() -> None:
            self.phone.stage(ANDROID_DIR / self.runner.script, self.remote_script)
            self.phone.stage(ANDROID_DIR / "common.sh", f"{self.remote_script.rsplit('/', 1)[0]}/common.sh")
            self.phone.stage(local_bin / self.runner.binary, f"{self.remote_bin}/{self.runner.binary}", executable=True)
            libs = local_bin.parent / "lib"  # shared libraries android/build.sh puts next to bin/
            if self.runner.pushes_libraries and libs.is_dir():
                for lib in sorted(libs.glob("*.so*")):
                    self.phone.stage(lib, f"{self.remote_bin}/{_safe(lib.name)}")
            if self.artifact.is_dir():
                for path in self._artifact_files():
                    rel = "/".join(_safe(part) for part in path.relative_to(self.artifact).parts)
                    self.phone.stage(path, f"{self.remote_model}/{rel}")
            else:
                self.phone.stage(self.artifact, self.remote_model)
        self.phone.retrying(push_all)
        self._staged = True

    def _artifact_files(self) -> list[Path]:
        files = sorted(p for p in self.artifact.rglob("*") if p.is_file())
        return self.runner.artifact_files(self.artifact, files) if self.runner.artifact_files else files

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(self.runtime, f"{self.runner.engine} ({self.runner.binary} on the device)", {
            "n_ctx": self.n_ctx, "threads": self.threads, "binary_sha256": self._bin_sha,
            "transport": self.options.transport, "repeat": self.options.repeat, "warmup": self.options.warmup,
            "affinity": self.options.affinity, "runner": f"android/{self.runner.script}",
            "decoding": self.runner.decoding,
            **({"grammar_fast_path": True} if self.runner.report == "ew" else {}),
        })

    def count_tokens(self, text: str) -> int:
        """The model's own tokenizer on the host (llama.cpp's vocab-only load of the GGUF, or the
        artifact folder's tokenizer.json), as the host runner counts; else a rough count."""
        if self._vocab is None:
            try:
                if runtime_spec(self.runtime).artifact_format == "gguf":
                    import llama_cpp

                    vocab = llama_cpp.Llama(str(self.artifact), vocab_only=True, verbose=False)
                    # (a Llama object is itself callable: that runs a completion, so wrap it)
                    self._vocab = lambda t: len(vocab.tokenize(t.encode(), add_bos=True, special=True))
                else:
                    from tokenizers import Tokenizer

                    tokenizer = Tokenizer.from_file(str(self.artifact / "tokenizer.json"))
                    self._vocab = lambda t: len(tokenizer.encode(t).ids)
            except Exception:  # noqa: BLE001 - no tokenizer library or file: a rough count
                self._vocab = False
        if self._vocab is False:
            return len(text) // 3 + 1
        return int(self._vocab(text))

    def _chat_text(self, request: Request) -> str:
        """Chat messages as the prompt text the on-device runner reads: the artifact's own chat
        template rendered here (a GGUF's tokenizer.chat_template, or the export folder's), as the
        host runtimes render it."""
        if runtime_spec(self.runtime).artifact_format in SINGLE_FILE_FORMATS:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = llama_cpp.Llama(str(self.artifact), vocab_only=True, verbose=False)
            template = vocab.metadata.get("tokenizer.chat_template")
            if not template:
                raise HarnessError(f"{self.artifact} has no chat template, so chat messages cannot be sent to "
                                   "the phone; send a raw prompt or use a GGUF with tokenizer.chat_template.")
            model = vocab._model
            bos = model.token_get_text(model.token_bos()) if model.token_bos() != -1 else ""
            eos = model.token_get_text(model.token_eos()) if model.token_eos() != -1 else ""
            text = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(
                messages=[dict(m) for m in request.messages]).prompt
            return text.removeprefix(bos) if bos else text  # llama.cpp's tools add BOS themselves
        from runtimes.onnxruntime import render_chat

        return render_chat(self.artifact, request.messages)

    def close(self) -> None:
        self._vocab = None

    def row_extra(self) -> dict[str, Any]:
        return self._extra

    def generate(self, requests: list[Request]) -> list[Completion]:
        return self.generate_batch(requests)

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """One user's requests in one on-device invocation (runtimes.RunsBatches)."""
        self._extra = {}
        if not requests:
            return []
        refuse_unsupported(self.runtime, requests)
        # A chat request's cache_prefix is a prefix of its message, not of the rendered text the
        # phone reads: the phone's runner reuses the common prefix on its own.
        requests = [replace(r, cache_prefix=None) if r.messages else r for r in requests]
        if not self._staged:
            self._stage_all()
        waited = self._thermal_gate()
        start_state = self.phone.state()
        runs = self.phone.retrying(self._run_batch, requests)
        end_state = self.phone.state()
        if self.options.cooldown_s:
            time.sleep(self.options.cooldown_s)
        measured = runs[self.options.warmup:]
        completions, measurement = repetitions(measured, self.options.warmup)
        uncontrolled = []
        if not self.facts.get("root"):
            uncontrolled.append("no root: CPU governor and frequencies not pinned")
        uncontrolled += self._notes
        self._extra = {
            "device": {**self.facts, "state_start": start_state, "state_end": end_state},
            "measurement": {**measurement,
                            "thermal_wait_s": waited, "cooldown_s": self.options.cooldown_s,
                            "affinity": self.options.affinity, "uncontrolled": uncontrolled,
                            "reconnects": self.phone.reconnects},
        }
        return completions

    # -- internals --

    def _thermal_gate(self) -> dict[str, Any] | None:
        limit = self.options.thermal_limit_c
        if limit is None:
            return None
        started = time.monotonic()
        announced = False
        while True:
            state = self.phone.state()
            zone = self.options.thermal_zone
            temp = state["battery"].get("temperature_c") if zone == "battery" else state["thermal_c"].get(zone)
            waited = round(time.monotonic() - started, 2)
            if temp is None:
                return {"zone": zone, "waited_s": waited, "note": f"zone '{zone}' not found; gate skipped",
                        "zones": sorted(state["thermal_c"])}
            if temp < limit:
                return {"zone": zone, "waited_s": waited, "temperature_c": temp, "limit_c": limit}
            if waited > self.options.thermal_timeout_s:
                say(f"{self.phone.serial}: still {temp:.1f} °C after {waited:.0f} s; running anyway (recorded)")
                return {"zone": zone, "waited_s": waited, "temperature_c": temp, "limit_c": limit, "timed_out": True}
            if not announced:
                say(f"{self.phone.serial}: {zone} at {temp:.1f} °C, waiting until below {limit:.1f} °C")
                announced = True
            time.sleep(self.options.thermal_poll_s)

    def _case_folder(self, requests: list[Request]) -> tuple[bytes, str]:
        """A tar of requests.tsv, prompts, grammars and prefixes; and its content hash."""
        buffer = io.BytesIO()
        prefixes: dict[str, str] = {}
        lines = []
        files: dict[str, bytes] = {}
        for index, request in enumerate(requests):
            rid = f"{index:04d}"
            prompt = request.prompt if request.prompt is not None else self._chat_text(request)
            files[f"{rid}.prompt"] = prompt.encode()
            gname, grammar = _constraint_file(request, self.runner) if self.runner.constrained else ("-", None)
            if grammar is not None:
                files[gname] = grammar.encode()
            pname = "-"
            if request.cache_prefix:
                pname = prefixes.setdefault(request.cache_prefix,
                                            f"p{hashlib.sha256(request.cache_prefix.encode()).hexdigest()[:12]}.txt")
                files[pname] = request.cache_prefix.encode()
            s = request.settings
            line = f"{rid}\t{s.max_tokens}\t{s.temperature}\t{s.seed}\t{gname}\t{pname}"
            if self.runner.seq_len_column:  # SEQ_LEN: llama_main's --seq_len counts prompt + output tokens
                line += f"\t{min(self.count_tokens(prompt) + s.max_tokens, self.n_ctx)}"
            lines.append(line + "\n")
        files["requests.tsv"] = "".join(lines).encode()
        digest = hashlib.sha256()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in sorted(files):
                data = files[name]
                digest.update(name.encode() + b"\0" + data + b"\0")
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue(), digest.hexdigest()[:16]

    def _run_batch(self, requests: list[Request]) -> list[list[Completion]]:
        """All repetitions (warm-up first) of one user's requests; raises LinkLost to be retried."""
        tar_bytes, key = self._case_folder(requests)
        remote_case = f"{self.cases_dir}/{key}"
        with tempfile.TemporaryDirectory() as tmp:
            local_tar = Path(tmp) / "case.tar"
            local_tar.write_bytes(tar_bytes)
            self.phone.stage(local_tar, f"{remote_case}.tar")
        self.phone.t.run(f"rm -rf {q(remote_case)} && mkdir -p {q(remote_case)} && cd {q(remote_case)} && "
                         f"tar xf {q(remote_case + '.tar')}", 120, "unpacking the case on the phone")
        command = (f"sh {q(self.remote_script)} --bin {q(self.remote_bin)} --model {q(self.remote_model)} "
                   f"--case {q(remote_case)} --ctx {int(self.n_ctx)}"
                   + (f" --threads {int(self.threads)}" if self.threads else "")
                   + (f" --affinity {q(self.options.affinity)}" if self.options.affinity else ""))
        runs = []
        self._notes: list[str] = []
        for _ in range(self.options.warmup + self.options.repeat):
            self.phone.t.run(f"rm -rf {q(remote_case)}/out {q(remote_case)}/*.cache", 60, "clearing the last run")
            result = self.phone.t.shell(command, self.options.case_timeout_s)
            parsed = engines.parse_case_output(result.out)
            if parsed.errors or result.rc != 0 or not parsed.done:
                raise DeviceStopped(f"{self.phone.serial}: {self.runner.engine}'s on-device runner "
                                    f"({self.runner.binary}) failed (exit {result.rc}): "
                                    + ("; ".join(parsed.errors) or result.out.strip()[-800:])
                                    + (f" (after {len(parsed.records)} of {len(requests)} requests)"
                                       if self.runner.report == "ew" else ""))
            bad = [r for r in parsed.records if r.rc != 0]
            if bad:
                raise DeviceStopped(f"{self.phone.serial}: {self.runner.binary} exited {bad[0].rc} on {bad[0].kind} "
                                    f"{bad[0].id}: " + " | ".join(bad[0].log[-5:]))
            self._notes = sorted(set(self._notes) | set(parsed.notes))
            runs.append(self._ew_completions(parsed, requests) if self.runner.report == "ew"
                        else self._completions(parsed, requests) if self.runner.report == "llamacpp-tools"
                        else self._engine_completions(parsed, requests))
        self.phone.t.shell(f"rm -rf {q(remote_case)} {q(remote_case)}.tar", 60)
        return runs

    def _ew_completions(self, parsed: engines.CaseOutput, requests: list[Request]) -> list[Completion]:
        by_id = {r.id: r for r in parsed.records if r.kind == "request"}
        out = []
        for index in range(len(requests)):
            record = by_id.get(f"{index:04d}")
            if record is None:
                raise DeviceStopped(f"{self.phone.serial}: no output for request {index} from {self.runner.binary}")
            try:
                text, reason, timings = engines.ew_llama_completion(record)
            except ValueError as exc:
                raise DeviceStopped(f"{self.phone.serial}: {exc}") from None
            out.append(Completion(text, timings, reason))
        return out

    def _completions(self, parsed: engines.CaseOutput, requests: list[Request]) -> list[Completion]:
        prefixes = {r.id: r for r in parsed.records if r.kind == "prefix"}
        by_id = {r.id: r for r in parsed.records if r.kind == "request"}
        charged: set[str] = set()
        out = []
        for index, request in enumerate(requests):
            record = by_id.get(f"{index:04d}")
            if record is None:
                raise DeviceStopped(f"{self.phone.serial}: no output for request {index} from the runner")
            prefix = None
            if request.cache_prefix:
                name = f"p{hashlib.sha256(request.cache_prefix.encode()).hexdigest()[:12]}.txt"
                if name not in charged:
                    prefix, _ = prefixes.get(name), charged.add(name)
            text, reason = engines.llamacpp_text(record.text)
            out.append(Completion(text, engines.llamacpp_timings(record, prefix), reason))
        return out


    def _engine_completions(self, parsed: engines.CaseOutput, requests: list[Request]) -> list[Completion]:
        by_id = {r.id: r for r in parsed.records if r.kind == "request"}
        out = []
        for index, request in enumerate(requests):
            record = by_id.get(f"{index:04d}")
            if record is None:
                raise DeviceStopped(f"{self.phone.serial}: no output for request {index} from the runner")
            try:
                text, reason, timings = engines.engine_completion(self.runtime, record, request.prompt or "",
                                                                  request.settings.max_tokens)
            except (ValueError, KeyError) as exc:
                raise DeviceStopped(f"{self.phone.serial}: could not read {self.runner.binary}'s report for request "
                                    f"{index} ({exc}); its last lines: " + " | ".join(
                                        (record.text.strip().splitlines() + record.log)[-5:])) from None
            out.append(Completion(text, timings, reason))
        return out


