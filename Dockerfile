# The Airflow image for docker-compose.yaml: the official Airflow 3.3.2 image plus requirements.txt,
# installed under constraints.txt (our lock: Airflow's own constraint files are not used here).
# The DAGs, plugins/, include/ and devtools/ are not baked in: docker-compose.yaml mounts them.
#
# The API emulator (devtools/fitness_emulator, compose profile `emulator`) needs FastAPI, uvicorn and
# python-multipart, which apache-airflow-core already brings (fastapi[standard-no-fastapi-cloud-cli]),
# at the versions constraints.txt pins; requirements-embedded.txt's pgserver is for `make demo` only.
#
# Keep the tag's Airflow version equal to the apache-airflow pin in requirements.txt and the
# Python version at 3.11 (tests/test_compose.py checks both).
FROM apache/airflow:3.3.2-python3.11

# As the official image docs say: install as the `airflow` user, never as root.
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/fitness-requirements/
RUN pip install --no-cache-dir \
        -c /opt/airflow/fitness-requirements/constraints.txt \
        -r /opt/airflow/fitness-requirements/requirements.txt \
    && python -c "import airflow.providers.postgres, fastapi, multipart, psycopg, requests, uvicorn"
# This repository as a provider, for the strava/fitbit connection types and their forms in the UI.
# The code that runs is the mounted ./plugins (first on PYTHONPATH); the install adds the metadata.
COPY --chown=airflow:0 pyproject.toml /opt/airflow/fitness-provider/
COPY --chown=airflow:0 plugins/fitness_pipeline /opt/airflow/fitness-provider/plugins/fitness_pipeline
RUN pip install --no-cache-dir --no-deps /opt/airflow/fitness-provider
