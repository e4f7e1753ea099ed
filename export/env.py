"""One Python environment per toolchain, made on first use and cached outside the clone (rule 9).

Each heavy toolchain pins its own torch/transformers, so each gets a virtualenv made from
its requirements file in export/requirements/.  The folder is named after the format and
the sha256 of that file (~/.cache/edgewise-harness/venvs/<format>-<sha12>), so a fresh clone
or CI reuses an existing one and an edited requirements file makes a new one.  A venv is only
used once its `.complete` marker exists: an interrupted install is redone, never half-used.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eval.errors import HarnessError, cache_dir
from runtimes.versions import LLAMACPP_VERSION

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "requirements"


def requirements_file(fmt: str) -> Path:
    return REQUIREMENTS / f"{fmt}.txt"


def env_dir(fmt: str) -> Path:
    digest = hashlib.sha256(requirements_file(fmt).read_bytes()).hexdigest()[:12]
    return cache_dir() / "venvs" / f"{fmt}-{digest}"


def env_python(fmt: str) -> Path:
    return env_dir(fmt) / "bin" / "python"


def env_ready(fmt: str) -> bool:
    return (env_dir(fmt) / ".complete").is_file()


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock shared by every process on this machine (two `make export` at once)."""
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def llamacpp_wheels() -> Path:
    """The folder holding the llama-cpp-python wheel the Makefile builds (make install-llamacpp)."""
    named = os.environ.get("LLAMACPP_WHEELS")
    candidates = [Path(named)] if named else [Path(p) for p in sorted(
        glob.glob(str(cache_dir() / "wheels" / f"llamacpp-{LLAMACPP_VERSION}-*")))]
    for folder in candidates:
        if any(folder.glob(f"llama_cpp_python-{LLAMACPP_VERSION}-*.whl")):
            return folder
    raise HarnessError(
        f"The GGUF toolchain needs the llama-cpp-python {LLAMACPP_VERSION} wheel that `make install-llamacpp` "
        f"builds (looked in {cache_dir() / 'wheels'}). Run `make install-llamacpp` first (or `make export`, "
        "which does it)."
    )


def _pip_extra_args(fmt: str) -> list[str]:
    if fmt == "gguf":
        # Never let pip build llama-cpp-python again behind our back: the cached wheel only.
        return ["--only-binary", "llama-cpp-python", "--find-links", str(llamacpp_wheels())]
    return []


def ensure_env(fmt: str, *, quiet: bool = False) -> Path:
    """The python of `fmt`'s toolchain env, creating the env first if needed."""
    req = requirements_file(fmt)
    if not req.is_file():
        raise HarnessError(f"No requirements file for the {fmt} toolchain ({req}).")
    target = env_dir(fmt)
    if env_ready(fmt):
        return env_python(fmt)
    extra = _pip_extra_args(fmt)
    with _locked(target.name):
        if env_ready(fmt):
            return env_python(fmt)
        if not quiet:
            print(f"Creating the {fmt} toolchain environment once from {req.relative_to(ROOT)} "
                  f"(a few minutes; cached in {target})", file=sys.stderr, flush=True)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        log = target.parent / f"{target.name}.log"
        start = time.monotonic()
        with log.open("w") as out:
            steps = [
                [_base_python(), "-m", "venv", str(target)],
                [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                [str(target / "bin" / "python"), "-m", "pip", "install", "-q", *extra, "-r", str(req)],
            ]
            steps += _post_install(fmt, target / "bin" / "python")
            for step in steps:
                result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, env=_pip_env())
                if result.returncode != 0:
                    raise HarnessError(
                        f"Creating the {fmt} toolchain environment failed at `{' '.join(step[-4:])}`; "
                        f"see {log}. Fix the cause (network to PyPI, disk space) and run the export again."
                    )
        (target / ".complete").write_text(f"{req.read_text()}\n# created in {time.monotonic() - start:.0f} s\n")
    return env_python(fmt)


def _post_install(fmt: str, python: Path) -> list[list[str]]:
    """Install steps that a requirements file cannot say."""
    if fmt == "gguf":
        # gguf-py from the same llama.cpp source as the converter (transformers' GGUF loader
        # needs it installed; the PyPI `gguf` lags behind the converter).
        return [[str(python), "-m", "pip", "install", "-q", "--no-deps", str(llamacpp_source() / "gguf-py")]]
    return []


def _base_python() -> str:
    """The interpreter the toolchain venvs are made from (the one under the core venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


# --- llama.cpp source (converter + gguf-py) ---------------------------------------------------


def llamacpp_source(explicit: Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py.

    From `explicit` (or $LLAMACPP_SRC: a llama.cpp checkout the user names), else from the
    llama.cpp source vendored in the pinned llama-cpp-python sdist, downloaded once with pip
    and unpacked into ~/.cache/edgewise-harness/src/llama.cpp-<version>/.
    """
    named = explicit or (Path(os.environ["LLAMACPP_SRC"]) if os.environ.get("LLAMACPP_SRC") else None)
    if named is not None:
        if not (named / "convert_hf_to_gguf.py").is_file() or not (named / "gguf-py").is_dir():
            raise HarnessError(
                f"{named} is not a llama.cpp checkout (no convert_hf_to_gguf.py and gguf-py/ in it). "
                "Name the root of a llama.cpp clone, or leave LLAMACPP_SRC unset to use the pinned one."
            )
        return named
    target = cache_dir() / "src" / f"llama.cpp-{LLAMACPP_VERSION}"
    if (target / ".complete").is_file():
        return target
    with _locked(target.name):
        if (target / ".complete").is_file():
            return target
        src = cache_dir() / "src"
        src.mkdir(parents=True, exist_ok=True)
        sdist = src / f"llama_cpp_python-{LLAMACPP_VERSION}.tar.gz"
        if not sdist.is_file():
            print(f"Downloading the llama-cpp-python {LLAMACPP_VERSION} sdist once for llama.cpp's converter "
                  f"(into {src})", file=sys.stderr, flush=True)
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                 f"llama-cpp-python=={LLAMACPP_VERSION}", "-d", str(src)],
                capture_output=True, text=True, env=_pip_env())
            if result.returncode != 0 or not sdist.is_file():
                raise HarnessError(
                    f"Could not download the llama-cpp-python {LLAMACPP_VERSION} sdist from PyPI "
                    f"({result.stderr.strip()[-300:]}). Check the network, or set LLAMACPP_SRC to a llama.cpp checkout."
                )
        prefix = f"llama_cpp_python-{LLAMACPP_VERSION}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "requirements/", "LICENSE")
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=src))
        try:
            with tarfile.open(sdist) as tar:
                members = []
                for member in tar.getmembers():
                    if not member.name.startswith(prefix):
                        continue
                    rel = member.name[len(prefix):]
                    if rel and rel.startswith(wanted) and (member.isfile() or member.isdir()):
                        member.name = rel
                        members.append(member)
                tar.extractall(tmp, members=members, filter="data")
            if not (tmp / "convert_hf_to_gguf.py").is_file():
                raise HarnessError(f"{sdist} holds no vendor/llama.cpp/convert_hf_to_gguf.py; delete it and retry.")
            (tmp / ".complete").write_text(f"llama-cpp-python {LLAMACPP_VERSION} sdist\n")
            os.chmod(tmp, 0o755)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


# --- running a worker in a toolchain env ---------------------------------------------------------


def worker_env(extra_paths: list[Path] | None = None) -> dict[str, str]:
    """Environment for a worker: the project on PYTHONPATH (plus `extra_paths`), nothing else added."""
    env = dict(os.environ)
    paths = [str(ROOT), *(str(p) for p in extra_paths or [])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    return env


def _stop_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the worker's process group (its leader may be gone already), SIGKILL what is left."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            if process.poll() is None:
                try:
                    process.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        else:
            continue  # still there after the grace period: SIGKILL
        break
    if process.poll() is None:
        process.wait()


def run_in_env(fmt: str, args: list[str], *, extra_paths: list[Path] | None = None,
               what: str = "the export") -> None:
    """Run `python ARGS` in `fmt`'s env, its output passed through; a non-zero exit raises."""
    python = ensure_env(fmt)
    # A process group of its own: an interrupted or failed export stops the worker and every tool it
    # started (a converter, optimum-cli, a builder left running would hold its memory).  Ctrl-C
    # reaches the driver, which stops the group.
    process = subprocess.Popen([str(python), *args], env=worker_env(extra_paths), cwd=ROOT, start_new_session=True)
    try:
        returncode = process.wait()
    finally:  # normally a no-op; interrupted (Ctrl-C, SIGTERM) or failed: nothing of the worker outlives it
        _stop_group(process)
    if returncode != 0:
        raise HarnessError(
            f"{what} failed in the {fmt} toolchain (exit {returncode}); its output is above. "
            f"Fix the cause and run it again (the toolchain env is {python.parent.parent})."
        )
