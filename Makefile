# Two commands from a fresh clone: `make demo` and `make test`.
# Both create the virtual environment when it is missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keyed by pyproject.toml and this checkout's path: a venv cached outside the clone (CI) still
# gets this clone's editable install.
STAMP := $(VENV)/.raybench-$(shell (cat pyproject.toml; pwd) | sha256sum | cut -c1-16)
RESULTS ?= ./runs
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing raybench and its dependencies into $(VENV): the first time this downloads"
	@echo "PyTorch and Ray (large wheels) and takes several minutes; pip shows its progress below."
	$(BIN)/python -m pip install --progress-bar on --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.raybench-*
	@touch $@

demo: $(STAMP)
	$(BIN)/raybench demo --results $(RESULTS)

# Every test, with line and branch coverage of raybench/ (pyproject.toml [tool.coverage.*]),
# CLI subprocesses and Ray workers included; prints the total and each package's figure.
# CI runs this. Two pytest-xdist workers: the session Ray's tests on one, the tests that start
# Rays of their own on one, the rest wherever a worker is free (tests/conftest.py's groups;
# TEST_WORKERS=0 runs everything in one process). The second combine takes the data of
# processes that ended after pytest-cov combined (the session's Ray workers stop at the end).
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
test: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest $(XDIST) --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine --append -q || true
	$(BIN)/python .ci/coverage_by_package.py

# The quick loop: every test not marked slow, cluster or ray (no Ray start, no training run).
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not cluster and not ray" $(PYTEST_ARGS)

# The linter and the type checker, with the settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check raybench tests benchmarks
	$(BIN)/mypy

# Everything the README's commands and the tests write into the checkout (all git-ignored).
clean:
	rm -rf .raybench-cache runs .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
