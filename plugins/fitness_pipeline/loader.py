"""Set-based upserts into the fitness tables.

Rows are COPYed into a staging table (persistent between the DAG's transform and
load tasks, or a temporary one for :func:`upsert_rows`) and merged with one
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE`` the row really
changed, so re-loading unchanged data writes no tuple and keeps ``last_time``.
Nothing here commits: the caller owns the transaction (see :func:`db.transaction`),
so a failure leaves every table as it was. Nothing here logs values.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import DIALECT, copy_rows, execute
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import DELETED_AT, LAST_TIME, STAGING, data_columns, quarantine
from fitness_pipeline.transforms.records import QuarantineEntry

try:  # SQLAlchemy 2.1; 1.4 and 2.0 spell DISTINCT ON as select().distinct(col)
    from sqlalchemy.dialects.postgresql import distinct_on
except ImportError:  # pragma: no cover - exercised on Airflow 2
    distinct_on = None


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def stage_rows(cursor: Any, target: sa.Table, batch_id: str, rows: Iterable[Mapping[str, Any]],
               staging: sa.Table | None = None, start_seq: int = 0) -> int:
    """COPY ``rows`` (dicts keyed by the target's data columns) into the staging table.

    ``seq`` orders the batch (``start_seq`` onwards): of two rows with one key, the later wins.
    """
    staging = staging if staging is not None else STAGING[target.name]
    names = [c.name for c in data_columns(target)]
    tuples = ((batch_id, seq, *(row[n] for n in names)) for seq, row in enumerate(rows, start_seq))
    return copy_rows(cursor, staging.name, ["batch_id", "seq", *names], tuples)


def merge_staged(cursor: Any, target: sa.Table, batch_id: str, staging: sa.Table | None = None) -> UpsertCounts:
    """Upsert one staged batch into ``target``; duplicates within the batch: the last one wins."""
    staging = staging if staging is not None else STAGING[target.name]
    execute(cursor, _merge_statement(target, staging), {"batch_id": batch_id})
    inserted, updated, distinct_keys = cursor.fetchone()
    # an empty upsert yields no row for the scalar subquery to ride on
    distinct_keys = distinct_keys or 0
    return UpsertCounts(inserted=inserted, updated=updated, unchanged=distinct_keys - inserted - updated)


def delete_staged(cursor: Any, staging: sa.Table, batch_id: str) -> int:
    execute(cursor, sa.delete(staging).where(staging.c.batch_id == batch_id))
    return cursor.rowcount


def upsert_rows(cursor: Any, target: sa.Table, rows: Iterable[Mapping[str, Any]]) -> UpsertCounts:
    """Upsert ``rows`` into ``target`` through a temporary staging table, in the caller's transaction."""
    temp = _temp_staging(target)
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {temp.name} "
        f"(LIKE {DIALECT.identifier_preparer.quote(STAGING[target.name].name)} INCLUDING DEFAULTS) "
        "ON COMMIT DROP"
    )
    stage_rows(cursor, target, "temp", rows, staging=temp)
    counts = merge_staged(cursor, target, "temp", staging=temp)
    cursor.execute(f"TRUNCATE {temp.name}")
    return counts


def _temp_staging(target: sa.Table) -> sa.Table:
    return sa.Table(f"tmp_stage_{target.name}", sa.MetaData(),
                    *(sa.Column(c.name, c.type) for c in STAGING[target.name].columns))


def _merge_statement(target: sa.Table, staging: sa.Table) -> sa.sql.Select:
    keys = [c.name for c in target.primary_key.columns]
    names = [c.name for c in data_columns(target)]
    changing = [n for n in names if n not in keys]
    batch = staging.c.batch_id == sa.bindparam("batch_id")
    key_cols = [staging.c[k] for k in keys]
    latest = sa.select(*(staging.c[n] for n in names)).where(batch).order_by(*key_cols, staging.c.seq.desc())
    latest = (latest.ext(distinct_on(*key_cols)) if distinct_on else latest.distinct(*key_cols)).subquery("latest")

    def differs(row: Any) -> sa.ColumnElement[bool]:
        different = sa.tuple_(*(target.c[n] for n in changing)).is_distinct_from(
            sa.tuple_(*(row[n] for n in changing)))
        if DELETED_AT in target.c:  # a record marked deleted that is back upstream is restored
            different = sa.or_(different, target.c[DELETED_AT].is_not(None))
        return different

    # Unchanged rows are filtered out before the INSERT: ON CONFLICT ... WHERE false would
    # still lock (and so dirty) every conflicting row. The ON CONFLICT clause stays for rows
    # that a concurrent transaction inserts or changes meanwhile.
    present = sa.and_(*(target.c[k] == latest.c[k] for k in keys))
    source = sa.select(*(latest.c[n] for n in names)).select_from(latest.outerjoin(target, present)).where(
        sa.or_(target.c[keys[0]].is_(None), differs(latest.c)))
    insert = pg.insert(target).from_select(names, source)
    set_ = {**{n: insert.excluded[n] for n in changing}, LAST_TIME: sa.func.now()}
    if DELETED_AT in target.c:
        set_[DELETED_AT] = None
    insert = insert.on_conflict_do_update(
        index_elements=keys,
        set_=set_,
        where=differs(insert.excluded),  # an unchanged row is a no-op: no new tuple, last_time kept
    ).returning(sa.literal_column("xmax = 0").label("inserted"))
    upserted = insert.cte("upserted")
    distinct_keys = sa.select(sa.func.count(sa.distinct(sa.tuple_(*key_cols)))).where(batch).scalar_subquery()
    return sa.select(
        sa.func.count().filter(upserted.c.inserted),
        sa.func.count().filter(sa.not_(upserted.c.inserted)),
        distinct_keys,
    ).select_from(upserted)


def quarantine_records(cursor: Any, source: str, entries: Iterable[QuarantineEntry]) -> int:
    """Store quarantined records with their reason; a record seen again bumps ``times_seen``."""
    total = 0
    for chunk in _chunks(entries, 1000):
        values = [{"source": source, "record_key": r.record_key, "reason": r.reason, "payload": r.payload}
                  for r in {r.record_key: r for r in chunk}.values()]
        statement = pg.insert(quarantine).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[quarantine.c.source, quarantine.c.record_key],
            set_={
                "reason": statement.excluded.reason,
                "payload": statement.excluded.payload,
                "last_seen": sa.func.now(),
                "times_seen": quarantine.c.times_seen + 1,
            },
        )
        execute(cursor, statement)
        total += len(values)
    return total


def release_quarantined(cursor: Any, source: str, target: sa.Table, staging: sa.Table, batch_id: str) -> int:
    """Drop quarantine entries whose record has now loaded in a valid version."""
    key = next(iter(target.primary_key.columns)).name
    loaded = sa.select(sa.cast(staging.c[key], sa.Text)).where(staging.c.batch_id == batch_id)
    execute(cursor, sa.delete(quarantine).where(quarantine.c.source == source, quarantine.c.record_key.in_(loaded)))
    return cursor.rowcount


def _chunks(items: Iterable[Any], size: int) -> Iterable[tuple[Any, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


class MassDeletionError(NeedsPersonError):
    """Refused to mark a large share of a window's rows deleted (an API that suddenly returns
    nothing, e.g. after a scope was lost, looks exactly like a mass deletion)."""


def mark_deleted(cursor: Any, source: str, target: sa.Table, batch_id: str, in_window: sa.ColumnElement[bool],
                 max_share: float, staging: sa.Table | None = None) -> int:
    """Set ``deleted_at`` on live rows inside the reconciled window that the batch did not bring.

    Rows whose record sits in quarantine are upstream (just unreadable): they are kept live.
    Raises :class:`MassDeletionError` (the caller's transaction then rolls back) when more than
    ``max_share`` of the window's live rows, and more than two, would be marked.
    """
    staging = staging if staging is not None else STAGING[target.name]
    key = next(iter(target.primary_key.columns))
    seen = sa.select(staging.c[key.name]).where(staging.c.batch_id == batch_id)
    held = sa.select(quarantine.c.record_key).where(quarantine.c.source == source)
    live = sa.and_(in_window, target.c[DELETED_AT].is_(None))
    vanished = sa.and_(live, key.not_in(seen), sa.cast(key, sa.Text).not_in(held))
    execute(cursor, sa.select(sa.func.count().filter(vanished), sa.func.count()).select_from(target).where(live))
    missing, total = cursor.fetchone()
    if missing > 2 and missing > max_share * total:
        raise MassDeletionError(
            f"{target.name}: {missing} of {total} rows in the reconciled window vanished upstream, more than "
            f"max_deleted_share={max_share:g}. Refusing to mark them deleted: check the connection's scopes and the "
            "account. If they really were deleted, trigger the DAG with a higher max_deleted_share.")
    if not missing:
        return 0
    execute(cursor, sa.update(target).where(vanished).values({DELETED_AT: sa.func.now(), LAST_TIME: sa.func.now()}))
    return int(cursor.rowcount)
