# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamps: the agent and what it needs to run; then the test tools as well.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# No pip cache and no version check: setting up writes nothing outside this checkout. The
# warning filter hides setuptools' note that an editable install maps wattwise to agent/
# (information, not a problem); tests/project checks the build prints no deprecation.
PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS="ignore:Editable installation" \
	$(BIN)/python -m pip --quiet --no-cache-dir

.PHONY: run test lint bench bench-scale probe docs dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -e '.[test]'
	touch $(TEST_STAMP)

run: $(STAMP)  ## run the agent in the foreground as any user, keeping its state in .wattwise/ (Ctrl-C stops it)
	$(BIN)/wattwise run --config config/quickstart.yaml

test: $(TEST_STAMP)  ## set up and run lint and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(TEST_STAMP)  ## every cost target of issue 12 (tick, 30-day ledger, scrape, idle, launch, RSS), ~9 min
	$(BIN)/python benchmarks/bench_tick.py

bench-scale: $(TEST_STAMP)  ## tick CPU time with 20,000 idle cgroups, and with up to 20,000 jobs (minutes)
	$(BIN)/python benchmarks/bench_scale.py

docs: $(TEST_STAMP)  ## regenerate docs/configuration.md and docs/metrics.md from the code
	$(BIN)/python docs/generate.py

dist: $(STAMP)  ## build the wheel a server installs (docs/install.md): dist/wattwise-<version>-py3-none-any.whl
	$(PIP) wheel --no-deps -w dist .

probe: $(STAMP)  ## what this machine offers, with the quick start's paths
	$(BIN)/wattwise probe --config config/quickstart.yaml

clean:  ## everything set up or built here, and the quick start's state (.wattwise/)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .wattwise build dist *.egg-info
