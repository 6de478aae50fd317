# The two commands of the README: `make demo` (the main job) and `make test`.
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
# Tests that check our files with numpy (and later transformers) run this interpreter.
export HOOKS_PYTHON := $(PYTHON)

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@command -v python3 >/dev/null || { echo "error: python3 not found; install Python 3.10+ first" >&2; exit 1; }
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	@$(PYTHON) scripts/verify_minilm.py >/dev/null
	@touch $@

demo: $(STAMP)
	cargo run --release --example demo

test: $(STAMP)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

clean:
	cargo clean
	rm -rf $(VENV)
