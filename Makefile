# `make run` and `make test` each build .venv on a fresh machine, then do their job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench fuzz soak clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

## A simulated community of 1,000 prosumers trading for one day.
run: $(STAMP)
	$(BIN)/negotiator simulate --agents 1000 --slots 24 --seed 1

## Lint, type-check, import contracts, then the test suite.
test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## The benchmarks of the README's table.
bench: $(STAMP)
	$(BIN)/python benchmarks/negotiation_throughput.py --agents 10000
	$(BIN)/python benchmarks/vs_negmas.py
	$(BIN)/python benchmarks/payments_throughput.py --nodes 1000
	$(BIN)/python benchmarks/cln_overhead.py
	$(BIN)/python benchmarks/meanfield.py
	$(BIN)/python benchmarks/mfg_solvers.py
	$(BIN)/python benchmarks/learning_vs_classic.py
	$(BIN)/python benchmarks/byzantine.py --fraction 0.2
	$(BIN)/python benchmarks/scale_out.py
	$(BIN)/python benchmarks/domains.py

## A million generated messages through decode and the protocol; crashing inputs kept.
fuzz: $(STAMP)
	$(BIN)/python -m negotiator.fuzz --messages 1000000 --out fuzz-crashes

## The default community day after day for an hour, its memory sampled after every day.
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --minutes 60 --verbose

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache fuzz-crashes
