# bench: `make demo` sets everything up and runs the default sweep; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
BENCH := $(VENV)/bin/bench
# The 24 Kodak images: ../shared/datasets/kodak when it is there, else bench downloads them.
KODAK_DIR ?= $(wildcard ../shared/datasets/kodak)
DEMO_OUT ?= results/demo
# bench's own regression gate: a small real Kodak sweep checked against a committed baseline.
CI_SWEEP := --codecs jpeg,webp,jpeg2000 --dataset kodak --limit 4 \
  --rates jpeg=10,50,90 --rates webp=10,50,90 --rates jpeg2000=96,48,24
CI_BASELINE := results/baselines/kodak-ci.csv
CI_RULES := results/baselines/kodak-ci.rules.toml
CI_OUT ?= results/ci-check

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.stamp-base: pyproject.toml constraints.txt scripts/setup.sh
	scripts/setup.sh
	@touch $@

$(VENV)/.stamp-test: pyproject.toml constraints.txt scripts/setup.sh
	scripts/setup.sh test dev learned mmseg ray
	@touch $@ $(VENV)/.stamp-base

setup: $(VENV)/.stamp-base ## install bench into .venv

demo: $(VENV)/.stamp-base ## set up, then sweep jpeg, webp, jpeg2000 over Kodak into results/demo
	$(BENCH) run --codecs jpeg,webp,jpeg2000 --dataset kodak --anchor jpeg --reference kodak/vtm,kodak/bpg \
	  $(if $(KODAK_DIR),--data-dir $(KODAK_DIR)) --out $(DEMO_OUT)-$$(date +%Y%m%d-%H%M%S)

test: $(VENV)/.stamp-test ## set up with the test extras, then lint, run the test suite and `make check`
	$(VENV)/bin/ruff check bench tests benchmarks
	$(VENV)/bin/mypy bench
	$(VENV)/bin/python -m pytest
	@$(MAKE) --no-print-directory check

check: $(VENV)/.stamp-base ## sweep 4 Kodak images and `bench check` them against the committed baseline
	rm -rf $(CI_OUT)
	$(BENCH) run $(CI_SWEEP) $(if $(KODAK_DIR),--data-dir $(KODAK_DIR)) --out $(CI_OUT)
	$(BENCH) check $(CI_OUT) --baseline $(CI_BASELINE) --rules $(CI_RULES)

baseline: $(VENV)/.stamp-base ## regenerate the committed baseline from a fresh run of that sweep
	rm -rf results/ci-baseline
	$(BENCH) run $(CI_SWEEP) $(if $(KODAK_DIR),--data-dir $(KODAK_DIR)) --out results/ci-baseline
	$(BENCH) baseline results/ci-baseline --out $(CI_BASELINE)

benchmark: $(VENV)/.stamp-test ## time the full default Kodak sweep of jpeg, webp, jpeg2000
	$(VENV)/bin/python benchmarks/kodak_sweep.py $(if $(KODAK_DIR),--data-dir $(KODAK_DIR))

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

.PHONY: help setup demo test check baseline benchmark clean
