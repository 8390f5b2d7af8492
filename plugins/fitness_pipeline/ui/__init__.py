"""The training calendar in Airflow 3's UI: an Airflow plugin with a FastAPI app (``/training``).

``queries`` (the read-only SQLAlchemy Core queries over the views of :mod:`fitness_pipeline.views`),
``app`` (the FastAPI app: the page, its static files and three JSON routes, all behind Airflow's login),
``plugin`` (what the ``AirflowPlugin`` in ``plugins/training_plugin.py`` registers), ``static/`` (the page).

Airflow's plugins manager imports every ``.py`` under the plugins folder, on Airflow 2.11 too, where
``airflow.api_fastapi`` does not exist: these modules import only the standard library, SQLAlchemy and
this package at module level; FastAPI and Airflow's API modules are imported when the app is built.
"""
