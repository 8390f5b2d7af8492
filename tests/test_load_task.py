"""The load task when its staged batch is gone: the staging tables are UNLOGGED, and PostgreSQL empties
them when it recovers from a crash (here: TRUNCATE, which leaves them in the same state)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.helpers import query

DAY = dt.timedelta(days=1)


def this_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("source", ["strava_activity", "fitbit_weight"])
def test_a_batch_emptied_from_staging_is_staged_again_and_loads_whole(schema: Any, all_connections: Any,
                                                                      source: str) -> None:
    from fitness_pipeline import sources
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    spec = sources.get(source)
    window = Window(this_hour() - 60 * DAY, this_hour())
    staged = transform(extract(source, "crash", window))
    assert staged.staged > 0
    for table in (spec.target, *spec.companion_tables()):
        schema.cursor().execute(f"TRUNCATE stage_{table.name}")
    schema.commit()

    loaded = load(staged)
    assert loaded.inserted == staged.staged and loaded.deleted == 0
    assert query(schema, f"SELECT count(*) FROM {spec.table}") == [(staged.staged,)]
    if spec.companions:
        assert query(schema, "SELECT count(*) FROM fitbit_height")[0][0] == staged.companions_staged["fitbit_height"]


def test_a_load_retried_after_its_commit_returns_what_it_did_and_changes_nothing(
        schema: Any, all_connections: Any) -> None:
    """The worker died after the load's COMMIT, before Airflow recorded success: the retry finds the batch
    gone from staging and raw_record, and its sync_run row there."""
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    staged = transform(extract("strava_activity", "once", Window(this_hour() - 60 * DAY, this_hour())))
    first = load(staged)
    before = query(schema, "SELECT id, xmin::text, deleted_at FROM strava_activity ORDER BY id")
    assert load(staged) == first
    assert query(schema, "SELECT id, xmin::text, deleted_at FROM strava_activity ORDER BY id") == before


def test_a_batch_with_neither_staged_rows_nor_landed_records_fails_and_marks_nothing(
        schema: Any, all_connections: Any) -> None:
    from fitness_pipeline.compat import AirflowFailException
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    window = Window(this_hour() - 60 * DAY, this_hour())
    load(transform(extract("strava_activity", "first", window)))
    staged = transform(extract("strava_activity", "second", window))
    cur = schema.cursor()
    cur.execute("TRUNCATE stage_strava_activity")
    cur.execute("DELETE FROM raw_record")
    schema.commit()
    with pytest.raises(AirflowFailException, match="neither its staged rows nor its landed records"):
        load(staged)
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]
