"""Keep a person's Strava and Fitbit (Google Health) data in PostgreSQL with Apache Airflow.

Modules: ``schema`` (the tables), ``ddl`` (apply them), ``transform`` (API JSON to rows),
``loader`` (set-based upserts), ``tokens`` (where OAuth tokens live), ``hooks`` (the APIs),
``windows`` (what each run fetches), ``tasks`` (the DAG's task bodies).
"""

__version__ = "0.1.0"
