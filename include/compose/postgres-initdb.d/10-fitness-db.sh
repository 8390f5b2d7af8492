#!/usr/bin/env bash
# Creates the `fitness` database next to Airflow's metadata database (docker-compose.yaml mounts
# this folder at /docker-entrypoint-initdb.d of the postgres service).
#
# The official postgres image runs it ONCE, when the service starts on an empty data volume.
# Airflow's metadata lives in POSTGRES_DB (airflow); the fitness tables get their own role and
# database, owned by that role (so on PostgreSQL 16 it may create tables in `public`), and the
# connection `fitness_db` never touches Airflow's tables. The DAG's `ensure_schema` task creates
# the tables. Role name and password come from FITNESS_DB_USER / FITNESS_DB_PASSWORD (.env) and
# must match AIRFLOW_CONN_FITNESS_DB. Changing them later does nothing to an existing volume:
# `docker compose down -v` wipes the volume (Airflow's metadata and all fitness data with it).
set -euo pipefail

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${FITNESS_DB_USER:?FITNESS_DB_USER is not set}"
: "${FITNESS_DB_PASSWORD:?FITNESS_DB_PASSWORD is not set}"
readonly FITNESS_DB_NAME=fitness

# psql variables (:'name' is a quoted literal, format's %I / %L quote again): any password is safe
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
    -v fitness_user="${FITNESS_DB_USER}" \
    -v fitness_password="${FITNESS_DB_PASSWORD}" \
    -v fitness_db="${FITNESS_DB_NAME}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'fitness_user', :'fitness_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'fitness_user')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'fitness_db', :'fitness_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'fitness_db')
\gexec
SQL

echo "database '${FITNESS_DB_NAME}' owned by role '${FITNESS_DB_USER}' is ready"
