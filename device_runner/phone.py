"""Run the benchmark plan on phones over ADB: the same cases and rows as `--device host`.

Per device: connect, read its facts, push the runner (android/), the model (a GGUF file, or
the artifact folder of the other formats) and, per user, one folder of prompts and grammars;
run the user's requests in one invocation of android/run_<runtime>.sh (warm-up runs, then N
measured repetitions), parse the engine's own timings (device_runner/engines.py) and hand
`Completion`s to the strategy exactly as the host runner does.  Only llama.cpp applies
constrained decoding on the phone (GBNF grammars); the ExecuTorch, MNN and onnxruntime-genai
runner binaries have no grammar, so a request with choices or a JSON schema is refused for them
with a sentence before anything is pushed.  Several
phones run in parallel, one worker thread each, into one results file (writes serialised).
A dropped link reconnects a bounded number of times and the interrupted user's batch runs
again; rows are written only once a user is finished, so nothing is lost or doubled.
"""

from __future__ import annotations

import hashlib
import io
import json
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.errors import HarnessError, unknown_name
from export.recipes import get_recipe
from prompts.strategies import get_strategy
from runtimes import REGISTRY, Completion, GenerationSettings, Request, RuntimeInfo, Timings

from . import engines
from .adb import PROJECT_DIR, AdbError, LinkLost, Transport, open_transport, q
from .facts import device_facts, device_state
from .provenance import PROJECT_ROOT, file_sha256
from .results import ResultsFile
from .run import NO_MODEL, RunOptions, _run_case, aggregate_timings, case_id, check_single_artifact, load_data, \
    parse_users, resolve_artifact

ANDROID_DIR = PROJECT_ROOT / "android"
LLAMACPP_VERSION = "0.3.36"  # the llama.cpp source android/build.sh compiles (llama-cpp-python's)
PHONE_RUNTIMES = ("llamacpp", "executorch", "mnn", "onnxruntime")


@dataclass(frozen=True)
class Runner:
    script: str  # in android/
    binary: str  # in android/build/<abi>/bin (android/build.sh builds it)
    engine: str  # for messages and runtime_version
    build: str  # android/build.sh --only value


RUNNERS = {
    "llamacpp": Runner("run_llamacpp.sh", "llama-completion", f"llama.cpp {LLAMACPP_VERSION}", "llamacpp"),
    "executorch": Runner("run_executorch.sh", "llama_main", "ExecuTorch", "executorch"),
    "mnn": Runner("run_mnn.sh", "llm_demo", "MNN", "mnn"),
    "onnxruntime": Runner("run_onnxruntime.sh", "model_benchmark", "onnxruntime-genai", "ortgenai"),
}


class DeviceStopped(HarnessError):
    """This phone cannot go on (link lost for good, a runner failure); the others continue."""


@dataclass(frozen=True)
class PhoneOptions:
    transport: str = "adb-shell"
    repeat: int = 1  # measured repetitions per case; timings are their median
    warmup: int = 0  # unmeasured runs before them
    thermal_limit_c: float | None = None  # wait before each case until below this
    thermal_zone: str = "battery"  # "battery" (dumpsys battery) or a thermal zone's type
    thermal_timeout_s: float = 600.0  # then run anyway, and record that
    thermal_poll_s: float = 5.0
    cooldown_s: float = 0.0  # pause after each case
    affinity: str | None = None  # taskset hex mask, e.g. "f0" for the big cores
    runner_bin: Path | None = None  # host folder with the runner binaries (default android/build/<abi>/bin)
    stage_dir: str = PROJECT_DIR
    reconnect_tries: int = 3
    case_timeout_s: float = 3600.0
    transport_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.warmup < 0:
            raise HarnessError(f"--repeat {self.repeat} must be >= 1 and --warmup {self.warmup} >= 0.")
        hex_digits = "0123456789abcdefABCDEF"
        if self.affinity is not None and not all(c in hex_digits for c in self.affinity.removeprefix("0x")):
            raise HarnessError(f"--affinity {self.affinity!r} is not a hex CPU mask like f0.")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Phone:
    """One connected phone: shell, staging with sha256 skip, reconnects."""

    def __init__(self, serial: str, options: PhoneOptions) -> None:
        self.serial = serial
        self.options = options
        self.transport: Transport | None = None
        self.reconnects = 0

    def connect(self) -> None:
        self.transport = open_transport(self.serial, self.options.transport, **self.options.transport_options)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def t(self) -> Transport:
        assert self.transport is not None
        return self.transport

    def reconnect(self, why: str) -> None:
        for attempt in range(1, self.options.reconnect_tries + 1):
            time.sleep(min(0.5 * 2 ** (attempt - 1), 10))
            say(f"{self.serial}: {why}; reconnecting ({attempt}/{self.options.reconnect_tries})")
            try:
                self.t.close()
                self.t.connect()
                self.reconnects += 1
                return
            except AdbError as exc:
                why = str(exc)
        raise DeviceStopped(f"{self.serial}: lost the connection and could not reconnect after "
                            f"{self.options.reconnect_tries} tries ({why}). Its finished rows are saved; check the "
                            "cable / Wi-Fi and rerun with --resume.")

    def retrying(self, action: Any, *args: Any) -> Any:
        """Run action(*args); on a dropped link reconnect and run it again (bounded)."""
        while True:
            try:
                return action(*args)
            except LinkLost as exc:
                if self.reconnects >= self.options.reconnect_tries * 4:
                    raise DeviceStopped(f"{self.serial}: the connection keeps dropping ({exc}); stopped this "
                                        "device. Rerun with --resume.") from None
                self.reconnect(str(exc))

    def check_writable(self, folder: str) -> None:
        result = self.t.shell(f"mkdir -p {q(folder)} && touch {q(folder)}/.ew_w && rm -f {q(folder)}/.ew_w", 30)
        if result.rc != 0:
            raise AdbError(f"{self.serial}: cannot write {folder} ({result.out.strip()}): without root, adb may write "
                           "only under /data/local/tmp and /sdcard. Keep the default staging folder, or run "
                           "`adb root` on a userdebug build first.")

    def stage(self, local: Path, remote: str, executable: bool = False) -> bool:
        """Push `local` to `remote` unless the phone already has the same bytes; True if pushed."""
        digest = file_sha256(local)
        have = self.t.shell(f"sha256sum {q(remote)} 2>/dev/null", 600)
        if have.rc == 0 and have.out.split()[:1] == [digest]:
            return False
        folder = remote.rsplit("/", 1)[0]
        self.check_writable(folder)
        size = local.stat().st_size
        if size > 16 << 20:
            say(f"{self.serial}: pushing {local.name} ({size / 2**20:.0f} MiB)")
        self.t.push(local, remote + ".part", timeout=max(120.0, size / (1 << 20)))
        mode = "755" if executable else "644"
        self.t.run(f"chmod {mode} {q(remote)}.part && mv -f {q(remote)}.part {q(remote)}", 60, "finishing a push")
        check = self.t.shell(f"sha256sum {q(remote)}", 600)
        if check.out.split()[:1] != [digest]:
            raise LinkLost(f"{self.serial}: {remote} arrived corrupted (sha256 mismatch); pushing again")
        return True

    def state(self) -> dict[str, Any]:
        return self.retrying(device_state, self.t)


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
    if runtime == "llamacpp":
        return
    runner = RUNNERS[runtime]
    for index, request in enumerate(requests):
        if request.choices is not None or request.json_schema is not None:
            kind = "a choice among fixed answers" if request.choices is not None else "a JSON schema"
            raise HarnessError(
                f"Request {index} needs constrained decoding ({kind}), which {runner.engine}'s on-device runner "
                f"({runner.binary}) cannot apply: it has no grammar support. On phones, llama.cpp is the engine that "
                f"supports constrained decoding: use --runtime llamacpp, or run --runtime {runtime} with --device host "
                "(the host adapter constrains the output itself).")
        if runtime == "mnn" and request.prompt is not None and ("\n" in request.prompt.rstrip("\n")
                                                                or request.prompt.startswith("#")):
            raise HarnessError(
                f"Request {index} has a multi-line prompt (or one starting with '#'), which MNN's llm_demo cannot "
                "take: it reads one prompt per line of its prompt file and skips lines starting with '#'. Use "
                "--runtime llamacpp on phones, or --runtime mnn with --device host.")


def _grammar(request: Request) -> str | None:
    from runtimes.llamacpp import LlamaCppRuntime

    if request.choices is not None:
        return LlamaCppRuntime._choices_grammar(request.choices)[1]
    if request.json_schema is not None:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        return json_schema_to_gbnf(json.dumps(request.json_schema))
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class PhoneRuntime:
    """One engine on a phone, shaped like a runtimes.Runtime for device_runner.run._run_case:
    `generate(requests)` runs one user's whole batch in one on-device invocation of
    android/run_<runtime>.sh.  `artifact` is a GGUF file (llamacpp) or an artifact folder."""

    batched = True

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
        if self.runtime != "llamacpp" and not self.artifact.is_dir():
            fmt = "onnx" if self.runtime == "onnxruntime" else self.runtime
            raise HarnessError(f"The {self.runtime} artifact {self.artifact} is not a folder; run "
                               f"`make export MODEL=... FORMAT={fmt}`.")
        self._local_bin = runner_bin_for(self.facts.get("abi"), self.options, self.runtime)
        self._bin_sha = file_sha256(self._local_bin / self.runner.binary)
        self.phone.check_writable(self.options.stage_dir)
        if self.runtime == "llamacpp":
            self._stage_all()

    def _stage_all(self) -> None:
        assert self._local_bin is not None
        local_bin = self._local_bin

        def push_all() -> None:
            self.phone.stage(ANDROID_DIR / self.runner.script, self.remote_script)
            self.phone.stage(ANDROID_DIR / "common.sh", f"{self.remote_script.rsplit('/', 1)[0]}/common.sh")
            self.phone.stage(local_bin / self.runner.binary, f"{self.remote_bin}/{self.runner.binary}", executable=True)
            libs = local_bin.parent / "lib"  # shared libraries android/build.sh puts next to bin/
            if self.runtime != "llamacpp" and libs.is_dir():
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
        config = self.artifact / "genai_config.json"
        if self.runtime == "onnxruntime" and config.is_file() and "mobile/" not in config.read_text():
            # export/onnx.py's mobile/ copy (ORT format) is not what genai_config.json loads: not pushed
            files = [p for p in files if p.relative_to(self.artifact).parts[0] != "mobile"]
        return files

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(self.runtime, f"{self.runner.engine} ({self.runner.binary} on the device)", {
            "n_ctx": self.n_ctx, "threads": self.threads, "binary_sha256": self._bin_sha,
            "transport": self.options.transport, "repeat": self.options.repeat, "warmup": self.options.warmup,
            "affinity": self.options.affinity, "runner": f"android/{self.runner.script}",
        })

    def count_tokens(self, text: str) -> int:
        """The model's own tokenizer on the host (llama.cpp's vocab-only load of the GGUF, or the
        artifact folder's tokenizer.json), as the host runner counts; else a rough count."""
        if self._vocab is None:
            try:
                if self.runtime == "llamacpp":
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

    def close(self) -> None:
        self._vocab = None

    def row_extra(self) -> dict[str, Any]:
        return self._extra

    def generate(self, requests: list[Request]) -> list[Completion]:
        self._extra = {}
        if not requests:
            return []
        refuse_unsupported(self.runtime, requests)
        if not self._staged:
            self._stage_all()
        waited = self._thermal_gate()
        start_state = self.phone.state()
        runs = self.phone.retrying(self._run_batch, requests)
        end_state = self.phone.state()
        if self.options.cooldown_s:
            time.sleep(self.options.cooldown_s)
        measured = runs[self.options.warmup:]
        completions = [self._median_completion([run[i] for run in measured]) for i in range(len(requests))]
        per_rep = [aggregate_timings(run, None) for run in measured]
        spread = {}
        for key in ("ttft_ms", "prefill_tps", "decode_tps", "total_ms", "peak_rss_mb"):
            values = [r[key] for r in per_rep if r[key] is not None]
            if values:
                spread[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                               "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
        uncontrolled = []
        if not self.facts.get("root"):
            uncontrolled.append("no root: CPU governor and frequencies not pinned")
        uncontrolled += self._notes
        self._extra = {
            "device": {**self.facts, "state_start": start_state, "state_end": end_state},
            "measurement": {"warmup": self.options.warmup, "repeat": self.options.repeat, "spread": spread,
                            "thermal_wait_s": waited, "cooldown_s": self.options.cooldown_s,
                            "affinity": self.options.affinity, "uncontrolled": uncontrolled,
                            "reconnects": self.phone.reconnects},
        }
        return completions

    # -- internals --

    @staticmethod
    def _median_completion(reps: list[Completion]) -> Completion:
        first = reps[0]
        if len(reps) == 1:
            return first

        def med(name: str) -> Any:
            values = [getattr(c.timings, name) for c in reps if getattr(c.timings, name) is not None]
            return statistics.median(values) if values else None
        return Completion(first.text, Timings(**{k: med(k) for k in first.timings.to_dict()}), first.finish_reason)

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
            prompt = request.prompt if request.prompt is not None else _chat_as_text(request)
            files[f"{rid}.prompt"] = prompt.encode()
            grammar = _grammar(request) if self.runtime == "llamacpp" else None
            gname = "-"
            if grammar is not None:
                gname = f"g{hashlib.sha256(grammar.encode()).hexdigest()[:12]}.gbnf"
                files[gname] = grammar.encode()
            pname = "-"
            if request.cache_prefix:
                pname = prefixes.setdefault(request.cache_prefix,
                                            f"p{hashlib.sha256(request.cache_prefix.encode()).hexdigest()[:12]}.txt")
                files[pname] = request.cache_prefix.encode()
            s = request.settings
            line = f"{rid}\t{s.max_tokens}\t{s.temperature}\t{s.seed}\t{gname}\t{pname}"
            if self.runtime != "llamacpp":  # SEQ_LEN: llama_main's --seq_len counts prompt + output tokens
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
                raise DeviceStopped(f"{self.phone.serial}: the on-device runner failed (exit {result.rc}): "
                                    + ("; ".join(parsed.errors) or result.out.strip()[-800:]))
            bad = [r for r in parsed.records if r.rc != 0]
            if bad:
                raise DeviceStopped(f"{self.phone.serial}: {self.runner.binary} exited {bad[0].rc} on {bad[0].kind} "
                                    f"{bad[0].id}: " + " | ".join(bad[0].log[-5:]))
            self._notes = sorted(set(self._notes) | set(parsed.notes))
            runs.append(self._completions(parsed, requests) if self.runtime == "llamacpp"
                        else self._engine_completions(parsed, requests))
        self.phone.t.shell(f"rm -rf {q(remote_case)} {q(remote_case)}.tar", 60)
        return runs

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


def _chat_as_text(request: Request) -> str:
    raise HarnessError("Chat-message requests are not supported on phones yet; the strategies send raw prompts.")


# ---- the run --------------------------------------------------------------------------------

class _SharedResults:
    """One ResultsFile for all device workers; appends are serialised (one writer)."""

    def __init__(self, results: ResultsFile) -> None:
        self._results = results
        self._lock = threading.Lock()
        self.path = results.path

    def is_done(self, case: str, user: int) -> bool:
        with self._lock:
            return self._results.is_done(case, user)

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._results.append(row)


def _check_phone_artifact(runtime: str, artifact: Path) -> None:
    """ExecuTorch .pte files for a vendor NPU need that vendor's runner, which this runner does not drive."""
    config = artifact / "pte_config.json" if artifact.is_dir() else artifact.parent / "pte_config.json"
    backend = json.loads(config.read_text()).get("backend", "xnnpack") if config.is_file() else "xnnpack"
    if runtime == "executorch" and backend != "xnnpack":
        runner = {"qnn": "qnn_llama_runner", "mediatek": "mtk_llama_executor_runner"}.get(backend, "its own runner")
        raise HarnessError(
            f"{artifact} is an ExecuTorch export for the {backend} backend; it runs with executorch's {runner}, "
            "which device_runner does not drive yet (android/run_executorch.sh runs llama_main on XNNPACK .pte "
            "files). Run that runner on the phone by hand, or export with backend xnnpack for device_runner."
        )


def run_devices(options: RunOptions, serials: list[str], phone_options: PhoneOptions) -> Path:
    """Run the plan on every phone in parallel; returns the results file.  A phone that fails
    stops alone; the error lists every stopped phone after the others finished."""
    for name in options.strategies:
        get_strategy(name)
    for name in options.runtimes:
        if name not in REGISTRY:
            raise unknown_name("runtime", name, REGISTRY)
        if name not in PHONE_RUNTIMES:
            raise HarnessError(f"Runtime '{name}' does not run on phones (phones: {', '.join(PHONE_RUNTIMES)}). "
                               "Use --device host for it.")
    for model in options.models:
        get_recipe(model)
    check_single_artifact(options)
    if len(set(serials)) != len(serials):
        raise HarnessError("The same --device is named twice.")
    # Artifacts are checked up front: a missing one is the same sentence for every phone.
    needs_model = any(get_strategy(s).needs_model for s in options.strategies)
    artifacts = {(model, runtime): resolve_artifact(model, runtime, options.artifact)
                 for model in options.models for runtime in options.runtimes} if needs_model else {}
    for (model, runtime), artifact in artifacts.items():
        _check_phone_artifact(runtime, artifact)
    users, data_info = load_data(options)
    chosen = parse_users(options.users, len(users))
    results = _SharedResults(ResultsFile(options.out / "results.jsonl", options.resume))
    failures: dict[str, str] = {}

    def worker(serial: str) -> None:
        try:
            _run_one_device(serial, options, phone_options, users, chosen, data_info, results, artifacts)
        except HarnessError as exc:
            failures[serial] = str(exc)
            if len(serials) > 1:
                say(f"{serial}: stopped: {exc}")

    if len(serials) == 1:
        worker(serials[0])
    else:
        with ThreadPoolExecutor(max_workers=len(serials), thread_name_prefix="device") as pool:
            list(pool.map(worker, serials))
    if failures:
        raise HarnessError("; ".join(failures.values()) if len(failures) == 1 else
                           "Some devices stopped: " + " | ".join(f"{s}: {m}" for s, m in failures.items()))
    return results.path


def _run_one_device(serial: str, options: RunOptions, phone_options: PhoneOptions, users: list[Any],
                    chosen: list[int], data_info: dict[str, Any], results: Any,
                    artifacts: dict[tuple[str, str], Path]) -> None:
    phone = Phone(serial, phone_options)
    phone.connect()
    try:
        facts = phone.retrying(device_facts, phone.t)
        facts["name"] = serial
        settings = GenerationSettings(seed=options.seed)
        for strategy_name in [s for s in options.strategies if not get_strategy(s).needs_model]:
            _run_case(NO_MODEL, NO_MODEL, strategy_name, None, None, users, chosen, results, facts, data_info,
                      options, settings)
        model_strategies = [s for s in options.strategies if get_strategy(s).needs_model]
        for model in options.models:
            for runtime_name in options.runtimes:
                pending = [s for s in model_strategies
                           if any(not results.is_done(case_id(model, runtime_name, s, serial), u) for u in chosen)]
                if not pending:
                    continue
                recipe = get_recipe(model)
                artifact = artifacts[(model, runtime_name)]
                runtime = PhoneRuntime(phone, facts, artifact, options.context_tokens or recipe.context_length,
                                       options.threads, runtime_name)
                runtime.load()
                try:
                    for strategy_name in pending:
                        _run_case(model, runtime_name, strategy_name, runtime, (artifact, None), users, chosen,
                                  results, facts, data_info, options, settings)
                finally:
                    runtime.close()
    finally:
        phone.close()


def list_devices(serials: list[str], transport: str = "adb-shell", **transport_options: Any) -> list[dict[str, Any]]:
    """Facts of each named device, or of every device `adb devices` lists when none is named."""
    if not serials:
        serials = _adb_listed()
        if not serials:
            raise HarnessError("No devices found: `adb devices` lists none (or adb is not installed). Plug a phone in "
                               "with USB debugging on, or name one: --device PHONE_IP:5555.")
    found = []
    for serial in serials:
        try:
            t = open_transport(serial, transport, **transport_options)
            try:
                found.append(device_facts(t))
            finally:
                t.close()
        except AdbError as exc:
            found.append({"name": serial, "serial": serial, "error": str(exc)})
    return found


def _adb_listed() -> list[str]:
    import shutil
    import subprocess

    adb = shutil.which("adb")
    if not adb:
        return []
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip() and "\tdevice" in line]


__all__ = ["DeviceStopped", "Phone", "PhoneOptions", "PhoneRuntime", "list_devices", "run_devices"]
