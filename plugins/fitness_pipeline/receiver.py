"""The webhook receiver: a small ASGI service of its own that takes the providers' pushed events and appends
them to ``webhook_event``, nothing else (issue 12, part 1).

Not Airflow's API server, which users should not expose to the internet: this app runs on its own
(``uvicorn fitness_pipeline.receiver:app``) behind the deployer's HTTPS proxy, and only validates and
inserts, so it answers well within Strava's 2 s whatever the rest of the pipeline is doing.

- ``GET /strava``: Strava's subscription handshake. ``hub.challenge`` is echoed only when
  ``hub.verify_token`` equals ``$FITNESS_STRAVA_VERIFY_TOKEN`` (403 otherwise).
- ``POST /strava``: an event. The body must be at most ``$FITNESS_WEBHOOK_MAX_BYTES`` bytes (413), JSON (400)
  of Strava's shape (400), for ``$FITNESS_STRAVA_SUBSCRIPTION_ID`` (403). An event for an athlete nobody
  here authorized is answered 200 (Strava would retry anything else) and not stored. Stored once per
  event: a delivery Strava repeats has the same ``dedup_key`` (stored once while the first is pending).
- ``POST /google``: Google Health's subscriber endpoint. ``{"type": "verification"}`` answers 201 with the
  configured secret (``Authorization`` exactly ``$FITNESS_GOOGLE_ENDPOINT_SECRET``, which Google sends as
  given when the subscriber was created, e.g. ``Bearer <random>``; or ``Bearer $FITNESS_GOOGLE_ENDPOINT_SECRET``)
  and 401 without it. A notification must carry ``X-HEALTHAPI-SIGNATURE`` (or ``GOOGLE-HEALTH-API-SIGNATURE``,
  as Google's example spells it): base64 of an ECDSA P-256 / SHA-256 signature of the body that Google's
  public key (``$FITNESS_GOOGLE_PUBLIC_KEY``, PEM) verifies (401 otherwise). Its body is a JSON array of 1 to
  99 notifications ``{"data": {"healthUserId", "dataType", "operation": "UPSERT"|"DELETE", "intervals": [...],
  ...}}`` (400 otherwise); each is stored as one row (``account_id`` its ``healthUserId``), all in one
  transaction, once however often it is delivered.
- ``GET /health``: 200 while the fitness database can be reached, else 503 (a container's health check).

The database unreachable or slow (1 s to connect, 1 s per statement) is a 503: Strava retries a delivery up
to three times in all. Nothing of an event, a token or a secret is logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import queue
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline import athletes
from fitness_pipeline.db import FITNESS_DB_CONN_ID, execute, transaction
from fitness_pipeline.schema import webhook_event

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16_384
STRAVA_OBJECT_TYPES = frozenset({"activity", "athlete"})
STRAVA_ASPECT_TYPES = frozenset({"create", "update", "delete"})
MAX_CHALLENGE_LENGTH = 255


@dataclass(frozen=True)
class ReceiverSettings:
    """What the receiver checks against (from the environment: :meth:`from_environment`)."""

    strava_verify_token: str | None = None
    strava_subscription_id: int | None = None
    google_endpoint_secret: str | None = None
    google_public_key_pem: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BYTES
    db_conn_id: str = FITNESS_DB_CONN_ID

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ReceiverSettings:
        env = os.environ if environ is None else environ
        subscription = env.get("FITNESS_STRAVA_SUBSCRIPTION_ID", "").strip()
        return cls(strava_verify_token=env.get("FITNESS_STRAVA_VERIFY_TOKEN") or None,
                   strava_subscription_id=int(subscription) if subscription else None,
                   google_endpoint_secret=env.get("FITNESS_GOOGLE_ENDPOINT_SECRET") or None,
                   google_public_key_pem=env.get("FITNESS_GOOGLE_PUBLIC_KEY") or None,
                   max_body_bytes=int(env.get("FITNESS_WEBHOOK_MAX_BYTES") or DEFAULT_MAX_BYTES),
                   db_conn_id=env.get("FITNESS_RECEIVER_DB_CONN_ID") or FITNESS_DB_CONN_ID)


class Refused(Exception):
    """A request the receiver refuses: ``status`` and a short reason (never a value of the request)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; nothing configured matches nothing."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())


def strava_event(body: bytes, settings: ReceiverSettings) -> dict[str, Any]:
    """The event in ``body`` if it is one of Strava's for our subscription; :class:`Refused` otherwise."""
    event = parse_json(body)
    if not isinstance(event, dict):
        raise Refused(400, "the body is not a JSON object")

    def whole(name: str) -> int:
        value = event.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Refused(400, f"{name} must be a whole number")
        return value

    if event.get("object_type") not in STRAVA_OBJECT_TYPES or event.get("aspect_type") not in STRAVA_ASPECT_TYPES:
        raise Refused(400, "object_type or aspect_type is not one of Strava's")
    for name in ("object_id", "owner_id", "subscription_id", "event_time"):
        whole(name)
    if not isinstance(event.get("updates", {}), dict):
        raise Refused(400, "updates must be an object")
    if settings.strava_subscription_id is None or event["subscription_id"] != settings.strava_subscription_id:
        raise Refused(403, "not our subscription")
    return event


def parse_json(body: bytes) -> Any:
    """The JSON value of a UTF-8 ``body``; :class:`Refused` 400 for anything else (nesting too deep included)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refused(400, "the body is not JSON (UTF-8)") from None


#: the fields of a Strava event: only these are stored (a sender may add anything else to a body)
STRAVA_FIELDS = ("object_type", "object_id", "aspect_type", "updates", "owner_id", "subscription_id", "event_time")


def strava_payload(event: Mapping[str, Any]) -> str:
    """What is stored of a Strava event: its own fields, nothing a sender added."""
    return json.dumps({name: event.get(name, {} if name == "updates" else None) for name in STRAVA_FIELDS})


def strava_dedup_key(event: Mapping[str, Any]) -> str:
    """What makes a Strava event itself: a repeated delivery of it has the same key."""
    identity = [event[k] for k in ("subscription_id", "object_type", "object_id", "aspect_type", "owner_id",
                                   "event_time")] + [event.get("updates", {})]
    return "strava:" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


GOOGLE_SIGNATURE_HEADERS = ("x-healthapi-signature", "google-health-api-signature")
GOOGLE_OPERATIONS = frozenset({"UPSERT", "DELETE"})
MAX_GOOGLE_NOTIFICATIONS = 99


def google_notifications(message: Any) -> list[dict[str, Any]]:
    """The notifications of a (signed) Google body: a JSON array of 1..99 objects, each ``{"data": {...}}``
    with ``healthUserId`` and ``dataType`` (non-empty strings), ``operation`` (UPSERT or DELETE) and
    ``intervals`` (a list); :class:`Refused` 400 otherwise."""
    if not isinstance(message, list) or not 1 <= len(message) <= MAX_GOOGLE_NOTIFICATIONS:
        raise Refused(400, f"a notification body is a JSON array of 1 to {MAX_GOOGLE_NOTIFICATIONS} notifications")
    for notification in message:
        data = notification.get("data") if isinstance(notification, dict) else None
        if not isinstance(data, dict):
            raise Refused(400, "each notification must be an object with an object 'data'")
        for name in ("healthUserId", "dataType"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise Refused(400, f"data.{name} must be a non-empty string")
        if data.get("operation") not in GOOGLE_OPERATIONS:
            raise Refused(400, "data.operation must be UPSERT or DELETE")
        if not isinstance(data.get("intervals"), list):
            raise Refused(400, "data.intervals must be a list")
    return message


def google_dedup_key(notification: Any) -> str:
    """What makes a Google notification itself: its canonical JSON (sorted keys), so that the same notification
    delivered again, alone or in another body, has the same key."""
    canonical = json.dumps(notification, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "google:" + hashlib.sha256(canonical.encode()).hexdigest()


def google_signature(headers: Mapping[str, str]) -> str | None:
    """The signature header, under either of its documented names."""
    return next((headers[name] for name in GOOGLE_SIGNATURE_HEADERS if headers.get(name)), None)


def google_authorized(authorization: str | None, secret: str | None) -> bool:
    """Whether a verification request carries the endpoint secret: the exact header value Google was given, or
    (a secret configured without its scheme) ``Bearer <secret>``."""
    given = (authorization or "").strip()
    return same_secret(given, secret) or (given[:7].lower() == "bearer " and same_secret(given[7:].strip(), secret))


def google_signature_valid(body: bytes, signature: str | None, public_key_pem: str | None) -> bool:
    """Whether ``signature`` (base64 DER, ECDSA P-256 over SHA-256) is the body's, by Google's public key."""
    if not signature or not public_key_pem:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            return False
        key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return False
    return True


def create_app(settings: ReceiverSettings | None = None, connect: Callable[[], Any] | None = None) -> Any:
    """The receiver's Starlette app. ``connect``: a DB-API connection to the fitness database (default: the
    Airflow connection ``settings.db_conn_id`` with 1 s timeouts)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    settings = settings or ReceiverSettings.from_environment()
    pool = ConnectionPool(connect or (lambda: _connect(settings.db_conn_id)))

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > settings.max_body_bytes):
            raise Refused(413, "the body is too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise Refused(413, "the body is too large")
        return bytes(body)

    def store(provider: str, rows: list[tuple[str, str, str | None]], owner_id: int | None = None) -> int:
        """Insert each ``(dedup_key, payload, account_id)`` once, all in one transaction; how many were new (0
        too when ``owner_id`` is an athlete not ours: nothing is stored then)."""
        try:
            with pool.transaction() as cur:
                if owner_id is not None and athletes.of_strava_athlete(cur, owner_id) is None:
                    log.info("receiver: a %s event for an athlete nobody here authorized was dropped", provider)
                    return 0
                added = 0
                for dedup_key, payload, account_id in rows:
                    account = str(owner_id) if owner_id is not None else account_id
                    execute(cur, pg.insert(webhook_event).values(provider=provider, dedup_key=dedup_key,
                                                                 payload=payload, account_id=account)
                            .on_conflict_do_nothing(index_elements=[webhook_event.c.dedup_key],
                                                    index_where=webhook_event.c.processed_at.is_(None)))
                    added += max(cur.rowcount, 0)
                return added
        except Exception as error:  # the provider retries a 503
            log.warning("receiver: the fitness database cannot take events now (%s)", type(error).__name__)
            raise Refused(503, "the events table cannot be written now; send it again") from None

    def refused(error: Refused) -> JSONResponse:
        return JSONResponse({"error": error.reason}, status_code=error.status)

    def strava_handshake(request: Request) -> JSONResponse:
        params = request.query_params
        challenge = params.get("hub.challenge")
        if (params.get("hub.mode") != "subscribe" or not challenge or len(challenge) > MAX_CHALLENGE_LENGTH
                or not same_secret(params.get("hub.verify_token"), settings.strava_verify_token)):
            return refused(Refused(403, "not a subscription handshake with our verify token"))
        return JSONResponse({"hub.challenge": challenge})

    async def strava_post(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await body_of(request)
            event = strava_event(body, settings)
            await run_in_threadpool(store, "strava", [(strava_dedup_key(event), strava_payload(event), None)],
                                    event["owner_id"])
        except Refused as error:
            return refused(error)
        return JSONResponse({})  # the same answer whether stored, a repeat or not ours: it tells a sender nothing

    async def google_post(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await body_of(request)
            message = parse_json(body)
            if isinstance(message, dict) and message.get("type") == "verification":
                if not google_authorized(request.headers.get("authorization"), settings.google_endpoint_secret):
                    raise Refused(401, "not our endpoint secret")
                return JSONResponse({"verified": True}, status_code=201)
            if not google_signature_valid(body, google_signature(request.headers), settings.google_public_key_pem):
                raise Refused(401, "the signature is missing or not Google's")
            rows = [(google_dedup_key(n), json.dumps(n, ensure_ascii=False), n["data"]["healthUserId"])
                    for n in google_notifications(message)]
            await run_in_threadpool(store, "google", rows)
        except Refused as error:
            return refused(error)
        return JSONResponse({})  # 200 whether new or a repeat: Google retries anything but a success

    def reachable() -> None:
        with pool.transaction() as cur:
            cur.execute("SELECT 1")

    async def health(request: Request) -> JSONResponse:
        """For a container's health check or a load balancer: 200 while the events table can be reached."""
        from starlette.concurrency import run_in_threadpool

        try:
            await run_in_threadpool(reachable)
        except Exception as error:
            return JSONResponse({"status": f"the fitness database cannot be reached ({type(error).__name__})"},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/strava", strava_handshake, methods=["GET"]),
                             Route("/strava", strava_post, methods=["POST"]),
                             Route("/google", google_post, methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


class ConnectionPool:
    """Connections to the fitness database kept open between requests: opening one (a TCP and TLS handshake, a
    backend process) costs many times the insert it serves. At most ``size`` stay idle. A connection that failed
    is closed, not kept; a kept one that fails on its next use (the server restarted meanwhile) is replaced by a
    new one once, so a restart costs no event."""

    def __init__(self, connect: Callable[[], Any], size: int = 16) -> None:
        self._connect = connect
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=size)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in a transaction on a pooled connection (committed on success, rolled back on error)."""
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    raise queue.Empty  # the retry takes a new connection: the others idle may be as stale
                conn, reused = self._idle.get_nowait(), True
            except queue.Empty:
                conn, reused = self._connect(), False
            started = False
            try:
                with transaction(conn) as cur:
                    cur.execute("SET LOCAL statement_timeout = '1s'")
                    started = True
                    yield cur
            except BaseException:
                with suppress(Exception):
                    conn.close()
                if reused and not started and attempt == 1:
                    self._discard_idle()  # the server dropped them all, most likely (a restart)
                    continue  # once more, with a new connection
                raise
            try:
                self._idle.put_nowait(conn)
            except queue.Full:
                conn.close()
            return

    def _discard_idle(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with suppress(Exception):
                conn.close()


def _connect(conn_id: str) -> Any:
    """A connection to the fitness database that gives up after 1 s (the provider's 2 s must hold)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    connection = hook.connection  # the hook's own copy: its get_conn() passes the extras on to the driver
    connection.extra = json.dumps({**(connection.extra_dejson or {}), "connect_timeout": 1})
    return hook.get_conn()
