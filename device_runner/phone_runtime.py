"""One engine on a phone, shaped like a runtimes.Runtime for device_runner.run.run_case.

Per case: push the runner script (android/), the engine's runner binary, the model (a GGUF
file, or the artifact folder of the other formats) and, per user, one folder of prompts and
grammars; run the user's requests in one invocation of android/run_<runner>.sh (warm-up
runs, then N measured repetitions), parse the engine's own timings (device_runner/engines.py)
and hand back `Completion`s exactly as a host runtime does.  `RUNNERS` has one row per engine;
its columns (constrained decoding, one-line prompts, pushes, libraries, record format) replace
branches on names.  llama.cpp runs our own runner, ew_llama (android/runners/llamacpp): one
process per case, the KV cache kept across requests, GBNF grammars with the greedy fast path.
onnxruntime-genai runs ours too, ew_ort (android/runners/onnxruntime): the same contract, choices
and JSON schemas applied as the host adapter applies them ("plain" constraint files).
MNN runs ours too, ew_mnn (android/runners/mnn): choices as the host adapter applies them, a JSON
schema decoded free (rows say so: Runner.schema_decoding).
ExecuTorch runs ours too, ew_et (android/runners/executorch): choices as the host adapter applies
them, a JSON schema decoded free (rows say so), prompts tokenized here (device_runner/et_tokens.py).
A runner row with constrained=False refuses a request with choices or a JSON schema with a
sentence before anything is pushed.
"""

from __future__ import annotations

import fnmatch
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
from runtimes.versions import LLAMACPP_VERSION, ONNXRUNTIME_GENAI_VERSION

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
    pushes_libraries: bool = True  # pushes its shared libraries from android/build/<abi>/lib beside the binary
    libraries: tuple[str, ...] = ("*.so*",)  # which ones (file name patterns): the folder holds every engine's
    artifact_files: Callable[[Path, list[Path]], list[Path]] | None = None  # which artifact files to push
    # How a constrained request's GRAMMAR_FILE column reaches the runner: "gbnf" (one GBNF grammar,
    # llama.cpp's), or "plain": the choices as a .choices file (one choice per line, exact UTF-8) or
    # the JSON schema as a .schema.json file; the runner applies them itself.
    grammar_format: str = "gbnf"
    # How a JSON-schema request is decoded where that differs from `decoding` (rows record it).
    schema_decoding: str | None = None
    # The host tokenizes for the runner (device_runner/et_tokens.py, in the executorch toolchain env):
    # ID.tokens per request, G.choices.first beside each .choices, and ew_et.vocab pushed with the model.
    host_tokens: bool = False
    build_note: str = ""  # said after "Build it: ..." when the binary is missing (what that build cannot do)


RUNNERS = {
    "llamacpp": Runner("run_ew_llama.sh", "ew_llama", f"llama.cpp {LLAMACPP_VERSION}", "llamacpp",
                       constrained=True, report="ew", decoding="gbnf", seq_len_column=False,
                       pushes_libraries=False),
    # Our ExecuTorch runner, ew_et (android/runners/executorch): choices by the host's prefix rule; a
    # JSON schema decodes free there (no llguidance for phones), and rows say so.  The stock llama_main
    # (android/run_executorch.sh) stays for measuring by hand.
    "executorch": Runner("run_ew_et.sh", "ew_et", "ExecuTorch", "executorch", constrained=True, report="ew",
                         decoding="greedy-constrained (choices: prefix rule)", schema_decoding="free",
                         grammar_format="plain", seq_len_column=False, pushes_libraries=True, host_tokens=True,
                         libraries=("libexecutorch*.so*",),
                         build_note=" ew_et is built only with --abi host so far (`make android-host`): it links the "
                                    "executorch wheel, whose libraries are glibc (manylinux), not Android's bionic."),
    # Our MNN runner, ew_mnn (android/runners/mnn): choices by the host's prefix rule, each prompt
    # evaluated whole as the host adapter does; a JSON schema decodes free there (no llguidance for
    # phones), and rows say so.  The stock llm_demo (android/run_mnn.sh) stays for measuring by hand.
    "mnn": Runner("run_ew_mnn.sh", "ew_mnn", "MNN", "mnn", constrained=True, report="ew",
                  decoding="greedy-constrained (choices: prefix rule)", schema_decoding="free",
                  grammar_format="plain", seq_len_column=False, pushes_libraries=True,
                  libraries=("_mnncengine*.so*", "libMNN*.so*", "libgomp*.so*", "libc++_shared.so")),
    # Our onnxruntime-genai runner, ew_ort (android/runners/onnxruntime); android/run_onnxruntime.sh
    # (the stock model_benchmark: timings, no text, no grammar) stays for measuring by hand.
    "onnxruntime": Runner("run_ew_ort.sh", "ew_ort", f"onnxruntime-genai {ONNXRUNTIME_GENAI_VERSION}", "ortgenai",
                          constrained=True, report="ew",
                          decoding="greedy-constrained (choices: prefix rule; schema: llguidance)",
                          grammar_format="plain", seq_len_column=False, pushes_libraries=True,
                          libraries=("libonnxruntime*.so*",), artifact_files=_onnx_files),
}
PHONE_RUNTIMES = tuple(RUNNERS)


def runner_bin_for(abi: str | None, options: PhoneOptions, runtime: str = "llamacpp") -> Path:
    folder = options.runner_bin or ANDROID_DIR / "build" / (abi or "arm64-v8a") / "bin"
    runner = RUNNERS[runtime]
    if not (folder / runner.binary).is_file():
        raise HarnessError(f"No {runner.binary} ({runner.engine}'s runner for --runtime {runtime}) for {abi} in "
                           f"{folder}. Build it: ANDROID_NDK=/path/to/ndk android/build.sh --abi {abi} --only "
                           f"{runner.build} (or pass --runner-bin DIR).{runner.build_note}")
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
        # Keys in the schema's own order: llguidance writes an object's properties in that order.
        text, suffix = json.dumps(request.json_schema), ".schema.json"
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
        self._tokenizer_proc: Any = None  # device_runner/et_tokens.py, for runners with host_tokens
        self._tokenizer_err: Any = None  # its stderr (a temporary file)
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
            # One stage_all: every sha256 compared, then the phone's free space checked for all that is
            # missing, before anything is pushed.
            items = [(ANDROID_DIR / self.runner.script, self.remote_script, False),
                     (ANDROID_DIR / "common.sh", f"{self.remote_script.rsplit('/', 1)[0]}/common.sh", False),
                     (local_bin / self.runner.binary, f"{self.remote_bin}/{self.runner.binary}", True)]
            libs = local_bin.parent / "lib"  # shared libraries android/build.sh puts next to bin/
            if self.runner.pushes_libraries and libs.is_dir():
                items += [(lib, f"{self.remote_bin}/{_safe(lib.name)}", False) for lib in sorted(libs.iterdir())
                          if any(fnmatch.fnmatch(lib.name, pattern) for pattern in self.runner.libraries)]
            with tempfile.TemporaryDirectory() as tmp:
                if self.runner.host_tokens:
                    vocab = Path(tmp) / "ew_et.vocab"
                    vocab.write_text(self._host_tokens({"vocab": True})["vocab"], encoding="utf-8")
                    items.append((vocab, f"{self.remote_model}/ew_et.vocab", False))
                if self.artifact.is_dir():
                    for path in self._artifact_files():
                        rel = "/".join(_safe(part) for part in path.relative_to(self.artifact).parts)
                        items.append((path, f"{self.remote_model}/{rel}", False))
                else:
                    items.append((self.artifact, self.remote_model, False))
                self.phone.stage_all(items)
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
            **({"schema_decoding": self.runner.schema_decoding} if self.runner.schema_decoding else {}),
            **({"grammar_fast_path": True} if self.runner.report == "ew" and self.runner.grammar_format == "gbnf"
               else {}),
        })

    @property
    def max_context(self) -> int | None:
        """Positions an ExecuTorch .pte holds (its export's max_seq_len, pte_config.json), as the host
        runtime reports them; None for the other formats."""
        config = self.artifact / "pte_config.json" if self.artifact.is_dir() else None
        if config is None or not config.is_file():
            return None
        return int(json.loads(config.read_text()).get("max_seq_len") or 0) or None

    def count_tokens(self, text: str) -> int:
        """The model's own tokenizer on the host (llama.cpp's vocab-only load of the GGUF, the
        executorch env's tokenizer for runners that take ids, or the artifact folder's
        tokenizer.json), as the host runner counts; else a rough count."""
        if self.runner.host_tokens:
            return int(self._host_tokens({"count": [text]})["counts"][0])
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

        if runtime_spec(self.runtime).artifact_format == "mnn" and \
                not (self.artifact / "tokenizer_config.json").is_file():
            from runtimes.mnn import render_llm_config_chat  # as the host mnn adapter: llm_config.json's template

            return render_llm_config_chat(self.artifact, request.messages)
        return render_chat(self.artifact, request.messages)

    def close(self) -> None:
        self._vocab = None
        if self._tokenizer_proc is not None:  # et_tokens.py ends when its stdin closes
            proc, self._tokenizer_proc = self._tokenizer_proc, None
            for stream in (proc.stdin, proc.stdout, self._tokenizer_err):
                if stream is not None:
                    stream.close()
            try:
                proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a helper that does not end is stopped
                proc.kill()

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
        tokens = None
        choice_index: dict[tuple[str, ...], int] = {}
        if self.runner.host_tokens:  # the runner reads ids, not text: the host's tokenizer makes them
            for request in requests:
                if request.choices is not None:
                    choice_index.setdefault(request.choices, len(choice_index))
            tokens = self._host_tokens({
                "requests": [{"prompt": r.prompt} if r.prompt is not None else {"messages": [dict(m) for m in r.messages]}
                             for r in requests],
                "choices": [list(c) for c in choice_index]})
        for index, request in enumerate(requests):
            rid = f"{index:04d}"
            prompt = request.prompt if request.prompt is not None else self._chat_text(request)
            files[f"{rid}.prompt"] = prompt.encode()
            if tokens is not None:
                files[f"{rid}.tokens"] = " ".join(str(t) for t in tokens["ids"][index]).encode()
            gname, grammar = _constraint_file(request, self.runner) if self.runner.constrained else ("-", None)
            if grammar is not None:
                files[gname] = grammar.encode()
                if tokens is not None and request.choices is not None:
                    rows = tokens["first"][choice_index[request.choices]]
                    files[gname + ".first"] = "".join("\t".join(str(v) for v in row) + "\n" for row in rows).encode()
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

    def _host_tokens(self, job: dict[str, Any]) -> dict[str, Any]:
        """device_runner/et_tokens.py in the executorch toolchain env (the host runtime's tokenizer),
        one process kept for this runtime's jobs (closed by close())."""
        import subprocess

        from export import env as export_env

        if not export_env.env_ready("executorch"):
            raise HarnessError(f"{self.runner.binary} takes token ids that the host makes with the model's own "
                               "tokenizer, in the executorch toolchain env, which is not there yet: run "
                               "`make export MODEL=... FORMAT=executorch` once (it creates the env).")
        if self._tokenizer_proc is None or self._tokenizer_proc.poll() is not None:
            self._tokenizer_err = tempfile.TemporaryFile("w+")  # (a pipe nobody reads could fill up)
            self._tokenizer_proc = subprocess.Popen(
                [str(export_env.env_python("executorch")), str(Path(__file__).with_name("et_tokens.py"))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._tokenizer_err, text=True,
                env=export_env.worker_env(), cwd=PROJECT_ROOT)
        proc = self._tokenizer_proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"folder": str(self.artifact), **job}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        answer = json.loads(line) if line.strip() else None
        if answer is None or "error" in answer:
            if answer:
                why = answer["error"]
            else:
                proc.wait(timeout=30)
                self._tokenizer_err.seek(0)
                why = (self._tokenizer_err.read().strip().splitlines() or ["it stopped without a word"])[-1]
            raise HarnessError(f"Tokenizing the requests for {self.runner.binary} failed in the executorch toolchain "
                               f"env: {why}. Check that {self.artifact} holds the tokenizer files of its export.")
        return answer

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
                text, reason, timings = engines.ew_llama_completion(record, self.runner.binary)
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


