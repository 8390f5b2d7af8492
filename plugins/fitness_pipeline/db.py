"""Database plumbing shared by the DDL, the loader and the token store.

Everything here takes a DB-API connection from ``PostgresHook.get_conn()``: a
psycopg 3 connection on Airflow 3, a psycopg2 one on Airflow 2. SQL is composed
with SQLAlchemy Core and compiled for PostgreSQL; values always travel as bound
parameters or through COPY, never inside the SQL text.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.errors import RetriableError

#: the fitness database's Airflow connection unless a task is told otherwise
FITNESS_DB_CONN_ID = "fitness_db"

# psycopg2's dialect compiles to the pyformat style (%(name)s), which both drivers accept.
DIALECT = pg.psycopg2.dialect()


class DatabaseUnavailableError(RetriableError):
    """The fitness database could not be reached (down, restarting, wrong host/port): a later try may succeed."""


def connect(conn_id: str = FITNESS_DB_CONN_ID) -> Any:
    """A DB-API connection to the fitness database through ``PostgresHook`` (the caller closes it).

    A server that cannot be reached raises :class:`DatabaseUnavailableError` naming the Airflow connection
    and the driver's error class, never the password or the DSN.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    try:
        return hook.get_conn()
    except Exception as error:
        if type(error).__name__ != "OperationalError":  # psycopg's and psycopg2's (no driver imported here)
            raise
        raise DatabaseUnavailableError(_unreachable_message(hook, conn_id, error)) from None


def database_of(conn_id: str) -> str:
    """``host:port/database`` of Airflow connection ``conn_id``: which database it reaches (no secrets)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    info = PostgresHook(postgres_conn_id=conn_id).get_connection(conn_id)
    return f"{info.host}:{info.port}/{info.schema}"


def _unreachable_message(hook: Any, conn_id: str, error: BaseException) -> str:
    """What went wrong and what to do: host, port and database, the driver's error class and libpq's reason
    (its last line, the password masked should it appear), never the DSN."""
    where, password = "", None
    try:
        conn = hook.get_connection(conn_id)
        password = conn.password
        where = f" at {conn.host or 'localhost'}:{conn.port or 5432}, database {conn.schema or '(default)'!r},"
    except Exception:  # the message must not fail on a connection that cannot be read
        pass
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else ""
    if password:
        reason = reason.replace(password, "***")
    cause = f"{type(error).__module__.split('.')[0]}.{type(error).__name__}" + (f": {reason}" if reason else "")
    return (f"PostgreSQL (connection {conn_id!r}){where} could not be reached ({cause}): check the {conn_id} "
            "connection's host/port and that PostgreSQL is running; the task retries.")


def compile_sql(statement: sa.sql.ClauseElement) -> tuple[str, dict[str, Any]]:
    """Compile a Core statement to (sql, params) for a DB-API cursor."""
    compiled = statement.compile(dialect=DIALECT)
    return str(compiled), dict(compiled.params)


def execute(cursor: Any, statement: sa.sql.ClauseElement, params: Mapping[str, Any] | None = None) -> Any:
    """Execute a Core statement; ``params`` override its bound values. Returns the cursor."""
    sql, bound = compile_sql(statement)
    bound.update(params or {})
    cursor.execute(sql, bound)
    return cursor


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """One transaction on ``conn``: commit on success, roll back on any error. Yields a cursor."""
    cursor = conn.cursor()
    try:
        yield cursor
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        cursor.close()


def copy_rows(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table``; works on psycopg 3 and psycopg2. Returns the row count."""
    quoted = ", ".join(DIALECT.identifier_preparer.quote(c) for c in columns)
    sql = f"COPY {DIALECT.identifier_preparer.quote(table)} ({quoted}) FROM STDIN"
    count = 0
    if hasattr(cursor, "copy"):  # psycopg 3: rows are adapted in C
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_copy_text(value) for value in row))
        buffer.write("\n")
        count += 1
    buffer.seek(0)
    cursor.copy_expert(sql, buffer)
    return count


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """One value in COPY's text format (for psycopg2, which has no row writer)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)
