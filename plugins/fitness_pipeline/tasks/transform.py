"""The transform step: a batch's landed records become staged rows; bad records go to ``quarantine``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.handover import Extracted, Staged
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, raw_record, staging_for
from fitness_pipeline.sources import SourceSpec, resolve
from fitness_pipeline.transforms.records import TransformResult, transform_batch

log = logging.getLogger(__name__)

#: landed records read (and transformed) at a time, unless a source needs its whole batch at once
READ_CHUNK = 5000


def transform(extracted: Extracted, db_conn_id: str = FITNESS_DB_CONN_ID) -> Staged:
    """Turn the batch's landed records into rows in the staging tables, in one transaction.

    Quarantined records are stored under the source's id (a companion table's under its name).
    """
    from fitness_pipeline.loader import quarantine_records, stage_rows

    spec = sources.get(extracted.source)
    batch = extracted.batch_id
    targets = {table.name: table for table in (spec.target, *spec.companion_tables())}
    staged_rows = dict.fromkeys(targets, 0)
    quarantined = 0
    from fitness_pipeline import athletes

    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        athletes.hold(cur, extracted.athlete_id)
        for table in targets.values():
            staging = staging_for(table)
            execute(cur, sa.delete(staging).where(staging.c.batch_id == batch))
        for payloads in landed_chunks(conn, batch, None if spec.batch_rows else READ_CHUNK):
            result = rows_for(spec, cur, [json.loads(p) for p in payloads], extracted.athlete_id)
            parts = [(spec.table, spec.id, result), *((name, name, part) for name, part in result.companions.items())]
            for table_name, quarantine_source, part in parts:
                staged_rows[table_name] += stage_rows(cur, targets[table_name], batch, part.rows,
                                                      start_seq=staged_rows[table_name],
                                                      athlete_id=extracted.athlete_id)
                quarantined += quarantine_records(cur, quarantine_source, part.quarantined, extracted.athlete_id)
    if quarantined:
        log.warning("%s: %d records quarantined (see table quarantine)", spec.id, quarantined)
    log.info("%s: %s staged", spec.id, ", ".join(f"{count} rows for {name}" for name, count in staged_rows.items()))
    return Staged(extracted, staged_rows.pop(spec.table), quarantined, companions_staged=staged_rows)


def rows_for(spec: SourceSpec, cur: Any, records: list[Any], athlete_id: int = DEFAULT_ATHLETE_ID) -> TransformResult:
    """``spec``'s rows of ``records`` of ``athlete_id`` (its ``batch_rows`` may read that athlete's reference data
    through ``cur``)."""
    if spec.batch_rows is not None:
        return resolve(spec.batch_rows)(cur, records, athlete_id)
    key = resolve(spec.quarantine_key) if spec.quarantine_key is not None else None
    return transform_batch(records, resolve(spec.row), key=key)


def landed_chunks(conn: Any, batch: str, size: int | None) -> Iterator[list[str]]:
    """The batch's landed payloads in order, ``size`` at a time or all at once (``None``).
    A server-side cursor keeps memory lean for big batches."""
    with closing(conn.cursor("landed_records")) as cur:
        execute(cur, sa.select(raw_record.c.payload).where(raw_record.c.batch_id == batch)
                .order_by(raw_record.c.seq))
        if size is None:
            if rows := cur.fetchall():
                yield [row[0] for row in rows]
            return
        while chunk := cur.fetchmany(size):
            yield [row[0] for row in chunk]
