# The two commands of the README: `make demo` (the main job) and `make test`; and `make bench`.
# Each sets up what it needs: a project-local .venv/ with the pinned torch wheel, whose libtorch
# tch builds against. Set LIBTORCH to your own libtorch 2.11 to skip the venv's torch.

SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
# Re-run pip only when requirements.txt changes, so a second run downloads nothing.
STAMP := $(VENV)/.requirements-installed

ifeq ($(strip $(LIBTORCH)),)
  export LIBTORCH_USE_PYTORCH := 1
  export VIRTUAL_ENV := $(VENV)
  export PATH := $(VENV)/bin:$(PATH)
endif
# The interpreter the tests' references (numpy, torch, transformers) and the benchmarks run:
# the venv's, unless HOOKS_PYTHON names another.
HOOKS_PYTHON ?= $(PYTHON)
export HOOKS_PYTHON

.PHONY: demo test bench setup clean example gpu-bundle

setup: $(STAMP)

$(STAMP): requirements.txt
	@command -v python3 >/dev/null || { echo "error: python3 not found; install Python 3.10+ first" >&2; exit 1; }
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	@$(PYTHON) scripts/verify_minilm.py >/dev/null
	@touch $@

# The main job: every block's output of all-MiniLM-L6-v2 (mean-pooled over real tokens) and the
# pooler, on the bundled sentences; then what the file holds, and how to load it.
DEMO_OUT := out/minilm.npz
demo: $(STAMP)
	cargo run -q -p hooks-cli -- extract --layers 'encoder.layer.*.output,pooler' --pool mean --out $(DEMO_OUT)
	cargo run -q -p hooks-cli -- inspect $(DEMO_OUT)
	@printf '\nLoad it in numpy:\n  import numpy as np\n  acts = np.load("$(DEMO_OUT)")\n  print({name: acts[name].shape for name in acts.files})\n'

# As CI runs it: a test that needs Python fails when the interpreter is missing, rather than
# skipping (HOOKS_REQUIRE_PYTHON); and no two modules of a crate import each other.
test: export HOOKS_REQUIRE_PYTHON := 1
test: $(STAMP)
	@test -x "$(HOOKS_PYTHON)" || { echo "error: the Python interpreter \`$(HOOKS_PYTHON)\` does not exist; run \`rm -rf .venv && make setup\`, or set HOOKS_PYTHON to a Python with requirements.txt installed" >&2; exit 1; }
	cargo fmt --all --check
	python3 scripts/check_module_cycles.py
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

# Benchmarks, not tests (`make test` runs each once at toy sizes; nothing here fails on timing):
# capture cost, Rust against the Python reference, writing, memory, the extraction engine, the
# dataset folder, analysis, `hooks extract` against transformers on a Llama-shaped decoder, and
# `hooks lens` against the same lens in transformers.
# Builds in release, then about 51 minutes on 2 cores (see the README); writes BENCHMARKS.md,
# keeping its hand-written notes. HOOKS_BENCH_SECTIONS=5,8 runs only those sections.
bench: $(STAMP)
	cargo build --release -p hooks-cli
	cargo bench -p hooks-bench --bench site
	cargo bench -p hooks-bench --bench report

clean:
	cargo clean
	rm -rf $(VENV)

# The library example of the README (examples/demo.rs).
example: $(STAMP)
	cargo run -q --example demo

# What scripts/gpu-check.sh runs on a GPU machine, built here (see that script).
gpu-bundle: $(STAMP)
	bash scripts/gpu-bundle.sh
