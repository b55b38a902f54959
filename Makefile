# The README's two commands: `make up` (the main job) and `make test` (the whole suite).
# Both create .venv and install the locked packages first (uv.lock), so a fresh clone needs
# only python3 (3.11+) and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export BENTOML_DO_NOT_TRACK := true

.PHONY: install up test lint typecheck pytest bench clean

install: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on this machine) nothing writes
	# .pyc later, and every process (each training job, each server) would spend ~5 s more
	# compiling bentoml, scikit-learn and pandas from source.
	$(BIN)/uv sync --frozen --compile-bytecode --python $(BIN)/python
	@touch $@

up: install
	$(BIN)/training up

test: install lint typecheck pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/runstore.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/training_api.py
	$(BIN)/python bench/rollout.py


clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
