"""The source registry: the DAG is exactly what the registry declares, hand-overs survive XCom, and a
source defined only here (the emulator's height points) runs end to end without touching the package."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fitness_pipeline import sources, windows
from fitness_pipeline.handover import Extracted, Loaded, ReconcileRange, RunParams, Staged
from fitness_pipeline.sources import REGISTRY, Reconcile, SourceSpec, resolve
from fitness_pipeline.windows import Window
from tests.helpers import query

REPO = Path(__file__).resolve().parent.parent
UTC = dt.UTC


def load_dag() -> Any:
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "fitness_sync.py"))
    assert bag.import_errors == {}
    return bag.get_dag("fitness_sync")


@pytest.mark.usefixtures("airflow_db")
def test_the_dags_groups_pools_and_tables_are_exactly_the_registrys() -> None:
    from fitness_pipeline.schema import STAGING

    dag = load_dag()
    groups = {task_id.split(".")[0] for task_id in dag.task_ids if "." in task_id}
    assert groups == set(REGISTRY.ids())
    assert {spec.id: dag.get_task(f"{spec.id}.extract").pool for spec in REGISTRY} == {
        spec.id: spec.pool for spec in REGISTRY}
    assert set(json.loads((REPO / "include" / "pools.json").read_text())) == REGISTRY.pools()
    # every loaded (staged) table belongs to exactly one source, as its table, a companion or what it enriches
    owned = [name for spec in REGISTRY for name in (spec.table, *spec.companions, *spec.enrich_tables)]
    assert sorted(owned) == sorted(STAGING)
    assert dag.params["sources"] == REGISTRY.ids()
    assert dag.params["lookback_hours"] == RunParams().lookback_hours == 72
    assert dag.params["max_deleted_share"] == RunParams().max_deleted_share


def test_every_declared_reference_resolves() -> None:
    for spec in REGISTRY:
        assert spec.target.name == spec.table and spec.staging.name == f"stage_{spec.table}"
        hook = resolve(spec.hook)
        assert hook.default_conn_name == spec.conn_id
        for ref in (spec.fetch, spec.extract, spec.row, spec.batch_rows, spec.quarantine_key, spec.enrich):
            assert ref is None or callable(resolve(ref)), (spec.id, ref)
        if spec.reconcile:
            assert spec.reconcile.column in spec.target.c


def test_a_declaration_is_checked_and_one_id_is_one_source() -> None:
    base = {"id": "x", "table": "strava_activity", "pool": "p", "hook": "h", "conn_id": "c"}
    with pytest.raises(ValueError, match="exactly one of fetch and extract"):
        SourceSpec(**base, row=str)
    with pytest.raises(ValueError, match="exactly one of row and batch_rows"):
        SourceSpec(**base, fetch=list)
    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register(SourceSpec(**{**base, "id": "strava_activity"}, fetch=list, row=str))
    with pytest.raises(LookupError, match="no source 'nope'"):
        sources.get("nope")
    assert sources.get("strava") is sources.get("strava_activity")  # the former group name
    assert sources.selected(["strava"]) == {"strava_activity"}
    assert sources.selected([]) == set(REGISTRY.ids())


def test_hand_overs_survive_a_json_round_trip() -> None:
    window = Window(dt.datetime(2026, 11, 1, 5, tzinfo=UTC), dt.datetime(2026, 11, 4, 6, tzinfo=UTC))
    for spec in REGISTRY:
        bounds = spec.listed_range(window)
        assert bounds is not None and spec.reconcile is not None
        listed = ReconcileRange.of(spec.reconcile.column, bounds)
        extracted = Extracted(spec.id, spec.batch_id("run"), 3, window, listed)
        staged = Staged(extracted, 2, 1, {"fitbit_height": 1})
        for handover in (extracted, staged, Loaded(spec.id, "run/x", 1, 2, 3, 4, 5)):
            xcom = json.loads(json.dumps(handover.to_xcom()))  # what XCom stores
            assert type(handover).from_xcom(xcom) == handover


def test_a_transform_result_of_the_previous_version_is_still_read() -> None:
    """A run in flight when the package is upgraded: its transform returned the former flat dict."""
    former = {"batch_id": "scheduled__2026-11-30T10:00:00+00:00/strava_activity", "source": "strava_activity",
              "extracted": 4, "window": {"start": "2026-11-27T09:00:00+00:00", "end": "2026-11-30T10:00:00+00:00"},
              "reconcile": {"column": "start_date", "lower": "2026-11-27T09:00:00+00:00",
                            "upper": "2026-11-30T10:00:00+00:00", "lower_inclusive": False},
              "staged": 3, "quarantined": 1}
    staged = Staged.from_xcom(former)
    assert (staged.source, staged.batch_id, staged.staged, staged.quarantined) == (
        "strava_activity", former["batch_id"], 3, 1)
    assert staged.extract.extracted == 4 and staged.extract.window.end == dt.datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert staged.extract.reconcile == ReconcileRange("start_date", dt.datetime(2026, 11, 27, 9, tzinfo=UTC),
                                                      dt.datetime(2026, 11, 30, 10, tzinfo=UTC), False)


def test_listed_ranges_say_what_each_api_was_asked_for() -> None:
    window = Window(dt.datetime(2026, 11, 1, 5, 0, 0, 700_000, tzinfo=UTC), dt.datetime(2026, 11, 4, 12, tzinfo=UTC))
    assert windows.exclusive_seconds(window) == windows.Bounds(
        dt.datetime(2026, 11, 1, 5, tzinfo=UTC), window.end, lower_inclusive=False)
    assert windows.half_open(window) == windows.Bounds(window.start, window.end)
    # 05:00 UTC on the 1st is still the 31st at UTC-12; 12:00 UTC on the 4th is already the 5th at UTC+14
    assert windows.civil_dates_touching(window) == windows.Bounds(dt.date(2026, 10, 31), dt.date(2026, 11, 6))


def test_run_params_take_defaults_for_missing_and_null_values() -> None:
    assert RunParams.from_params(None) == RunParams()
    params = RunParams.from_params({"lookback_hours": 5, "sources": ["strava"], "history_start": None,
                                    "max_deleted_share": "0.25"})
    assert params == RunParams(lookback_hours=5.0, sources=("strava",), max_deleted_share=0.25)
    assert params.lookback == dt.timedelta(hours=5)


# --- a fourth source, defined here only ------------------------------------------------------------

HEIGHT_POINT = "test_height_point"


def height_point_row(point: Any) -> dict[str, Any]:
    """The throwaway source's pure row function: one row per Google Health height data point."""
    from fitness_pipeline.transforms.fields import RecordError, as_int, as_utc_instant, checked_json
    from fitness_pipeline.transforms.fitbit import data_point_id

    if not isinstance(point, Mapping) or not isinstance(point.get("height"), Mapping):
        raise RecordError("height is missing")
    height = point["height"]
    return {"id": data_point_id(point), "millimetres": as_int(height, "heightMillimeters", required=True),
            "measured_at": as_utc_instant(height.get("sampleTime") or {}, "physicalTime"),
            "raw": checked_json(point)}


def height_point_pages(hook: Any, window: Window) -> Iterator[list[dict[str, Any]]]:
    """The listing: the hook's existing paged data-point list, filtered to the window."""
    from fitness_pipeline.hooks.fitbit import physical_time_filter

    return hook.iter_data_point_pages("height", physical_time_filter("height", window.start, window.end))


@pytest.fixture
def height_point_source() -> Iterator[SourceSpec]:
    """Registers the throwaway source and its table (in this process only) for one test: the README's
    steps and nothing else (its staging table follows from the registration)."""
    from sqlalchemy.dialects import postgresql as pg

    from fitness_pipeline.schema import STAGING, athlete_column, metadata

    table = sa.Table(
        HEIGHT_POINT, metadata,
        sa.Column("id", sa.Numeric(20, 0), primary_key=True, autoincrement=False),
        sa.Column("millimetres", sa.Integer, nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", pg.JSONB, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        athlete_column(),
    )
    spec = sources.register(SourceSpec(
        id="height_point", table=HEIGHT_POINT, pool="google_health_api",
        hook="fitness_pipeline.hooks.fitbit:FitbitHook", conn_id="fitbit_default",
        fetch=height_point_pages, row=height_point_row,
        quarantine_key="fitness_pipeline.transforms.fitbit:google_point_key",
        reconcile=Reconcile("measured_at", windows.half_open),
    ))
    forget_fitness_sync()  # this test's four-group DAG is the only version Airflow knows
    try:
        yield spec
    finally:
        REGISTRY.unregister(spec.id)
        staging = STAGING.pop(HEIGHT_POINT, None)
        if staging is not None:
            metadata.remove(staging)
        metadata.remove(table)
        forget_fitness_sync()


def forget_fitness_sync() -> None:
    """Delete what Airflow recorded of fitness_sync: the four-group version this test ran must not become
    a second serialized version under the runs of later tests."""
    from airflow.api.common.delete_dag import delete_dag
    from airflow.exceptions import DagNotFound

    with contextlib.suppress(DagNotFound):  # nothing recorded yet
        delete_dag("fitness_sync", keep_records_in_log=False)


@pytest.mark.usefixtures("airflow_db")
def test_a_source_defined_in_a_test_only_runs_end_to_end(db_conn: Any, all_connections: Any,
                                                        height_point_source: SourceSpec) -> None:
    from fitness_emulator.google_data import height_points

    emulator = all_connections
    dag = load_dag()  # parsed after the registration: the fourth group is there
    assert dag.get_task("height_point.extract").pool == "google_health_api"
    for task in dag.tasks:
        task.retries = 0
    hour = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    conf = {"sources": ["height_point"], "history_start": "2015-01-01", "daily_full_reconcile": False}
    dag_run = dag.test(logical_date=hour, run_conf=conf)
    assert "success" in str(dag_run.state).lower()

    expected = sorted((p.id, int(p.value)) for p in height_points(emulator.state.google.seed))
    assert expected
    assert query(db_conn, f"SELECT id, millimetres FROM {HEIGHT_POINT} ORDER BY id") == expected
    assert query(db_conn, "SELECT source, extracted, inserted, updated, unchanged, deleted FROM sync_run") == [
        ("height_point", len(expected), len(expected), 0, 0, 0)]
    assert query(db_conn, f"SELECT count(*) FROM stage_{HEIGHT_POINT}") == [(0,)]
    assert query(db_conn, "SELECT relpersistence FROM pg_class WHERE relname = %s", (f"stage_{HEIGHT_POINT}",)) == [
        ("u",)]  # made UNLOGGED like the built-in staging tables
