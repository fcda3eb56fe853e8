# Two commands do everything on a fresh machine (README.md):
#   make reproduce PAPER=<name> [ARGS="--preset released --schedule paper ..."]
#   make test
# The virtual environment is created on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PAPER ?=
ARGS ?=
# Real data: $MICROREPRO_DATA if set, else ../shared/data beside the checkout when it exists.
MICROREPRO_DATA ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export MICROREPRO_DATA
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Tests: everything but the tiers marked slow or gpu, on both cores.
PYTEST_ARGS ?= -m "not slow and not gpu" -n 2 --dist loadfile

.PHONY: setup reproduce results test test-all lint bench preview clean-venv help

help:
	@echo "make reproduce PAPER=<name> [ARGS=...]   reproduce one paper (papers: make list)"
	@echo "make test                               run the test suite (what CI runs)"
	@echo "make results | bench | list | lint"

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

list: setup
	@$(PY) -m microrepro list

reproduce: setup
	@$(PY) -m microrepro reproduce $(PAPER) $(ARGS)

results: setup
	$(PY) -m microrepro results

bench: setup
	$(PY) -m microrepro bench $(ARGS)

preview: setup
	$(PY) -m microrepro preview $(ARGS)

# Real data ahead of time into the download cache ($MICROREPRO_CACHE, default ~/.cache/microrepro), with a
# progress bar; run again to resume. `make data DATASET=spines` fetches one; data sets found in
# $MICROREPRO_DATA (../shared/data) are used from there and not downloaded.
.PHONY: data
data: setup
	$(PY) -m microrepro fetch $(or $(DATASET),all) $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "not gpu" -n 2 --dist loadfile

lint: setup
	$(PY) -m ruff check common datasets reproductions tests microrepro

clean-venv:
	rm -rf $(VENV)
