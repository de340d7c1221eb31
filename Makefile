# bench: `make demo` sets everything up and runs the default sweep; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
BENCH := $(VENV)/bin/bench
# The 24 Kodak images: ../shared/datasets/kodak when it is there, else bench downloads them.
KODAK_DIR ?= $(wildcard ../shared/datasets/kodak)
DEMO_OUT ?= results/demo

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.stamp-base: pyproject.toml constraints.txt scripts/setup.sh
	scripts/setup.sh
	@touch $@

$(VENV)/.stamp-test: pyproject.toml constraints.txt scripts/setup.sh
	scripts/setup.sh test dev learned mmseg
	@touch $@ $(VENV)/.stamp-base

setup: $(VENV)/.stamp-base ## install bench into .venv

demo: $(VENV)/.stamp-base ## set up, then sweep jpeg, webp, jpeg2000 over Kodak into results/demo
	$(BENCH) run --codecs jpeg,webp,jpeg2000 --dataset kodak \
	  $(if $(KODAK_DIR),--data-dir $(KODAK_DIR)) --out $(DEMO_OUT)-$$(date +%Y%m%d-%H%M%S)

test: $(VENV)/.stamp-test ## set up with the test extras, then lint and run the test suite
	$(VENV)/bin/ruff check bench tests benchmarks
	$(VENV)/bin/mypy bench
	$(VENV)/bin/python -m pytest

benchmark: $(VENV)/.stamp-test ## time the full default Kodak sweep of jpeg, webp, jpeg2000
	$(VENV)/bin/python benchmarks/kodak_sweep.py $(if $(KODAK_DIR),--data-dir $(KODAK_DIR))

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

.PHONY: help setup demo test benchmark clean
