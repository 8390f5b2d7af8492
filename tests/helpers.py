"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any


def query(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run a read-only query in its own transaction and return all rows."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.rollback()
    return rows


def connect_db(postgres: Any, name: str) -> Any:
    """A psycopg 3 connection to database ``name`` of an embedded PostgreSQL (``EmbeddedPostgres``)."""
    import psycopg

    return psycopg.connect(postgres.dsn(name))
