"""Airflow plugin ``fitness_training``: the training calendar page in Airflow 3's UI (Browse > Training).

A FastAPI app at ``/training`` (every route behind Airflow's login) and a navigation entry showing it
inside the UI; see :mod:`fitness_pipeline.ui`. On Airflow 2 this file defines no plugin (the page is
for Airflow 3; the DAG works on both).
"""

from __future__ import annotations

from fitness_pipeline.compat import AIRFLOW_3

if AIRFLOW_3:
    from airflow.plugins_manager import AirflowPlugin

    from fitness_pipeline.ui import plugin as _ui

    class FitnessTrainingPlugin(AirflowPlugin):
        name = _ui.PLUGIN_NAME
        fastapi_apps = _ui.fastapi_apps()
        external_views = _ui.external_views()
