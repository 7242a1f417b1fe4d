# wsfixture — `make help` lists what is here.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS ?= 3
PYTEST_ARGS ?=
# make test's first lane runs on this many pytest-xdist workers (a module stays on one, as
# its workspaces are shared by its tests); the `alone` lane runs after it, by itself.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help host venv demo test test-fast lint docs bench soak nixos-test gc clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

host: ## Install the Debian packages and the system user wsfixture needs (root, Debian 12)
	@PYTHONPATH=src python3 -m wsfixture.host.setup

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	scripts/ci-tools.sh
	touch $@

venv: $(STAMP) ## Create .venv with wsfixture and its test tools

demo: host venv ## Boot the example container and VM, verify them, tear them down
	$(PY) -m wsfixture.cli.demo examples/workspaces.toml

test: host venv ## Install everything, then run the whole suite (unit, plugin, nix, integration, reliability)
	$(PY) -m wsfixture.cli gc --quiet
	status=0; \
	$(PY) -m pytest -p no:cacheprovider -m "not alone" -n $(TEST_WORKERS) --dist loadfile \
	  --no-loadscope-reorder \
	  tests $(PYTEST_ARGS) || status=$$?; \
	$(PY) -m pytest -p no:cacheprovider -m alone tests $(PYTEST_ARGS) || status=$$?; \
	exit $$status

test-fast: venv ## Everything that boots nothing (unit, schema, Nix, plugin options): seconds
	$(PY) -m pytest -p no:cacheprovider -m "not integration" tests -q $(PYTEST_ARGS)

lint: venv ## ruff check, ruff format --check, mypy --strict, the docs site (mkdocs --strict)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site

docs: venv ## Serve the docs site on 127.0.0.1:8000 (mkdocs serve)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: host venv ## Benchmarks against the raw baselines (RUNS=N repetitions)
	$(PY) bench/run.py --runs $(RUNS)

soak: host venv ## Long churn (30 start/stop cycles of each kind) and every kill-matrix cell 3 times
	WSFIXTURE_SOAK=1 $(PY) -m pytest -p no:cacheprovider -m "" tests/reliability -k "churn or kill" $(PYTEST_ARGS)

nixos-test: ## NixOS VM tests (needs nix with a binary cache)
	@scripts/nixos-test.sh

gc: venv ## Reap what crashed runs left behind
	$(PY) -m wsfixture.cli gc

clean: ## Remove the venv and caches (not the image cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .site
