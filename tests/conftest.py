"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the default model; its /v1 URL."""
    from export.catalogue import default_model_path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--chat_format", "gemma"]
    log = open(os.devnull, "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with code {process.returncode}: {' '.join(command)}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 120 s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def aarch64_binfmt() -> str:
    """aarch64 executables run on this machine through qemu-user, inside chroots too (the arm64
    loopback phone): tests/fakeadbd/binfmt.sh mounts binfmt_misc and registers qemu-aarch64 when
    needed (root).  Skips with the reason when that cannot be done; else its one-line summary."""
    from fakeadbd.sandbox import BINFMT_SCRIPT, arm64_unavailable_reason

    why = arm64_unavailable_reason()
    if why is not None:
        pytest.skip(f"no aarch64 emulation here: {why}")
    return subprocess.run(["sh", str(BINFMT_SCRIPT)], capture_output=True, text=True).stdout.strip()
