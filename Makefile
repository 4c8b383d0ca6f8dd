# archsearch: every target sets itself up (virtualenv, pinned torch, the package with dev extras).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.archsearch-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN_ARGS ?= --budget 3.5M-params --out runs/default-3.5M-params

.PHONY: install data test lint run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned first: a looser spec would pull a multi-GB CUDA build from the network.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default dataset: Debian's dataset-fashion-mnist package (needs root and apt).
data:
	@if [ -f $(FMNIST) ]; then echo "fashion-mnist: $(FMNIST) present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "fashion-mnist: not installed and cannot apt-get here; pass --data-dir DIR with the IDX files" >&2; fi

lint: $(STAMP)
	$(BIN)/ruff check archsearch archsearch_launch.py tests benchmarks
	$(BIN)/ruff format --check archsearch archsearch_launch.py tests benchmarks
	$(BIN)/mypy

test: $(STAMP) data lint
	$(BIN)/pytest -q

run: $(STAMP) data
	$(BIN)/archsearch run $(RUN_ARGS)

bench: $(STAMP) data
	for b in benchmarks/bench_*.py; do case $$b in *bench_fidelity.py) $(BIN)/python $$b --quick;; *) $(BIN)/python $$b;; esac || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
