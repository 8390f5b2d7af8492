"""The Strava-specific I/O of the steps: extracting activities resumably."""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import connect, execute, transaction
from fitness_pipeline.schema import extract_cursor
from fitness_pipeline.sources import SourceSpec
from fitness_pipeline.tasks.extract import clear_landed, land_page
from fitness_pipeline.windows import Window

log = logging.getLogger(__name__)


def land_activities(spec: SourceSpec, hook: Any, batch: str, window: Window, db_conn_id: str) -> int:
    """Land every activity that started inside ``window``, committing page by page.

    A try that stopped (rate limit, crash, kill) leaves its progress in ``extract_cursor``;
    the next try lists on from the newest landed start instead of from the beginning, so a
    years-long history import never re-fetches what it already has. Duplicates at the seam
    (activities sharing that second) are merged away by the load.
    """
    with closing(connect(db_conn_id)) as conn:
        with transaction(conn) as cur:
            execute(cur, sa.select(extract_cursor.c.after_epoch, extract_cursor.c.landed)
                    .where(extract_cursor.c.batch_id == batch))
            progress = cur.fetchone()
            if progress is None:
                clear_landed(cur, batch)
        after_epoch, landed = progress or (int(window.start.timestamp()), 0)
        if progress:
            log.info("%s: resuming after %d landed activities", spec.id, landed)
        after = dt.datetime.fromtimestamp(max(after_epoch, int(window.start.timestamp())), dt.UTC)
        for page in hook.iter_activity_pages(after, window.end):  # fetched between transactions
            with transaction(conn) as cur:
                landed += land_page(cur, batch, page, landed)
                after_epoch = max(after_epoch, newest_start(page) - 1)
                insert = pg.insert(extract_cursor).values(batch_id=batch, after_epoch=after_epoch, landed=landed)
                execute(cur, insert.on_conflict_do_update(
                    index_elements=[extract_cursor.c.batch_id],
                    set_={"after_epoch": insert.excluded.after_epoch, "landed": insert.excluded.landed}))
        with transaction(conn) as cur:  # complete: a later re-run of this batch starts afresh
            execute(cur, sa.delete(extract_cursor).where(extract_cursor.c.batch_id == batch))
    return landed


def newest_start(page: list[Any]) -> int:
    """Epoch seconds of the latest ``start_date`` in a page, if the page is in ascending order
    (as Strava lists with ``after``); 0 otherwise, so a resumed try re-lists rather than skips."""
    starts = []
    for activity in page:
        try:
            start = dt.datetime.fromisoformat(activity["start_date"])
        except (TypeError, KeyError, ValueError):
            continue  # transform will quarantine it; the cursor just does not move for it
        if start.tzinfo is not None:
            starts.append(int(start.timestamp()))
    return starts[-1] if starts and starts == sorted(starts) else 0
