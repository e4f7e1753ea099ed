"""Run the benchmark plan on phones over ADB: the same cases and rows as `--device host`.

Several phones run in parallel, one worker thread each, into one results file (writes
serialised).  A dropped link reconnects a bounded number of times and the interrupted user's
batch runs again; rows are written only once a user is finished, so nothing is lost or doubled.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eval.errors import HarnessError
from export.catalogue import get_recipe
from runtimes import runtime_spec

from .adb import AdbError, open_transport
from .facts import device_facts
from .phone import Phone, PhoneOptions, say
from .phone_runtime import PHONE_RUNTIMES, PhoneRuntime
from .results import ResultsFile
from .run import RunInputs, RunOptions, check_names, prepare, run_model_cases, run_no_model_cases


class _SharedResults:
    """One ResultsFile for all device workers; appends are serialised (one writer)."""

    def __init__(self, results: ResultsFile) -> None:
        self._results = results
        self._lock = threading.Lock()
        self.path = results.path

    def is_done(self, case: str, user: int, identity: dict[str, Any] | None = None) -> bool:
        with self._lock:
            return self._results.is_done(case, user, identity)

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._results.append(row)


def _check_phone_artifact(runtime: str, artifact: Path) -> None:
    """ExecuTorch .pte files for a vendor NPU need that vendor's runner, which this runner does not drive."""
    config = artifact / "pte_config.json" if artifact.is_dir() else artifact.parent / "pte_config.json"
    backend = json.loads(config.read_text()).get("backend", "xnnpack") if config.is_file() else "xnnpack"
    if runtime_spec(runtime).artifact_format == "executorch" and backend != "xnnpack":
        runner = {"qnn": "qnn_llama_runner", "mediatek": "mtk_llama_executor_runner"}.get(backend, "its own runner")
        raise HarnessError(
            f"{artifact} is an ExecuTorch export for the {backend} backend; it runs with executorch's {runner}, "
            "which device_runner does not drive yet (its ExecuTorch runner, ew_et, runs XNNPACK .pte files). Run "
            "that runner on the phone by hand, or export with backend xnnpack for device_runner."
        )


def run_devices(options: RunOptions, serials: list[str], phone_options: PhoneOptions) -> Path:
    """Run the plan on every phone in parallel; returns the results file.  A phone that fails
    stops alone; the error lists every stopped phone after the others finished."""
    check_names(options)
    for name in options.runtimes:
        if name not in PHONE_RUNTIMES:
            raise HarnessError(f"Runtime '{name}' does not run on phones (phones: {', '.join(PHONE_RUNTIMES)}). "
                               "Use --device host for it.")
    if len(set(serials)) != len(serials):
        raise HarnessError("The same --device is named twice.")
    # Artifacts are checked up front: a missing one is the same sentence for every phone.
    inputs, artifacts = prepare(options)
    for (_, runtime), artifact in artifacts.items():
        _check_phone_artifact(runtime, artifact)
    results = _SharedResults(ResultsFile(options.out / "results.jsonl", options.resume))
    failures: dict[str, str] = {}

    def worker(serial: str) -> None:
        try:
            _run_one_device(serial, phone_options, inputs, results, artifacts)
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


def _run_one_device(serial: str, phone_options: PhoneOptions, inputs: RunInputs, results: Any,
                    artifacts: dict[tuple[str, str], Path]) -> None:
    options = inputs.options
    phone = Phone(serial, phone_options)
    phone.connect()
    try:
        facts = phone.retrying(device_facts, phone.t)
        facts["name"] = serial
        run_no_model_cases(inputs, facts, results)

        def open_case(model: str, runtime_name: str, artifact: Path) -> tuple[PhoneRuntime, None]:
            runtime = PhoneRuntime(phone, facts, artifact, options.context_tokens or get_recipe(model).context_length,
                                   options.threads, runtime_name)
            runtime.load()
            return runtime, None  # each on-device invocation loads the model: rows take the engine's own figure

        run_model_cases(inputs, facts, artifacts, results, open_case)
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


__all__ = ["list_devices", "run_devices"]
