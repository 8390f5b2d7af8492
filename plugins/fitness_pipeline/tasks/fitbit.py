"""The Google Health (Fitbit)-specific I/O of the steps: what to list, and the heights BMI needs."""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import windows
from fitness_pipeline.db import connect, execute, transaction
from fitness_pipeline.schema import ATHLETE_ID, DEFAULT_ATHLETE_ID, fitbit_height
from fitness_pipeline.sources import SourceSpec
from fitness_pipeline.tasks.extract import land_pages, land_unlisted_again
from fitness_pipeline.transforms.fitbit import BODY_FAT_MATCH_SECONDS, data_point_id, fitbit_weight_batch
from fitness_pipeline.transforms.records import RecordError, TransformResult
from fitness_pipeline.windows import Window


def land_weights(spec: SourceSpec, hook: Any, batch: str, window: Window, db_conn_id: str,
                 athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Land the weight and body-fat points measured inside ``window`` as envelopes
    ``{"dataType": ..., "point": ...}``, and all height points when the run ends at midnight or
    none is known yet (heights change rarely and cost a request). Nothing but ``raw_record`` is
    written: the heights are staged by transform and merged by load with the weights."""
    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        execute(cur, sa.select(sa.func.count()).select_from(fitbit_height)
                .where(fitbit_height.c[ATHLETE_ID] == athlete_id))
        heights_known = cur.fetchone()[0] > 0
    margin = dt.timedelta(seconds=BODY_FAT_MATCH_SECONDS)
    listed: set[str] = set()

    def pages() -> Any:
        if window.end.hour == 0 or not heights_known:
            yield envelopes("height", hook.list_samples("height", None, window.end))
        # body fat first: a weighing's fat may sit just outside the window
        yield envelopes("body-fat", hook.list_samples("body-fat", window.start - margin, window.end + margin))
        weights = hook.list_samples("weight", window.start, window.end)
        listed.update(weight_key(point) for point in weights)
        yield envelopes("weight", weights)

    landed = land_pages(db_conn_id, batch, pages())
    with closing(connect(db_conn_id)) as conn:
        return landed + land_unlisted_again(
            conn, spec, batch, window, listed, landed,
            lambda first, last: [envelopes("weight", hook.list_samples(
                "weight", max(first, window.start), min(last + dt.timedelta(seconds=1), window.end)))],
            athlete_id=athlete_id)


def weight_key(point: Any) -> str | None:
    """A weight point's id as the text of ``fitbit_weight.id``; None for what transform will quarantine."""
    try:
        return str(data_point_id(point))
    except (RecordError, AttributeError):
        return None


def envelopes(data_type: str, points: list[Any]) -> list[dict[str, Any]]:
    return [{"dataType": data_type, "point": point} for point in points]


def weight_rows(cur: Any, records: list[Any], athlete_id: int = DEFAULT_ATHLETE_ID) -> TransformResult:
    """Rows of a landed weight batch of ``athlete_id``, with BMI from their heights known and those in the batch."""
    execute(cur, sa.select(fitbit_height.c.measured_at, fitbit_height.c.height_mm)
            .where(fitbit_height.c[ATHLETE_ID] == athlete_id))
    return fitbit_weight_batch(records, [(measured_at, height_mm) for measured_at, height_mm in cur.fetchall()])


def calorie_pages(hook: Any, window: Window) -> list[list[dict[str, Any]]]:
    """The daily calorie roll-ups of every civil date the window touches in any time zone."""
    days = windows.civil_dates_touching(window)
    return [hook.daily_calories(days.lower, days.upper)]
