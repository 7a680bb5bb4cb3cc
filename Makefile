# Everyday commands. CI runs `make lint`, then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install test lint fmt bench demo

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PIP) -e .

# Runs the example workspace on the embedded default (SQLite, in-process queue,
# emails written to outbox/) and shows what was sent.
demo: install
	$(VENV)/bin/nurture subscribers add ana@example.com --first-name Ana --confirmed
	$(VENV)/bin/nurture send-due
	$(VENV)/bin/nurture subscribers show ana@example.com
	ls outbox/

test: $(PY)
	$(PIP) -e '.[test]'
	$(PY) -m pytest

# Speed against this machine's own limits (bench/README.md): needs the local PostgreSQL,
# Redis and wrk; starts nothing it does not stop. About 11 minutes.
bench: $(PY)
	$(PIP) -e '.[test]'
	$(PY) -m bench

lint: $(PY)
	$(PIP) -e '.[dev]'
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy nurture
	$(VENV)/bin/lint-imports

fmt: $(PY)
	$(PIP) -e '.[dev]'
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
