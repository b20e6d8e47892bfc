# The README's two commands: `make demo` and `make test`. Each sets up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test soak lint bench bench-quick docker-smoke clean chromium

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The end-to-end page test drives Debian's chromium through Playwright (no browser download).
CHROMIUM := $(shell command -v chromium 2>/dev/null)
chromium:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
		(apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null); \
	else \
		echo "chromium is missing: run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	fi
endif

setup: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# ruff, and mypy over the four packages (pyproject.toml [tool.mypy]).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# Two workers, one file each at a time (module fixtures train once); every test process uses
# one torch thread (tests/conftest.py), so two workers fill two cores.
test: $(STAMP) chromium lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10

# The slow reliability suite: long schema fuzzing, fault injection and hostile input soaks.
soak: $(STAMP)
	$(PY) -m pytest -q -m soak

# lightly is the peer the training step is compared with; --no-deps because its declared
# requirements (pytorch-lightning, hydra-core) could pull in another torch.
bench: $(STAMP)
	$(PY) -m pip install --quiet --no-deps 'lightly==1.6.0'
	$(PY) benchmarks/run_all.py

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet --no-deps 'lightly==1.6.0'
	$(PY) benchmarks/run_all.py --quick

# Builds both images and checks the CPU compose stack end to end (needs a Docker engine).
docker-smoke:
	bash scripts/docker_smoke.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
