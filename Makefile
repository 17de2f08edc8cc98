# `make run` and `make test` each work on a fresh machine: they create .venv when
# missing and (re)install whenever the requirement files change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser run test test-fast screenshots lint bench

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PY) -m e2vpt_core.hyperbolic
	touch $(STAMP)

setup: $(STAMP)

# Browser tests drive Debian's chromium (never a browser Playwright downloads itself).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "could not install chromium: the browser tests will be skipped"; }

run: setup
	$(VENV)/bin/streamlit run app/main.py

test: setup browser
	$(PY) -m pytest

# The quick loop: everything but the tests marked `slow` (browser, multi-process,
# fault-injection, demo and long training tests); `make test` runs them all.
test-fast: setup
	$(PY) -m pytest -m "not slow"

# The README's pictures, retaken in the browser from the quick demo as shipped (minutes).
screenshots: setup browser
	E2VPT_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_browser.py -k screenshots

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/step_time.py
