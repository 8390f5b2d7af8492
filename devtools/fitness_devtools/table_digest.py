"""What the fault tests and the soak compare: the fitness tables' contents, without load timestamps.

A run that survived a fault must leave the same rows as a fault-free run of the same data. Load
timestamps (``first_seen``, ``last_time``) differ between any two runs, so they are left out;
``deleted_at`` counts only as whether the row is marked deleted. Also: the hand-over rows
(``raw_record``, ``extract_cursor``, the staging tables) that a finished run must not leave behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

from fitness_pipeline.db import DIALECT
from fitness_pipeline.schema import (
    DELETED_AT,
    FIRST_SEEN,
    LAST_TIME,
    STAGING,
    extract_cursor,
    fitbit_calories,
    fitbit_height,
    fitbit_weight,
    raw_record,
    strava_activity,
)

#: the tables whose rows users query
DATA_TABLES: tuple[sa.Table, ...] = (strava_activity, fitbit_weight, fitbit_height, fitbit_calories)
_LOAD_TIMESTAMPS = frozenset({FIRST_SEEN, LAST_TIME})


def _table_rows_sql(table: sa.Table) -> str:
    columns: list[Any] = []
    for column in table.columns:
        if column.name in _LOAD_TIMESTAMPS:
            continue
        columns.append((column.isnot(None)).label(column.name) if column.name == DELETED_AT else column)
    query = sa.select(*columns).order_by(*table.primary_key.columns)
    return str(query.compile(dialect=DIALECT))


def table_rows(cur: Any, table: sa.Table) -> list[tuple[Any, ...]]:
    """Every row of ``table`` (load timestamps left out, ``deleted_at`` as a flag), in key order."""
    cur.execute(_table_rows_sql(table))
    return [tuple(row) for row in cur.fetchall()]


def table_digests(conn: Any, tables: tuple[sa.Table, ...] = DATA_TABLES) -> dict[str, str]:
    """``{table name: sha256 of its rows}`` over DB-API ``conn``; equal digests mean equal contents."""
    digests = {}
    with conn.cursor() as cur:
        for table in tables:
            digest = hashlib.sha256()
            for row in table_rows(cur, table):
                digest.update(repr(row).encode())
            digests[table.name] = digest.hexdigest()
    conn.rollback()
    return digests


def leftover_handover_rows(conn: Any) -> dict[str, int]:
    """Rows left in the hand-over tables (landing, cursor, staging), by table; only non-zero counts."""
    counts = {}
    with conn.cursor() as cur:
        for table in (raw_record, extract_cursor, *STAGING.values()):
            cur.execute(f"SELECT count(*) FROM {DIALECT.identifier_preparer.quote(table.name)}")
            count = cur.fetchone()[0]
            if count:
                counts[table.name] = count
    conn.rollback()
    return counts
