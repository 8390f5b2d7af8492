"""Where OAuth tokens live between tasks, workers and retries.

Strava rotates refresh tokens: once a refresh returns a new one, the old one is
dead. Airflow 3 tasks cannot write Connections, so the newest tokens are kept in
the fitness database (table ``oauth_token``).

A refresh happens under a session-level advisory lock of the fitness database,
held on the store's connection with no transaction open across the HTTP request:
concurrent tasks (threads, processes, workers) queue behind the lock and then
reuse the fresh access token, so the athlete is refreshed exactly once and never
presented with a dead refresh token.

The moment a token response is received, it is written to a spool file (mode
0600, fsync'ed, under ``$FITNESS_TOKEN_SPOOL_DIR`` or
``$AIRFLOW_HOME/fitness-token-spool``) before the short transaction that stores
it in ``oauth_token``; the file is removed once the row is committed. If that
transaction fails (PostgreSQL restarting, the connection dropped, the process
killed), the next ``get_token`` on the same machine replays the spooled tokens
into the database under the lock before it reads the row, so the new refresh
token is not lost. A replay is a compare-and-set: it applies only over the row it
was refreshed from, never over a newer one.

Tokens are encrypted at rest with Airflow's Fernet key (``[core] fernet_key``, the key Airflow encrypts
Connections with; :class:`TokenCipher`): a row holds ``fernet:<token>``, never a token in plain text. Rows
written before (plain text) are encrypted in place the next time the store reads them. Without a Fernet key
(Airflow then stores Connections in plain text too) tokens stay readable, with a warning.

The Connection's refresh token only seeds the row. When a user re-authorizes and
puts a new refresh token in the Connection, its fingerprint changes and the store
starts over from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import database_of, execute, transaction
from fitness_pipeline.errors import NeedsPersonError, RetriableError
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, oauth_token

log = logging.getLogger(__name__)


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
    def get_token(self, key: str, seed_refresh_token: str | None, refresh: Refresher,
                  min_valid_seconds: float) -> TokenSet:
        """A token set whose access token is valid for ``min_valid_seconds`` more, refreshing if needed.
        ``seed_refresh_token``: the Connection's (the default athlete's); None for an athlete whose tokens
        only the store holds (:class:`NotAuthorizedError` when it holds none)."""
        ...


def token_key(conn_type: str, conn_id: str, athlete_id: int = DEFAULT_ATHLETE_ID) -> str:
    """The store's key of one athlete's tokens of one connection (the default athlete's as before athletes)."""
    own = "" if athlete_id == DEFAULT_ATHLETE_ID else f":athlete-{athlete_id}"
    return f"{conn_type}:{conn_id}{own}"


def athlete_of_key(key: str) -> int:
    """The athlete whose tokens a :func:`token_key` names."""
    _, marker, athlete = key.rpartition(":athlete-")
    return int(athlete) if marker and athlete.isdigit() else DEFAULT_ATHLETE_ID


class NotAuthorizedError(NeedsPersonError):
    """An athlete's tokens were never stored (or were purged): the athlete has to authorize the app."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"No OAuth tokens are stored for {key!r} (athlete {athlete_of_key(key)}): the athlete has not authorized "
            "the app, or was purged. Run python -m fitness_pipeline.authorize <strava|fitbit> --athlete NAME, "
            "then trigger fitness_sync again.")


#: what an encrypted token value starts with in ``oauth_token``
SEALED = "fernet:"


class TokenCipher:
    """Encrypts token values at rest with Airflow's Fernet key: ``[core] fernet_key`` (env
    ``AIRFLOW__CORE__FERNET_KEY``), comma-separated keys for a rotation (the first encrypts, any decrypts).

    Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) because Airflow already encrypts Connections
    and Variables with it: one key to configure, back up and rotate, and no new dependency.
    """

    _warned: ClassVar[bool] = False

    def __init__(self, fernet: Any | None) -> None:
        self._fernet = fernet

    @classmethod
    def from_airflow(cls) -> TokenCipher:
        from airflow.models.crypto import get_fernet

        try:
            fernet = get_fernet()
        except Exception as error:  # AirflowException: a key that is not a Fernet key
            raise TokenKeyError(
                f"Airflow's Fernet key ([core] fernet_key) is not valid ({type(error).__name__}): OAuth tokens "
                "cannot be encrypted or read; configure a key made with Fernet.generate_key().") from None
        if not getattr(fernet, "is_encrypted", False):
            if not cls._warned:
                log.warning("No Fernet key is configured ([core] fernet_key): OAuth tokens are stored unencrypted")
                cls._warned = True
            return cls(None)
        return cls(fernet)

    def seal(self, value: str | None) -> str | None:
        """``value`` as it is stored: encrypted when a key is configured."""
        if value is None or self._fernet is None or value.startswith(SEALED):
            return value
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def unseal(self, value: str | None) -> str | None:
        """A stored value in plain text (values stored before encryption pass as they are)."""
        if value is None or not value.startswith(SEALED):
            return value
        if self._fernet is None:
            raise TokenKeyError("The OAuth tokens in oauth_token are encrypted but no Fernet key is configured: "
                                "set [core] fernet_key (AIRFLOW__CORE__FERNET_KEY) to the key they were stored with.")
        from cryptography.fernet import InvalidToken

        try:
            return str(self._fernet.decrypt(value[len(SEALED):].encode()).decode())
        except InvalidToken:
            raise TokenKeyError(
                "The OAuth tokens in oauth_token cannot be decrypted with the configured Fernet key: put the key "
                "they were stored with into [core] fernet_key (comma-separated after the new one, for a "
                "rotation), or authorize again.") from None

    def stored_as_wanted(self, value: str | None) -> bool:
        """Whether a stored value needs no rewrite: encrypted already, or no key to encrypt it with."""
        return value is None or value.startswith(SEALED) or self._fernet is None


def fingerprint(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


class MemoryTokenStore:
    """Tokens kept in this process only: for scripts and tests without a database.

    Rotated refresh tokens are lost when the process ends; use :class:`PostgresTokenStore` in Airflow.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, TokenSet]] = {}
        self._lock = threading.Lock()

    def get_token(self, key: str, seed_refresh_token: str | None, refresh: Refresher,
                  min_valid_seconds: float) -> TokenSet:
        with self._lock:
            stored = self._tokens.get(key)
            if seed_refresh_token is None:
                if stored is None:
                    raise NotAuthorizedError(key)
                seed = stored[0]
            else:
                seed = fingerprint(seed_refresh_token)
            if stored is None or stored[0] != seed:
                stored = (seed, TokenSet(None, str(seed_refresh_token), None))
            if not stored[1].valid_for(min_valid_seconds):
                stored = (seed, refresh(stored[1].refresh_token))
            self._tokens[key] = stored
            return stored[1]


def spool_directory() -> Path:
    """Where token responses wait until the database has them: ``$FITNESS_TOKEN_SPOOL_DIR``, else
    ``$AIRFLOW_HOME/fitness-token-spool`` (``~/airflow`` when ``AIRFLOW_HOME`` is not set)."""
    configured = os.environ.get("FITNESS_TOKEN_SPOOL_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "fitness-token-spool"


class TokenSpool:
    """Token responses kept on the local disk until they are committed in ``oauth_token``.

    One file per (database, token key), replaced atomically and fsync'ed (file and directory), mode
    0600 in a 0700 directory. Its contents are never logged.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory

    @property
    def directory(self) -> Path:
        return self._directory or spool_directory()

    def path(self, database: str, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(f'{database}|{key}'.encode()).hexdigest()[:32]}.json"

    def write(self, database: str, entry: dict[str, Any]) -> Path:
        directory = self.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(database, entry["key"])
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, json.dumps({**entry, "database": database}).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        _fsync_directory(directory)
        return path

    def read(self, database: str, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self.path(database, key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a torn file cannot be: writes are atomic; say so without contents
            log.warning("Unreadable token spool file %s: left in place for a person to look at",
                        self.path(database, key))
            return None
        return entry if isinstance(entry, dict) else None

    def pending(self, database: str, key: str) -> bool:
        return self.path(database, key).exists()

    def remove(self, database: str, key: str, entry: dict[str, Any]) -> None:
        """Remove the spool file if it still holds ``entry`` (a newer response is kept)."""
        if self.read(database, key) == {**entry, "database": database}:
            with suppress(FileNotFoundError):
                self.path(database, key).unlink()
                _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def advisory_lock_id(key: str) -> int:
    """The 64-bit advisory lock that serializes refreshes of ``key`` across processes and workers."""
    digest = hashlib.sha256(f"fitness_pipeline.oauth_token:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class TokenKeyError(NeedsPersonError):
    """The stored tokens cannot be decrypted with the configured key (a person must configure the right one)."""


class TokenStoreUnavailableError(RetriableError):
    """New tokens were received but could not be stored in the database yet (they are spooled)."""


class PostgresTokenStore:
    """Tokens in the fitness database's ``oauth_token`` table, refreshed under an advisory lock, each
    token response spooled to the local disk until its row is committed (see the module docstring)."""

    _tables_checked: ClassVar[set[str]] = set()

    def __init__(self, postgres_conn_id: str, spool: TokenSpool | None = None,
                 cipher: TokenCipher | None = None) -> None:
        self.postgres_conn_id = postgres_conn_id
        self.spool = spool or TokenSpool()
        self._cipher = cipher

    @property
    def cipher(self) -> TokenCipher:
        if self._cipher is None:
            self._cipher = TokenCipher.from_airflow()
        return self._cipher

    def _database(self) -> str:
        return database_of(self.postgres_conn_id)

    def _connect(self) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=self.postgres_conn_id)
        conn = hook.get_conn()
        database = self._database()
        if database not in self._tables_checked:
            # the hooks may be used outside fitness_sync, before its ensure_schema task ever ran
            from fitness_pipeline.ddl import ensure_schema

            ensure_schema(conn, tables=[oauth_token])
            self._tables_checked.add(database)
        return conn

    def get_token(self, key: str, seed_refresh_token: str | None, refresh: Refresher,
                  min_valid_seconds: float) -> TokenSet:
        seed = fingerprint(seed_refresh_token) if seed_refresh_token is not None else None
        database = self._database()
        with closing(self._connect()) as conn:
            if not self.spool.pending(database, key):  # the common case: no lock, one short transaction
                current, _, _ = self._read(conn, key, seed_refresh_token, seed)
                if current.valid_for(min_valid_seconds):
                    return current
            with transaction(conn) as cur:  # session-level: held after this commit, until unlocked
                cur.execute("SELECT pg_advisory_lock(%(lock)s)", {"lock": advisory_lock_id(key)})
            try:
                return self._refresh_locked(conn, database, key, seed_refresh_token, seed, refresh,
                                            min_valid_seconds)
            finally:
                with suppress(Exception), transaction(conn) as cur:  # a dead session released it already
                    cur.execute("SELECT pg_advisory_unlock(%(lock)s)", {"lock": advisory_lock_id(key)})

    def _refresh_locked(self, conn: Any, database: str, key: str, seed_refresh_token: str | None, seed: str | None,
                        refresh: Refresher, min_valid_seconds: float) -> TokenSet:
        """Under the advisory lock: replay a spooled response, reuse a valid token, or refresh once."""
        self._replay(conn, database, key)
        current, stored_refresh, stored_seed = self._read(conn, key, seed_refresh_token, seed)
        if current.valid_for(min_valid_seconds):
            return current
        fresh = refresh(current.refresh_token)  # no transaction is open during the HTTP request
        entry = {"key": key, "seed_fingerprint": seed or stored_seed, "replaces": fingerprint(stored_refresh),
                 "access_token": fresh.access_token, "refresh_token": fresh.refresh_token,
                 "expires_at": fresh.expires_at.isoformat() if fresh.expires_at else None}
        # the provider has killed the old refresh token: to disk before anything else can fail
        try:
            self.spool.write(database, entry)
        except OSError as error:  # never lose the response for want of a spool: the database may still take it
            log.warning("Could not spool the new OAuth tokens of %r in %s (%s): a failed database write now "
                        "would lose them", key, self.spool.directory, type(error).__name__)
        try:
            self._store(conn, entry)
        except Exception as first:
            try:  # the connection may be all that died: once more on a new one
                with closing(self._connect()) as retry:
                    self._store(retry, entry)  # a compare-and-set: harmless if the first write did commit
            except Exception as second:
                raise TokenStoreUnavailableError(
                    f"New OAuth tokens of {key!r} were received but could not be stored in the fitness "
                    f"database (connection {self.postgres_conn_id!r}): {type(second).__name__}. They are "
                    f"kept in {self.spool.directory} and stored by the next task on this machine; "
                    "do not delete that directory.") from first
        self.spool.remove(database, key, entry)
        return fresh

    def _read(self, conn: Any, key: str, seed_refresh_token: str | None,
              seed: str | None) -> tuple[TokenSet, str, str]:
        """The token set to use (the seed's, if the Connection was re-authorized), the row's refresh token and
        its seed fingerprint. A row stored in plain text (before encryption) is encrypted in place."""
        cipher = self.cipher
        with transaction(conn) as cur:
            if seed_refresh_token is not None:
                insert = pg.insert(oauth_token).values(
                    token_key=key, refresh_token=cipher.seal(seed_refresh_token), seed_fingerprint=seed,
                    athlete_id=athlete_of_key(key),
                ).on_conflict_do_nothing(index_elements=[oauth_token.c.token_key])
                execute(cur, insert)
            execute(cur, sa.select(oauth_token.c.access_token, oauth_token.c.refresh_token,
                                   oauth_token.c.expires_at, oauth_token.c.seed_fingerprint)
                    .where(oauth_token.c.token_key == key))
            row = cur.fetchone()
            if row is None:
                raise NotAuthorizedError(key)
            stored_access, stored_refresh, expires_at, stored_seed = row
            access, refresh_token = cipher.unseal(stored_access), str(cipher.unseal(stored_refresh))
            if not (cipher.stored_as_wanted(stored_access) and cipher.stored_as_wanted(stored_refresh)):
                execute(cur, sa.update(oauth_token).where(oauth_token.c.token_key == key,
                                                          oauth_token.c.refresh_token == stored_refresh)
                        .values(access_token=cipher.seal(access), refresh_token=cipher.seal(refresh_token)))
        if seed is not None and stored_seed != seed:  # the user put a new refresh token in the Connection
            return TokenSet(None, str(seed_refresh_token), None), refresh_token, seed
        return TokenSet(access, refresh_token, expires_at), refresh_token, stored_seed

    def _replay(self, conn: Any, database: str, key: str) -> None:
        entry = self.spool.read(database, key)
        if entry is None:
            return
        entry = {name: value for name, value in entry.items() if name != "database"}
        if self._store(conn, entry):
            log.warning("Stored the OAuth tokens of %r that a failed earlier refresh left in the token spool", key)
        else:
            log.warning("Dropped spooled OAuth tokens of %r: the database holds newer ones", key)
        self.spool.remove(database, key, entry)

    def _store(self, conn: Any, entry: dict[str, Any]) -> bool:
        """Write a token response over the row it was refreshed from (compare-and-set); False if the row
        has moved on to other tokens since (a stale spool entry)."""
        key, cipher = entry["key"], self.cipher
        with transaction(conn) as cur:
            execute(cur, sa.select(oauth_token.c.refresh_token).where(oauth_token.c.token_key == key)
                    .with_for_update())
            row = cur.fetchone()
            current = cipher.unseal(row[0]) if row is not None else None
            if row is not None and fingerprint(str(current)) != entry["replaces"] and current != entry["refresh_token"]:
                return False
            expires_at = dt.datetime.fromisoformat(entry["expires_at"]) if entry["expires_at"] else None
            values = {"access_token": cipher.seal(entry["access_token"]),
                      "refresh_token": cipher.seal(entry["refresh_token"]),
                      "expires_at": expires_at, "seed_fingerprint": entry["seed_fingerprint"]}
            execute(cur, pg.insert(oauth_token).values(token_key=key, athlete_id=athlete_of_key(key), **values)
                    .on_conflict_do_update(index_elements=[oauth_token.c.token_key],
                                           set_={**values, "updated_at": sa.func.now()}))
        return True

    def store_authorized(self, key: str, tokens: TokenSet) -> None:
        """Store the tokens an athlete's consent just gave (``python -m fitness_pipeline.authorize --athlete``),
        over whatever the store held for ``key``: the store alone holds them from now on."""
        cipher = self.cipher
        values = {"access_token": cipher.seal(tokens.access_token), "refresh_token": cipher.seal(tokens.refresh_token),
                  "expires_at": tokens.expires_at, "seed_fingerprint": fingerprint(tokens.refresh_token)}
        with closing(self._connect()) as conn, transaction(conn) as cur:
            execute(cur, pg.insert(oauth_token).values(token_key=key, athlete_id=athlete_of_key(key), **values)
                    .on_conflict_do_update(index_elements=[oauth_token.c.token_key],
                                           set_={**values, "updated_at": sa.func.now()}))
