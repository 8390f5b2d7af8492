"""``dag.test()`` runs that record when they really started.

Airflow 3's ``DAG.test()`` (3.3 included) creates its run with ``start_date=logical_date or run_after``
(``airflow/sdk/definitions/dag.py``, the call to ``get_or_create_dagrun``), not the wall-clock time
(apache/airflow#66127). A run for the hour that just ended, started at 7 past, is then recorded as
started at the top of the hour, and the UI (``make airflow`` shares the demo's metadata database) shows
a duration of 7 minutes for a run of 25 s. The end date is right: the run sets it when it finishes.

:func:`dag_test` is ``dag.test()`` with the run created as starting now. Used by ``make demo``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)``, the run's ``start_date`` the moment it is created instead of its logical date."""
    from airflow.models import dagrun

    original = getattr(dagrun, "get_or_create_dagrun", None)
    if original is None:  # an Airflow whose dag.test() creates its run otherwise: nothing to correct here
        return dag.test(**kwargs)

    def get_or_create_dagrun(*args: Any, **create: Any) -> Any:
        create["start_date"] = dt.datetime.now(dt.UTC)
        return original(*args, **create)

    # dag.test() imports it from airflow.models.dagrun when called, so the module attribute is what it gets
    with mock.patch.object(dagrun, "get_or_create_dagrun", get_or_create_dagrun):
        return dag.test(**kwargs)
