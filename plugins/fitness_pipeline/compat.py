"""Imports that differ between Airflow 3 (``airflow.sdk``) and Airflow 2.10/2.11."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

#: the running Airflow's major version is 3 or later
AIRFLOW_3 = int(version("apache-airflow").split(".")[0]) >= 3

try:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSkipException
    from airflow.sdk.log import mask_secret
except ImportError:  # Airflow 2
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSkipException,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]


def dag_run_finished(dag_id: str, run_id: str) -> bool | None:
    """Whether run ``run_id`` of ``dag_id`` is over: finished (success or failed) or no longer known to
    Airflow (deleted); None when it cannot tell (not inside a task, the API unreachable).

    On Airflow 3 through the Execution API's run counts (a state lookup of a deleted run would answer 404,
    which the task supervisor logs as an error); on Airflow 2 through the ORM."""
    try:
        if AIRFLOW_3:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            if not RuntimeTaskInstance.get_dr_count(dag_id=dag_id, run_ids=[run_id]):
                return True
            return bool(RuntimeTaskInstance.get_dr_count(dag_id=dag_id, run_ids=[run_id],
                                                         states=["success", "failed"]))
        from airflow.models import DagRun

        runs = DagRun.find(dag_id=dag_id, run_id=run_id)
        return not runs or str(runs[0].state).split(".")[-1].lower() in {"success", "failed"}
    except Exception:
        return None


def _current_context() -> Any:
    try:
        from airflow.sdk import get_current_context
    except ImportError:  # Airflow 2
        from airflow.operators.python import get_current_context  # type: ignore[no-redef]
    return get_current_context()


def current_dag_id() -> str | None:
    """The id of the DAG whose task is running here; None outside a task."""
    try:
        return str(_current_context()["dag"].dag_id)
    except Exception:
        return None


#: the context variable a mapped task's ``map_index_template`` shows (the athlete's name in the UI)
MAP_INDEX_NAME = "athlete_name"


def name_map_index(name: str) -> None:
    """Label the running mapped task with ``name`` (its ``map_index_template`` renders
    :data:`MAP_INDEX_NAME`); nothing outside a task."""
    try:
        _current_context()[MAP_INDEX_NAME] = name
    except Exception:
        return


__all__ = [
    "AIRFLOW_3",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSkipException",
    "BaseHook",
    "current_dag_id",
    "dag_run_finished",
    "mask_secret",
    "name_map_index",
]
