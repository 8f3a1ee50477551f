# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: demo test test-default test-smoke test-matrix services conformance conformance-quick lint docs bench clean fuzz soak

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,redis,django]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/run_demo.py --host $(HOST) --port $(PORT)

services:
	bash tests/services.sh

# CI: lint (ruff check, ruff format --check, mypy), then the whole suite on the default combination (.venv: python3, newest Django and
# dependencies), then the smoke subset on every other combination of the matrix
# (noxfile.py; environments cached outside the clone, see docs/topics/versions.rst).
# The two halves run side by side (-j2: this machine has two cores, and both are mostly
# waiting on sockets), which keeps CI well under 20 minutes.
test: $(STAMP) services
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-default test-smoke

test-default: $(STAMP) services
	$(PY) -m pytest $(PYTEST_ARGS)

# The attack suite's fuzz targets with 1,000,000 inputs in all (not in CI), in rounds of
# fresh seeds, stopped at FUZZ_SECONDS; figures in FUZZ_REPORT (tests/adversarial/fuzz_run.py).
FUZZ_EXAMPLES ?= 1000000
FUZZ_SECONDS ?= 36000
FUZZ_REPORT ?= reports/fuzz.json
fuzz: $(STAMP) services
	$(PY) tests/adversarial/fuzz_run.py --examples $(FUZZ_EXAMPLES) --seconds $(FUZZ_SECONDS) \
		--report $(FUZZ_REPORT)
test-smoke: $(STAMP) services
	$(PY) -m nox -s smoke

# The whole suite on every combination of the matrix (python x Django x oldest/newest).
test-matrix: $(STAMP) services
	$(PY) -m nox -s full

conformance: $(STAMP)
	$(PY) tests/conformance/run.py

conformance-quick: $(STAMP)
	$(PY) tests/conformance/run.py --quick

# 30 minutes of mixed traffic over 2 servers, a worker and a Redis Cluster, with
# a Redis master, a server and the worker killed; not in CI (tests/e2e/soak.py).
soak: $(STAMP)
	$(PY) -m tests.e2e.soak --duration $${SOAK_SECONDS:-1800}

lint: $(STAMP)
	$(PY) -m ruff check wsbridge contrib tests examples bench
	$(PY) -m ruff format --check wsbridge contrib tests examples bench
	$(PY) -m mypy

docs: $(STAMP)
	$(PY) -m sphinx -n -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build reports
