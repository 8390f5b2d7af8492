"""Set-based upserts into the fitness tables.

Rows are COPYed into a staging table (persistent between the DAG's transform and
load tasks, or a temporary one for :func:`upsert_rows`) and merged with one
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE`` the row really
changed, so re-loading unchanged data writes no tuple and keeps ``last_time``.
:func:`upsert_rows` COPYs rows whose key the table does not hold yet straight into
it (as raw COPY would) and merges only the others.
Nothing here commits: the caller owns the transaction (see :func:`db.transaction`),
so a failure leaves every table as it was. Nothing here logs values.

Where the time went (issue 8, 30,000 synthetic activities of ~1.8 KB raw JSON): not
the jsonb parse (~0.15 s) but TOAST: a staged row is just over the 2 KB threshold, so
PostgreSQL tried to compress the hard-to-compress ``raw`` and moved it out of line, in
the staging table and again in the target. Staging tables therefore keep rows inline
(``toast_tuple_target``, :data:`fitness_pipeline.ddl.STAGING_TOAST_TUPLE_TARGET`):
staging COPY ~1.05 s -> ~0.55 s. The ``DISTINCT ON`` sort (spilled to disk, ~0.1 s) runs
only when the batch really has a duplicate key; RETURNING and the key count are ~1%.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import DIALECT, copy_rows, execute
from fitness_pipeline.ddl import STAGING_TOAST_TUPLE_TARGET
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.handover import ReconcileRange
from fitness_pipeline.schema import (
    ATHLETE_ID,
    DEFAULT_ATHLETE_ID,
    DELETED_AT,
    LAST_TIME,
    data_columns,
    quarantine,
    record_key,
    staging_for,
)
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
               staging: sa.Table | None = None, start_seq: int = 0, athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """COPY ``rows`` (dicts keyed by the target's data columns) into the staging table, as rows of
    ``athlete_id`` (unless a row names its own).

    ``seq`` orders the batch (``start_seq`` onwards): of two rows with one key, the later wins.
    """
    staging = staging if staging is not None else staging_for(target)
    names = [c.name for c in data_columns(target)]
    tuples = ((batch_id, seq, *row_values(row, names, athlete_id)) for seq, row in enumerate(rows, start_seq))
    return copy_rows(cursor, staging.name, ["batch_id", "seq", *names], tuples)


def row_values(row: Mapping[str, Any], names: list[str], athlete_id: int) -> tuple[Any, ...]:
    """``row``'s values of the columns ``names``; a transform's row (pure: it knows no athlete) gets ``athlete_id``."""
    return tuple(row.get(ATHLETE_ID, athlete_id) if n == ATHLETE_ID else row[n] for n in names)


#: first key of the advisory lock that serializes merges into one table (the second: the table name's hash)
MERGE_LOCK = 0x6D657267


def merge_staged(cursor: Any, target: sa.Table, batch_id: str, staging: sa.Table | None = None) -> UpsertCounts:
    """Upsert one staged batch into ``target``; duplicates within the batch: the last one wins."""
    staging = staging if staging is not None else staging_for(target)
    # one merge into a table at a time, until the caller's transaction ends: two runs at once (a backfill
    # next to the hourly run) would otherwise both take an empty table for a first load and clash on a key
    execute(cursor, sa.select(sa.func.pg_advisory_xact_lock(MERGE_LOCK, sa.func.hashtext(target.name))))
    batch = staging.c.batch_id == batch_id
    key_cols = [staging.c[c.name] for c in target.primary_key.columns]
    key = key_cols[0] if len(key_cols) == 1 else sa.tuple_(*key_cols)
    execute(cursor, sa.select(sa.func.count(), sa.func.count(sa.distinct(key))).where(batch))
    staged, distinct_keys = cursor.fetchone()
    if not staged:
        return UpsertCounts()
    # the sort that picks the last row per key (spilled to disk for big batches) only when it has to
    dedupe = distinct_keys < staged
    if _is_empty(cursor, target):
        # a first load (a new install's history import): nothing to compare with, so a plain INSERT (the
        # lock above keeps a concurrent load out until this one commits)
        execute(cursor, pg.insert(target).from_select(names := [c.name for c in data_columns(target)],
                                                      _latest(target, staging, names, dedupe=dedupe)),
                {"batch_id": batch_id})
        return UpsertCounts(inserted=distinct_keys)
    return _merge(cursor, target, staging, batch_id, distinct_keys, dedupe=dedupe)


def _is_empty(cursor: Any, target: sa.Table) -> bool:
    execute(cursor, sa.select(sa.literal(1)).select_from(target).limit(1))
    return cursor.fetchone() is None


def staged_count(cursor: Any, staging: sa.Table, batch_id: str) -> int:
    """How many rows of ``batch_id`` the staging table holds.

    The persistent staging tables are UNLOGGED (their writes skip the WAL), so PostgreSQL
    empties them after a crash: a load compares this with the count the transform handed
    over and fails instead of loading a partial batch.
    """
    execute(cursor, sa.select(sa.func.count()).select_from(staging).where(staging.c.batch_id == batch_id))
    return int(cursor.fetchone()[0])


def delete_staged(cursor: Any, staging: sa.Table, batch_id: str) -> int:
    execute(cursor, sa.delete(staging).where(staging.c.batch_id == batch_id))
    return cursor.rowcount


def upsert_rows(cursor: Any, target: sa.Table, rows: Iterable[Mapping[str, Any]],
                athlete_id: int = DEFAULT_ATHLETE_ID) -> UpsertCounts:
    """Upsert ``rows`` (of ``athlete_id``, unless a row names its own) into ``target`` in the caller's
    transaction; of two rows with one key, the later wins.

    Rows whose key ``target`` does not hold yet are COPYed straight into it (under a SAVEPOINT: if
    a concurrent transaction inserted one of those keys meanwhile, every row takes the merge path
    instead); the others go through a temporary staging table and the merge, which writes only
    the rows that really changed.
    """
    keys = [c.name for c in target.primary_key.columns]
    if ATHLETE_ID in target.c:
        rows = ({**row, ATHLETE_ID: row.get(ATHLETE_ID, athlete_id)} for row in rows)
    latest = {tuple(row[k] for k in keys): row for row in rows}  # dict order: first sighting; value: last
    if not latest:
        return UpsertCounts()
    existing = _existing_keys(cursor, target, list(latest))
    to_merge = list(latest.values())
    inserted = 0
    if existing is not None and len(existing) < len(latest):
        inserted = _copy_new_rows(cursor, target, [row for k, row in latest.items() if k not in existing])
        if inserted:  # else a concurrent transaction inserted one of them: every row takes the merge
            to_merge = [row for k, row in latest.items() if k in existing]
    if not to_merge:
        return UpsertCounts(inserted=inserted)
    temp = _temp_staging(target)
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {temp.name} "
        f"(LIKE {DIALECT.identifier_preparer.quote(staging_for(target).name)} INCLUDING DEFAULTS) "
        f"WITH (toast_tuple_target = {STAGING_TOAST_TUPLE_TARGET}) ON COMMIT DROP"
    )
    stage_rows(cursor, target, "temp", to_merge, staging=temp)
    counts = _merge(cursor, target, temp, "temp", len(to_merge), dedupe=False)  # keys are unique already
    cursor.execute(f"TRUNCATE {temp.name}")
    return UpsertCounts(inserted=inserted + counts.inserted, updated=counts.updated, unchanged=counts.unchanged)


def _existing_keys(cursor: Any, target: sa.Table, keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]] | None:
    """Which of ``keys`` ``target`` already holds (one index probe each); ``None`` for a composite key."""
    if len(keys[0]) != 1:
        return None
    (column,) = target.primary_key.columns
    wanted = sa.bindparam("keys", [k[0] for k in keys], type_=pg.ARRAY(column.type))
    execute(cursor, sa.select(column).where(column == sa.any_(sa.cast(wanted, pg.ARRAY(column.type)))))
    return {(value,) for (value,) in cursor.fetchall()}


_SAVEPOINT = "fitness_copy_new_rows"


def _copy_new_rows(cursor: Any, target: sa.Table, rows: list[Mapping[str, Any]]) -> int:
    """COPY ``rows`` (keys not in ``target`` a moment ago) into ``target``; 0 if one of them is there by now."""
    names = [c.name for c in data_columns(target)]
    cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        count = copy_rows(cursor, target.name, names, (tuple(row[n] for n in names) for row in rows))
    except Exception as error:
        if _sqlstate(error) != "23505":  # unique_violation: a concurrent insert; anything else is real
            raise
        cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        count = 0
    cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return count


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg 3 (``sqlstate``) or psycopg2 (``pgcode``) error."""
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def _temp_staging(target: sa.Table) -> sa.Table:
    return sa.Table(f"tmp_stage_{target.name}", sa.MetaData(),
                    *(sa.Column(c.name, c.type) for c in staging_for(target).columns))


def _merge(cursor: Any, target: sa.Table, staging: sa.Table, batch_id: str, distinct_keys: int,
           *, dedupe: bool) -> UpsertCounts:
    execute(cursor, _merge_statement(target, staging, dedupe=dedupe), {"batch_id": batch_id})
    inserted, updated = cursor.fetchone()
    return UpsertCounts(inserted=inserted, updated=updated, unchanged=distinct_keys - inserted - updated)


def _latest(target: sa.Table, staging: sa.Table, names: list[str], *, dedupe: bool) -> sa.sql.Select:
    """The batch's rows (bound parameter ``batch_id``); with ``dedupe``, only the last (highest ``seq``) per key."""
    key_cols = [staging.c[c.name] for c in target.primary_key.columns]
    latest = sa.select(*(staging.c[n] for n in names)).where(staging.c.batch_id == sa.bindparam("batch_id"))
    if dedupe:
        latest = latest.order_by(*key_cols, staging.c.seq.desc())
        latest = latest.ext(distinct_on(*key_cols)) if distinct_on else latest.distinct(*key_cols)
    return latest


def _merge_statement(target: sa.Table, staging: sa.Table, *, dedupe: bool = True) -> sa.sql.Select:
    """The upsert of one staged batch; ``dedupe=False`` when the batch holds each key once (no sort)."""
    keys = [c.name for c in target.primary_key.columns]
    names = [c.name for c in data_columns(target)]
    changing = [n for n in names if n not in keys]
    latest = _latest(target, staging, names, dedupe=dedupe).subquery("latest")

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
    where = differs(insert.excluded)  # an unchanged row is a no-op: no new tuple, last_time kept
    if ATHLETE_ID in target.c and ATHLETE_ID not in keys:
        # a record keyed across athletes (a Strava activity id) stays with the athlete who brought it first: the
        # same person connected twice must not make two athletes take it from each other on every run
        del set_[ATHLETE_ID]
        where = sa.and_(where, target.c[ATHLETE_ID] == insert.excluded[ATHLETE_ID])
    insert = insert.on_conflict_do_update(
        index_elements=keys,
        set_=set_,
        where=where,
    ).returning(sa.literal_column("xmax = 0").label("inserted"))
    upserted = insert.cte("upserted")
    return sa.select(
        sa.func.count().filter(upserted.c.inserted),
        sa.func.count().filter(sa.not_(upserted.c.inserted)),
    ).select_from(upserted)


def quarantine_records(cursor: Any, source: str, entries: Iterable[QuarantineEntry],
                       athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Store quarantined records of ``athlete_id`` with their reason; a record seen again bumps ``times_seen``."""
    total = 0
    for chunk in _chunks(entries, 1000):
        values = [{ATHLETE_ID: athlete_id, "source": source, "record_key": r.record_key, "reason": r.reason,
                   "payload": r.payload} for r in {r.record_key: r for r in chunk}.values()]
        statement = pg.insert(quarantine).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[quarantine.c[ATHLETE_ID], quarantine.c.source, quarantine.c.record_key],
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


def release_quarantined(cursor: Any, source: str, target: sa.Table, staging: sa.Table, batch_id: str,
                        athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Drop ``athlete_id``'s quarantine entries whose record has now loaded in a valid version."""
    key = record_key(target).name
    loaded = sa.select(sa.cast(staging.c[key], sa.Text)).where(staging.c.batch_id == batch_id)
    execute(cursor, sa.delete(quarantine).where(quarantine.c[ATHLETE_ID] == athlete_id, quarantine.c.source == source,
                                                quarantine.c.record_key.in_(loaded)))
    return cursor.rowcount


def _chunks(items: Iterable[Any], size: int) -> Iterable[tuple[Any, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


class MassDeletionError(NeedsPersonError):
    """Refused to mark a large share of a window's rows deleted (an API that suddenly returns
    nothing, e.g. after a scope was lost, looks exactly like a mass deletion)."""


def reconciled_range(target: sa.Table, listed: ReconcileRange,
                     athlete_id: int = DEFAULT_ATHLETE_ID) -> sa.ColumnElement[bool]:
    """The rows of ``athlete_id`` in ``target`` inside the range an extract listed completely (a listing is
    one athlete's)."""
    column = target.c[listed.column]
    lower = column >= listed.lower if listed.lower_inclusive else column > listed.lower
    if ATHLETE_ID not in target.c:  # a source's table without athletes: the default athlete's only (see extract)
        return sa.and_(lower, column < listed.upper)
    return sa.and_(target.c[ATHLETE_ID] == athlete_id, lower, column < listed.upper)


def mark_deleted(cursor: Any, source: str, target: sa.Table, batch_id: str, in_window: sa.ColumnElement[bool],
                 max_share: float, staging: sa.Table | None = None, athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Set ``deleted_at`` on live rows inside the reconciled window that the batch did not bring.

    Rows whose record sits in quarantine are upstream (just unreadable): they are kept live.
    Raises :class:`MassDeletionError` (the caller's transaction then rolls back) when more than
    ``max_share`` of the window's live rows, and more than two, would be marked.
    """
    staging = staging if staging is not None else staging_for(target)
    key = record_key(target)  # in_window holds one athlete's rows, and so does the batch
    seen = sa.select(staging.c[key.name]).where(staging.c.batch_id == batch_id)
    held = sa.select(quarantine.c.record_key).where(quarantine.c[ATHLETE_ID] == athlete_id,
                                                     quarantine.c.source == source)
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
