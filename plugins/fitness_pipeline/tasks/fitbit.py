"""The Google Health (Fitbit)-specific I/O of the steps: what to list, and the heights BMI needs."""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import windows
from fitness_pipeline.db import connect, execute, transaction
from fitness_pipeline.schema import fitbit_height
from fitness_pipeline.sources import SourceSpec
from fitness_pipeline.tasks.extract import earliest_unlisted, land_page, land_pages, listed_range
from fitness_pipeline.transforms.fitbit import BODY_FAT_MATCH_SECONDS, data_point_id, fitbit_weight_batch
from fitness_pipeline.transforms.records import RecordError, TransformResult
from fitness_pipeline.windows import Window

log = logging.getLogger(__name__)


def land_weights(spec: SourceSpec, hook: Any, batch: str, window: Window, db_conn_id: str) -> int:
    """Land the weight and body-fat points measured inside ``window`` as envelopes
    ``{"dataType": ..., "point": ...}``, and all height points when the run ends at midnight or
    none is known yet (heights change rarely and cost a request). Nothing but ``raw_record`` is
    written: the heights are staged by transform and merged by load with the weights."""
    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        execute(cur, sa.select(sa.func.count()).select_from(fitbit_height))
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
    return landed + list_unlisted_weights_again(spec, hook, batch, window, db_conn_id, listed, landed)


def list_unlisted_weights_again(spec: SourceSpec, hook: Any, batch: str, window: Window, db_conn_id: str,
                                listed: set[str], landed: int) -> int:
    """List the weights once more from the earliest one we hold (live, inside the reconciled range) that the
    listing did not bring, and land them; returns how many. A page token moving by offset while the user
    deletes a newer weighing skips one; without this the load would mark it deleted. Costs a request only
    when held weights were not listed (usually real deletions)."""
    reconcile = listed_range(spec, window)
    if reconcile is None:
        return 0
    with closing(connect(db_conn_id)) as conn:
        with transaction(conn) as cur:
            earliest = earliest_unlisted(cur, spec, reconcile, listed)
        if earliest is None:
            return 0
        log.info("%s: weights we hold were missing from the listing: listing again from the earliest of them "
                 "before any is marked deleted", spec.id)
        again = envelopes("weight", hook.list_samples("weight", max(earliest, window.start), window.end))
        with transaction(conn) as cur:
            return land_page(cur, batch, again, landed)


def weight_key(point: Any) -> str | None:
    """A weight point's id as the text of ``fitbit_weight.id``; None for what transform will quarantine."""
    try:
        return str(data_point_id(point))
    except (RecordError, AttributeError):
        return None


def envelopes(data_type: str, points: list[Any]) -> list[dict[str, Any]]:
    return [{"dataType": data_type, "point": point} for point in points]


def weight_rows(cur: Any, records: list[Any]) -> TransformResult:
    """Rows of a landed weight batch, with BMI from the heights known and those in the batch."""
    execute(cur, sa.select(fitbit_height.c.measured_at, fitbit_height.c.height_mm))
    return fitbit_weight_batch(records, [(measured_at, height_mm) for measured_at, height_mm in cur.fetchall()])


def calorie_pages(hook: Any, window: Window) -> list[list[dict[str, Any]]]:
    """The daily calorie roll-ups of every civil date the window touches in any time zone."""
    days = windows.civil_dates_touching(window)
    return [hook.daily_calories(days.lower, days.upper)]
