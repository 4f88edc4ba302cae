# `make run` serves the product on its embedded default; `make test` sets up and runs the whole test suite.
PYTHON ?= python3
RUN_VENV := .venv
DEV_VENV := .venv-dev

.PHONY: run test lint bench clean

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/scriptorium init
	$(RUN_VENV)/bin/scriptorium serve

test: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/pytest

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

bench: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m bench

# Runtime dependencies only.
$(RUN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

clean:
	rm -rf $(RUN_VENV) $(DEV_VENV) instance .pytest_cache .ruff_cache *.egg-info
