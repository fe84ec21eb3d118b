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

.PHONY: demo test lint install clean

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

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The linter and the type checker, with the settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check raybench tests benchmarks
	$(BIN)/mypy

# Everything the README's commands and the tests write into the checkout (all git-ignored).
clean:
	rm -rf .raybench-cache runs .pytest_cache .mypy_cache .ruff_cache
