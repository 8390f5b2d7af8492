"""Where OAuth tokens live between tasks, workers and retries.

Strava rotates refresh tokens: once a refresh returns a new one, the old one is
dead. Airflow 3 tasks cannot write Connections, so the newest tokens are kept in
the fitness database (table ``oauth_token``). A refresh happens while the row is
locked (``SELECT ... FOR UPDATE``): concurrent tasks queue behind the lock and
then reuse the fresh access token, so the athlete is refreshed exactly once and
never presented with a dead refresh token.

The Connection's refresh token only seeds the row. When a user re-authorizes and
puts a new refresh token in the Connection, its fingerprint changes and the store
starts over from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import execute, transaction
from fitness_pipeline.schema import oauth_token


def utcnow() -> dt.datetime:
    """The clock token lifetimes are judged by (one place, so benchmarks can simulate hours)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class TokenSet:
    access_token: str | None
    refresh_token: str
    expires_at: dt.datetime | None  # aware UTC

    def valid_for(self, seconds: float, now: dt.datetime | None = None) -> bool:
        if not math.isfinite(seconds):
            return False
        now = now or utcnow()
        return bool(self.access_token and self.expires_at and self.expires_at - now > dt.timedelta(seconds=seconds))

    def __repr__(self) -> str:  # tokens never reach a log through repr()
        return f"TokenSet(expires_at={self.expires_at!r})"


#: Given the current refresh token, ask the provider for new tokens.
Refresher = Callable[[str], TokenSet]


class TokenStore(Protocol):
    def get_token(self, key: str, seed_refresh_token: str, refresh: Refresher, min_valid_seconds: float) -> TokenSet:
        """A token set whose access token is valid for ``min_valid_seconds`` more, refreshing if needed."""
        ...


def fingerprint(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


class MemoryTokenStore:
    """Tokens kept in this process only: for scripts and tests without a database.

    Rotated refresh tokens are lost when the process ends; use :class:`PostgresTokenStore` in Airflow.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, TokenSet]] = {}
        self._lock = threading.Lock()

    def get_token(self, key: str, seed_refresh_token: str, refresh: Refresher, min_valid_seconds: float) -> TokenSet:
        with self._lock:
            seed = fingerprint(seed_refresh_token)
            stored = self._tokens.get(key)
            if stored is None or stored[0] != seed:
                stored = (seed, TokenSet(None, seed_refresh_token, None))
            if not stored[1].valid_for(min_valid_seconds):
                stored = (seed, refresh(stored[1].refresh_token))
            self._tokens[key] = stored
            return stored[1]


class PostgresTokenStore:
    """Tokens in the fitness database's ``oauth_token`` table, refreshed under a row lock."""

    _tables_checked: ClassVar[set[str]] = set()

    def __init__(self, postgres_conn_id: str) -> None:
        self.postgres_conn_id = postgres_conn_id

    def _connect(self) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=self.postgres_conn_id)
        conn = hook.get_conn()
        info = hook.get_connection(self.postgres_conn_id)
        database = f"{info.host}:{info.port}/{info.schema}"
        if database not in self._tables_checked:
            # the hooks may be used outside fitness_sync, before its ensure_schema task ever ran
            from fitness_pipeline.ddl import ensure_schema

            ensure_schema(conn, tables=[oauth_token])
            self._tables_checked.add(database)
        return conn

    def get_token(self, key: str, seed_refresh_token: str, refresh: Refresher, min_valid_seconds: float) -> TokenSet:
        seed = fingerprint(seed_refresh_token)
        with closing(self._connect()) as conn, transaction(conn) as cur:
            insert = pg.insert(oauth_token).values(
                token_key=key, refresh_token=seed_refresh_token, seed_fingerprint=seed
            ).on_conflict_do_nothing(index_elements=[oauth_token.c.token_key])
            execute(cur, insert)
            execute(cur, sa.select(oauth_token.c.access_token, oauth_token.c.refresh_token,
                                   oauth_token.c.expires_at, oauth_token.c.seed_fingerprint)
                    .where(oauth_token.c.token_key == key).with_for_update())
            access, refresh_token, expires_at, stored_seed = cur.fetchone()
            current = TokenSet(access, refresh_token, expires_at)
            if stored_seed != seed:  # the user put a new refresh token in the Connection
                current = TokenSet(None, seed_refresh_token, None)
            if current.valid_for(min_valid_seconds) and stored_seed == seed:
                return current
            fresh = refresh(current.refresh_token)
            # the provider may have killed the old refresh token already: store before anything else
            execute(cur, sa.update(oauth_token).where(oauth_token.c.token_key == key).values(
                access_token=fresh.access_token, refresh_token=fresh.refresh_token,
                expires_at=fresh.expires_at, seed_fingerprint=seed, updated_at=sa.func.now()))
            return fresh
