# Everyday commands. `make test` is the one CI runs.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint fmt bench demo

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

fmt: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# Runs the example workspace on the embedded default and lists the emails it wrote.
demo: install
	$(VENV)/bin/nurture subscribers add ana@example.com --first-name Ana --confirmed
	$(VENV)/bin/nurture send-due
	ls outbox/
