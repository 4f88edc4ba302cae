# `make run` serves the product on its embedded default; `make test` sets up and runs the whole test suite.
PYTHON ?= python3
RUN_VENV := .venv
DEV_VENV := .venv-dev
# The browser the end-to-end tests drive (Debian's package; Playwright downloads no browser of its own).
CHROMIUM := /usr/bin/chromium
# The proxy the slow-client tests put in front of gunicorn (Debian's package); the tests run their own instance.
NGINX := /usr/sbin/nginx

.PHONY: run test lint bench fuzz clean

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/scriptorium init
	$(RUN_VENV)/bin/scriptorium serve

test: $(DEV_VENV)/.installed $(CHROMIUM) $(NGINX)
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/lint-imports
	$(DEV_VENV)/bin/pytest

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .
	$(DEV_VENV)/bin/lint-imports

bench: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m bench

# A long fuzzing run: the suite's schemathesis test with many more cases per operation (FUZZ_EXAMPLES; `make test`
# runs 25) and a seed of your choice (FUZZ_SEED), on both databases.
FUZZ_EXAMPLES ?= 1000
FUZZ_SEED ?= 20261201
fuzz: $(DEV_VENV)/.installed $(NGINX)
	SCRIPTORIUM_TEST_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SCRIPTORIUM_TEST_FUZZ_SEED=$(FUZZ_SEED) \
		$(DEV_VENV)/bin/pytest tests/test_fuzz.py

# Runtime dependencies only. The Python client (client/, which the CLI uses) is installed from this folder, never
# looked up in a package index.
$(RUN_VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install --quiet --disable-pip-version-check -e ./client -e .
	touch $@

$(DEV_VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install --quiet --disable-pip-version-check -e ./client -e ".[dev]"
	touch $@

clean:
	rm -rf $(RUN_VENV) $(DEV_VENV) instance .pytest_cache .ruff_cache *.egg-info client/*.egg-info

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (needs root or sudo)..."
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium

# Where services may start, the package starts its own nginx on port 80; nothing here uses it, so it is stopped.
$(NGINX):
	@echo "Installing Debian's nginx for the proxy tests (needs root or sudo)..."
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq nginx
	-$(if $(filter 0,$(shell id -u)),,sudo) invoke-rc.d nginx stop
