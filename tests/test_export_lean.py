"""Export at real size (issue 12): random-weight checkpoints, the process tree's memory, disk checks,
and an interrupted export leaving no staging folder behind.

The random checkpoint test makes a tiny config of each architecture (seconds); the interruption
test kills the gguf worker of a tiny-llama export mid-way (the real toolchain, ~10-20 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.errors import HarnessError
from export import env as export_env
from export import pipeline
from export.memory import TreeSampler, _children, tree_resident_bytes
from export.random_checkpoint import ARCHITECTURES, bf16_bytes, config_dict

ROOT = Path(__file__).resolve().parent.parent


def _gguf_env() -> Path:
    try:
        export_env.llamacpp_wheels()
    except HarnessError as exc:
        pytest.skip(str(exc))
    return export_env.ensure_env("gguf")


def test_published_sizes_of_the_real_architectures():
    # Parameter counts the model cards publish (billions), from the configs written here.
    published = {"gemma-3-4b": 3.88, "qwen-2.5-3b": 3.09, "llama-3.2-3b": 3.21, "phi-4-mini": 3.84}
    for key, billions in published.items():
        assert abs(bf16_bytes(key) / 2e9 - billions) < 0.01, key
    gemma = config_dict("gemma-3-4b")
    assert (gemma["num_hidden_layers"], gemma["hidden_size"], gemma["head_dim"], gemma["sliding_window"]) == (
        34, 2560, 256, 1024)
    assert gemma["layer_types"].count("full_attention") == 5 and gemma["rope_scaling"]["factor"] == 8.0


@pytest.mark.parametrize("key", [
    "gemma-3-4b", *(pytest.param(k, marks=pytest.mark.slow) for k in ("qwen-2.5-3b", "llama-3.2-3b", "phi-4-mini"))])
def test_random_checkpoint_is_sharded_bf16_and_loads(tmp_path, key):
    python = _gguf_env()
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from safetensors import safe_open\n"
        "import torch, transformers as tf\n"
        "from export.random_checkpoint import make_random_checkpoint\n"
        "out = make_random_checkpoint(sys.argv[1], Path(sys.argv[2]), tiny=True, shard_bytes=20_000)\n"
        "index = json.loads((out / 'model.safetensors.index.json').read_text())\n"
        "files = sorted(set(index['weight_map'].values()))\n"
        "dtypes = set()\n"
        "for f in files:\n"
        "    with safe_open(str(out / f), 'pt') as h:\n"
        "        dtypes |= {str(h.get_slice(k).get_dtype()) for k in h.keys()}\n"
        "model = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)\n"
        "ids = tf.AutoTokenizer.from_pretrained(out)('lights on', return_tensors='pt').input_ids\n"
        "logits = model(ids).logits\n"
        "print(json.dumps({'shards': len(files), 'dtypes': sorted(dtypes), 'arch': type(model).__name__,\n"
        "                  'finite': bool(torch.isfinite(logits).all())}))\n"
    )
    out = tmp_path / key
    done = subprocess.run([str(python), "-c", script, key, str(out)], env=export_env.worker_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["shards"] > 1 and facts["dtypes"] == ["BF16"] and facts["finite"]
    assert facts["arch"] == ARCHITECTURES[key]["architectures"][0]
    info = json.loads((out / "random_checkpoint.json").read_text())
    assert "never for accuracy" in info["purpose"] and "never for accuracy" in (out / "README.md").read_text()
    # An export from it says so in its manifest (source kind "random", the note).
    from export.sources import _local

    source = _local(out)
    assert source.kind == "random" and "never for accuracy" in source.note


def test_tree_sampler_sees_a_child_s_memory():
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 << 20); import time; time.sleep(3)"])
    try:
        deadline = time.monotonic() + 10
        while tree_resident_bytes(os.getpid()) - tree_resident_bytes(child.pid) < 0 or tree_resident_bytes(child.pid) < 150 << 20:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with TreeSampler(interval=0.05) as sampler:
            time.sleep(0.3)
        assert sampler.peak_bytes >= tree_resident_bytes(child.pid) >= 150 << 20
        assert sampler.report()["tree_peak_mb"] >= 150
    finally:
        child.kill()
        child.wait()


def test_tree_sampler_counts_pages_a_forked_child_shares_once():
    """A child forked from a big process shares its pages until it execs: the tree is not twice as big (summing
    VmRSS read a 17 GB ExecuTorch exporter that forked a helper as 35.5 GB)."""
    script = ("import os, sys, time\n"
              "b = bytearray(300 << 20)\n"
              "for i in range(0, len(b), 4096): b[i] = 1\n"
              "if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\n"
              "print('forked', flush=True)\n"
              "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert parent.stdout.readline().strip() == "forked"
        deadline = time.monotonic() + 10
        while len(_children().get(parent.pid, [])) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [child] = _children()[parent.pid]
        rss = [int(line.split()[1]) << 10 for pid in (parent.pid, child)
               for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:")]
        assert min(rss) >= 300 << 20  # each process alone shows the whole buffer
        tree = tree_resident_bytes(parent.pid)
        assert (300 << 20) <= tree < (450 << 20), (tree >> 20, [r >> 20 for r in rss])
    finally:
        if child is not None:
            os.kill(child, 9)
        parent.kill()
        parent.wait()


def test_too_little_disk_is_a_sentence_naming_what_is_needed(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100 << 30, 99 << 30, 1 << 30))
    with pytest.raises(HarnessError) as info:
        pipeline.check_free_space(tmp_path / "not" / "yet", 16 * 10**9, "The gguf export of gemma-3-4b")
    message = str(info.value)
    assert "needs about 16.0 GB free" in message and "1.1 GB are free" in message and "Free 14.9 GB" in message


def test_staging_folders_of_dead_exports_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".gguf.partial-{dead.pid}-abc"
    stale.mkdir()
    (stale / "big.gguf").write_bytes(b"x")
    (tmp_path / f".gguf.partial-{dead.pid}-abc.result.json").write_text("{}")
    live = tmp_path / f".gguf.partial-{os.getpid()}-def"
    live.mkdir()
    pipeline.remove_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("victim", ["worker", pytest.param("driver", marks=pytest.mark.slow)])
def test_an_interrupted_export_removes_its_staging_folder(tmp_path, victim):
    """SIGKILL the gguf worker (or SIGTERM the driver, as `kill` does) mid-export: nothing is left."""
    _gguf_env()
    root = tmp_path / "artifacts"
    driver = subprocess.Popen([sys.executable, "-m", "export", "--model", "tiny-llama", "--format", "gguf",
                               "--out", str(root)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        model = root / "tiny-llama"

        def scratch():  # the worker is at work: its scratch folder is inside the staging folder
            return [p for p in model.glob(".gguf.partial-*/.scratch-*")] if model.is_dir() else []

        _wait_for(scratch, 240, "the worker's scratch folder")
        [worker] = _children().get(driver.pid, [])
        os.kill(worker if victim == "worker" else driver.pid, signal.SIGKILL if victim == "worker" else signal.SIGTERM)
        output, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == (2 if victim == "worker" else 130), output[-2000:]
    assert list(model.iterdir()) == [], output[-2000:]
    if victim == "driver":
        _wait_for(lambda: not Path(f"/proc/{worker}").exists(), 30, "the worker to end")


def test_a_random_source_is_held_to_the_random_weight_thresholds():
    from export.catalogue import RANDOM_MIN_TOP1, for_random_source, get_recipe, min_top1

    options = get_recipe("gemma-3-4b").format_options("gguf")
    assert min_top1(options, "Q4_K_M") == (0.94, True)
    random = for_random_source("gguf", options)
    assert min_top1(random, "Q4_K_M") == (RANDOM_MIN_TOP1["gguf"]["Q4_K_M"], True)
    assert min_top1(for_random_source("onnx", get_recipe("gemma-3-4b").format_options("onnx")), "int4") == (0.76, True)
    executorch = for_random_source("executorch", get_recipe("gemma-3-4b").format_options("executorch"))
    assert min_top1(executorch, "8da4w") == (0.84, True)
    assert min_top1(executorch, "8da8w")[1] is False  # never exported at 4B: the unmeasured default


def test_bench_export_table_from_the_manifests(tmp_path):
    from export.report import markdown, rows

    folder = tmp_path / "gemma-3-4b" / "gguf"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "model": "gemma-3-4b", "format": "gguf", "variant": "Q4_K_M", "export_seconds": 772.1, "peak_rss_mb": 8346.8,
        "files": [{"path": "m.gguf", "bytes": 2_489_900_000}], "parity": {"passed": True, "top1_agreement": 0.88,
                                                                          "positions": 25},
        "source": {"kind": "random", "bytes": 7_800_318_492}, "details": {"memory": {"tree_peak_mb": 8346.8}}}))
    table = markdown(rows(tmp_path, ["gemma-3-4b"]))
    assert ("| gemma-3-4b | gguf | Q4_K_M | random, 7.80 GB | 2.49 GB | 772 s | 8.75 GB (tree) | 1.12x | "
            "88.0% over 25 positions |") in table
    assert "no manifest: `make export MODEL=gemma-3-4b FORMAT=onnx`" in table


def test_a_failed_worker_leaves_no_tool_running(tmp_path, monkeypatch):
    """A tool the worker started (optimum-cli, a builder) is stopped with it: it would hold its memory."""
    monkeypatch.setattr(export_env, "ensure_env", lambda fmt, quiet=False: Path(sys.executable))
    pid_file = tmp_path / "tool.pid"
    worker = ("import subprocess, sys, pathlib\n"
              "tool = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"pathlib.Path({str(pid_file)!r}).write_text(str(tool.pid))\n"
              "raise SystemExit(1)\n")
    with pytest.raises(HarnessError):
        export_env.run_in_env("fake", ["-c", worker], what="The fake export")
    tool = int(pid_file.read_text())
    _wait_for(lambda: not Path(f"/proc/{tool}").exists() or "Z" in Path(f"/proc/{tool}/stat").read_text().split()[2],
              10, "the tool to be stopped")


def test_an_export_known_to_outgrow_the_memory_is_refused_first(monkeypatch):
    monkeypatch.setattr(pipeline, "available_memory", lambda: 15 * 10**9)
    pipeline.check_memory("gguf", "gemma-3-4b", 7_800_000_000)  # measured 1.1x: goes ahead
    pipeline.check_memory("onnx", "gemma-3-4b", 7_800_000_000)  # measured 1.67x: goes ahead
    pipeline.check_memory("executorch", "gemma-3-270m", 1_110_000_000)
    with pytest.raises(HarnessError) as info:
        pipeline.check_memory("executorch", "gemma-3-4b", 7_800_000_000)
    assert "needs at least 17.2 GB of memory" in str(info.value) and "15.0 GB are available" in str(info.value)
    monkeypatch.setenv(pipeline.MEMORY_CHECK_ENV, "0")
    pipeline.check_memory("executorch", "gemma-3-4b", 7_800_000_000)
