"""The extract step: list a source's records through its hook and land them in ``raw_record``.

Pages are landed as they arrive, each in its own short transaction: no transaction stays open
while the hook waits for the API (or for a rate limit to reset).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, copy_rows, execute, transaction
from fitness_pipeline.handover import Extracted, ReconcileRange
from fitness_pipeline.schema import raw_record
from fitness_pipeline.sources import SourceSpec, resolve
from fitness_pipeline.windows import Window

log = logging.getLogger(__name__)


def extract(source_id: str, run_id: str, window: Window, conn_id: str | None = None,
            db_conn_id: str = FITNESS_DB_CONN_ID) -> Extracted:
    """Land the records ``source_id`` lists for ``window`` (through connection ``conn_id``, default
    the source's) as batch ``<run_id>/<source_id>``; returns what was landed and the range it proves complete.

    Errors leave as Airflow outcomes (:func:`fitness_pipeline.errors.airflow_outcome`): a rate limit
    with a known reset reschedules the task for it (its worker slot is given back and the next try
    continues where this one stopped), an error only a person can fix fails it without retries.
    """
    from fitness_pipeline.errors import raise_for_airflow

    spec = sources.get(source_id)
    batch = spec.batch_id(run_id)
    hook = resolve(spec.hook)(conn_id or spec.conn_id)
    try:
        if spec.extract is not None:
            landed = resolve(spec.extract)(spec, hook, batch, window, db_conn_id)
        else:
            landed = land_pages(db_conn_id, batch, resolve(spec.fetch)(hook, window))
    except Exception as error:
        raise_for_airflow(error)
    finally:
        hook.close()
    log.info("%s: landed %d records for [%s, %s)", spec.id, landed, window.start, window.end)
    return Extracted(spec.id, batch, landed, window, listed_range(spec, window))


def listed_range(spec: SourceSpec, window: Window) -> ReconcileRange | None:
    bounds = spec.listed_range(window)
    return ReconcileRange.of(spec.reconcile.column, bounds) if spec.reconcile and bounds else None


def land_pages(db_conn_id: str, batch: str, pages: Iterable[list[Any]]) -> int:
    """Replace the batch's landed records with ``pages``, committing page by page. Returns the count."""
    with closing(connect(db_conn_id)) as conn:
        with transaction(conn) as cur:
            clear_landed(cur, batch)
        count = 0
        for page in pages:  # the next page is fetched between transactions
            with transaction(conn) as cur:
                count += land_page(cur, batch, page, count)
    return count


def clear_landed(cur: Any, batch: str) -> None:
    execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))


def land_page(cur: Any, batch: str, page: list[Any], start_seq: int) -> int:
    """COPY one page of records into ``raw_record`` (``seq`` from ``start_seq``). Returns the count."""
    # ensure_ascii: any odd string (a lone surrogate) survives landing and is judged by transform
    rows = ((batch, start_seq + i, json.dumps(record)) for i, record in enumerate(page))
    return copy_rows(cur, raw_record.name, ["batch_id", "seq", "payload"], rows)
