# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
VENV2 := .venv-airflow2
PIP2 := $(VENV2)/bin/python -m pip install --disable-pip-version-check -q -c constraints-airflow2.txt
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/devtools

.PHONY: demo test test-unit soak lint bench lock clean authorize-strava authorize-fitbit airflow test-airflow2 lock-airflow2

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# stamps: pip runs again only when a requirements file changes
# the repository is also a small Airflow provider (connection types strava/fitbit with forms)
$(VENV)/.runtime: $(BIN)/python requirements.txt requirements-embedded.txt constraints.txt pyproject.toml
	$(PIP) -r requirements.txt -r requirements-embedded.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

## demo: run fitness_sync once on the embedded defaults (pgserver + API emulator) and print what it did
demo: $(VENV)/.runtime
	$(BIN)/python devtools/scripts/demo.py

## airflow: a local Airflow 3 (API server, scheduler, DAG processor) on the embedded defaults, fitness_sync
##   unpaused, connections pointing at the emulator; prints the URL; Ctrl-C stops everything
airflow: $(VENV)/.runtime
	$(BIN)/python devtools/scripts/airflow_local.py $(AIRFLOW_ARGS)

## test: lint, the whole suite on its own embedded PostgreSQL and emulator, then the Airflow 2.11 check
test: $(VENV)/.dev $(VENV2)/.runtime
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2
	$(BIN)/python devtools/scripts/airflow2_check.py --airflow2-python $(VENV2)/bin/python

## test-unit: the fast tier, tests/unit: the hooks' and errors' pure logic, no PostgreSQL, emulator or Airflow DB
test-unit: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/unit

## soak: 300 simulated hourly runs (seeded) with random faults, then the tables against a fault-free import;
##   not part of make test (~20 min); SOAK_ARGS="--seed 7 --hours 300 --fault-rate 0.2"
soak: $(VENV)/.dev
	$(BIN)/python devtools/scripts/soak.py $(SOAK_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

## bench: the benchmark scripts (figures printed; nothing asserted)
bench: $(VENV)/.dev
	$(BIN)/python bench/load_throughput.py
	$(BIN)/python bench/parse_time.py
	$(BIN)/python bench/api_calls.py
	$(BIN)/python bench/history_import.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/club.py
	$(BIN)/python bench/events.py

## lock: rewrite constraints.txt from the current virtualenv
lock:
	{ echo "# Every transitive version, locked (Airflow's own constraint files cannot be fetched here)."; \
	  echo "# Regenerate: make lock"; $(BIN)/python -m pip freeze --exclude-editable | sort -f; } > constraints.txt

## authorize-strava: authorize a Strava account once and print the strava_default connection
##   (STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET; AUTHORIZE_ARGS="--port 8765 --no-browser")
authorize-strava: $(VENV)/.runtime
	$(BIN)/python -m fitness_pipeline.authorize strava $(AUTHORIZE_ARGS)

## authorize-fitbit: the same for Fitbit data through Google (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)
authorize-fitbit: $(VENV)/.runtime
	$(BIN)/python -m fitness_pipeline.authorize fitbit $(AUTHORIZE_ARGS)

clean:
	rm -rf .local

# --- Airflow 2.11 (SQLAlchemy 1.4, psycopg2) in its own virtualenv ---
$(VENV2)/bin/python:
	$(PYTHON) -m venv $(VENV2)

$(VENV2)/.runtime: $(VENV2)/bin/python requirements-airflow2.txt constraints-airflow2.txt
	$(PIP2) -r requirements-airflow2.txt
	touch $@

## test-airflow2: the DAG on Airflow 2.11 in .venv-airflow2: parse check + `airflow dags backfill` of 3 hourly runs
test-airflow2: $(VENV)/.runtime $(VENV2)/.runtime
	$(BIN)/python devtools/scripts/airflow2_check.py --airflow2-python $(VENV2)/bin/python

## lock-airflow2: rewrite constraints-airflow2.txt from .venv-airflow2
lock-airflow2:
	{ echo "# Every transitive version of the Airflow 2.11 virtualenv (.venv-airflow2), locked: Airflow's own"; \
	  echo "# constraint files cannot be fetched here. Regenerate: make lock-airflow2"; \
	  $(VENV2)/bin/python -m pip freeze --exclude-editable | sort -f; } > constraints-airflow2.txt
