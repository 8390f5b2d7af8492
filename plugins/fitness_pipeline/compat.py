"""Imports that differ between Airflow 3 (``airflow.sdk``) and Airflow 2.10/2.11."""

from __future__ import annotations

from importlib.metadata import version

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
    Airflow (deleted); None when it cannot tell (not inside a task, the API unreachable)."""
    try:
        if AIRFLOW_3:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            state = RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)
        else:
            from airflow.models import DagRun

            runs = DagRun.find(dag_id=dag_id, run_id=run_id)
            state = runs[0].state if runs else "deleted"
    except Exception as error:
        detail = getattr(error, "detail", None)  # Airflow 3's execution API: {"reason": "not_found", ...}
        return True if isinstance(detail, dict) and detail.get("reason") == "not_found" else None
    return str(state).split(".")[-1].lower() in {"success", "failed", "deleted"}


__all__ = [
    "AIRFLOW_3",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSkipException",
    "BaseHook",
    "dag_run_finished",
    "mask_secret",
]
