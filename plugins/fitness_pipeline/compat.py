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

__all__ = [
    "AIRFLOW_3",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSkipException",
    "BaseHook",
    "mask_secret",
]
