# The front door: every target creates the environment it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: help run test test-slow bench docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=64"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,ray,optuna,joblib,loggers,hf,flwr,privacy]"
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[docs]"
	touch $(DOCS_STAMP)

run: $(STAMP)  ## set up .venv and run the default experiment (FedAsync on digits)
	$(PY) -m lightning_asyncfl $(ARGS)

# the suite runs in parallel test processes (pytest-xdist): one per core, at most 4
# (most tests train with one intra-op thread); `make test TEST_WORKERS=0` runs it in one process
TEST_WORKERS ?= auto --maxprocesses=4

test: $(STAMP)  ## set up .venv and run the test suite
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-slow: $(STAMP)  ## run the slow tests too
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not gpu" $(ARGS)

bench: $(STAMP)  ## run the benchmarks (executors: speed-up and peak memory), results in benchmarks/results/
	$(PY) benchmarks/executors.py $(ARGS)

docs: $(DOCS_STAMP)  ## build the documentation site into site/ (mkdocs --strict: any warning fails); open site/index.html
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict $(ARGS)  # no banner about Material's successor

clean:  ## remove the environment, run outputs and the built docs
	rm -rf $(VENV) outputs multirun build site *.egg-info
