"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from fitness_devtools.webhooks import serve_app  # noqa: F401 (the tests' name for it)


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


def stored_tokens(conn: Any) -> list[tuple[str, str | None, str]]:
    """``(token_key, access_token, refresh_token)`` of every ``oauth_token`` row, decrypted (the table holds them
    encrypted with Airflow's Fernet key)."""
    from fitness_pipeline.tokens import TokenCipher

    cipher = TokenCipher.from_airflow()
    rows = query(conn, "SELECT token_key, access_token, refresh_token FROM oauth_token ORDER BY 1")
    return [(key, cipher.unseal(access), str(cipher.unseal(refresh))) for key, access, refresh in rows]
