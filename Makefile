# The README's two commands: `make up` (the main job) and `make test` (the whole suite).
# Both create .venv and install the locked packages first (uv.lock), so a fresh clone needs
# only python3 (3.11+) and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export BENTOML_DO_NOT_TRACK := true

.PHONY: install up test lint typecheck pytest bench clean container-tools browser-tools

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

test: install container-tools browser-tools lint typecheck pytest

# $(call debian-packages,COMMANDS,PACKAGES): as root on a Debian machine, install PACKAGES with
# apt when one of COMMANDS is missing; elsewhere the tests that need them skip (CI requires them).
define debian-packages
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		! (for c in $(1); do command -v $$c || exit 1; done) >/dev/null; then \
		apt-get install -y -q $(2) >/dev/null || \
		(apt-get update -q >/dev/null && apt-get install -y -q $(2) >/dev/null); \
	fi
endef

# The container tests need podman, runc and debootstrap.
container-tools:
	$(call debian-packages,podman runc debootstrap,podman runc debootstrap)

# The browser tests drive Debian's Chromium with Playwright (the dev group); Playwright never
# downloads a browser of its own here.
browser-tools:
	$(call debian-packages,chromium,chromium)

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
	$(BIN)/python bench/container.py
	$(BIN)/python bench/ui.py
	$(BIN)/python bench/cluster.py


clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
