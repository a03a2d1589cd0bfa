# near-blender: one-command set-up, test, demo, lint, bench and extension build.
# `make test` and `make demo` bootstrap the virtual environment themselves.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1
# Keep CPU thread use predictable on the 2-core machines.
export OMP_NUM_THREADS ?= 2

.PHONY: setup test test-fast demo lint format bench extension default-model clean

setup: $(STAMP)

# torch first (the CPU wheel on local disk), then the pinned rest, then our package
# without dependencies, so that no requirement can pull a second, multi-GB torch.
$(STAMP): requirements.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, bpy; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m near_blender.cli demo --out out/demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m near_blender.cli bench all --out benchmarks

# PLATFORM=linux-x64 | windows-x64 | macos-arm64 (default: this machine's): one zip per platform.
extension: setup
	$(PY) tools/build_extension.py --out dist $(if $(PLATFORM),--platform $(PLATFORM))

default-model: setup
	$(PY) -m near_blender.cli train default-model

clean:
	rm -rf dist build out .pytest_cache .ruff_cache
