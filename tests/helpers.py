"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


def stored_tokens(conn: Any) -> list[tuple[str, str | None, str]]:
    """``(token_key, access_token, refresh_token)`` of every ``oauth_token`` row, decrypted (the table holds them
    encrypted with Airflow's Fernet key)."""
    from fitness_pipeline.tokens import TokenCipher

    cipher = TokenCipher.from_airflow()
    rows = query(conn, "SELECT token_key, access_token, refresh_token FROM oauth_token ORDER BY 1")
    return [(key, cipher.unseal(access), str(cipher.unseal(refresh))) for key, access, refresh in rows]


@contextlib.contextmanager
def serve_app(app: Any, timeout: float = 10.0) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
