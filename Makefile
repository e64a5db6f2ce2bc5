# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-scale probe docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## set up and run the agent in the foreground (Ctrl-C stops it)
	$(BIN)/wattwise run --config config/wattwise.yaml

test: $(STAMP)  ## set up and run lint and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)  ## every cost target of issue 12 (tick, 30-day ledger, scrape, idle, launch, RSS), ~9 min
	$(BIN)/python benchmarks/bench_tick.py

bench-scale: $(STAMP)  ## tick CPU time with 20,000 idle cgroups, and with up to 20,000 jobs (minutes)
	$(BIN)/python benchmarks/bench_scale.py

docs: $(STAMP)  ## regenerate docs/configuration.md and docs/metrics.md from the code
	$(BIN)/python docs/generate.py

probe: $(STAMP)
	$(BIN)/wattwise probe --config config/wattwise.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
