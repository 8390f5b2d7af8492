"""Keep a person's Strava and Fitbit (Google Health) data in PostgreSQL with Apache Airflow.

Modules: ``sources`` (one declaration per source: the registry), ``schema`` (the tables), ``ddl``
(apply them), ``hooks`` (the APIs), ``transforms`` (API JSON to rows, one module per API),
``loader`` (set-based upserts), ``windows`` (what each run fetches), ``handover`` (what tasks hand
each other), ``tasks`` (the DAG's task bodies, one module per step), ``tokens`` (where OAuth tokens
live), ``errors`` (what to do next about an error), ``apis`` (facts about the APIs).
"""

__version__ = "0.1.0"
