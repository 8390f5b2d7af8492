# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/include

.PHONY: demo test lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# stamps: pip runs again only when a requirements file changes
$(VENV)/.runtime: $(BIN)/python requirements.txt requirements-embedded.txt constraints.txt
	$(PIP) -r requirements.txt -r requirements-embedded.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

## demo: run fitness_sync once on the embedded defaults (pgserver + API emulator) and print what it did
demo: $(VENV)/.runtime
	$(BIN)/python include/scripts/demo.py

## test: lint, then the whole suite on its own embedded PostgreSQL and emulator
test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .

## bench: the benchmark scripts (figures printed; nothing asserted)
bench: $(VENV)/.dev
	$(BIN)/python bench/load_throughput.py
	$(BIN)/python bench/parse_time.py

## lock: rewrite constraints.txt from the current virtualenv
lock:
	{ echo "# Every transitive version, locked (Airflow's own constraint files cannot be fetched here)."; \
	  echo "# Regenerate: make lock"; $(BIN)/python -m pip freeze | grep -v '^-e' | sort -f; } > constraints.txt

clean:
	rm -rf .local
