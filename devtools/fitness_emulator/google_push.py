"""Google Health API webhooks: the subscribers API and signed notifications of data changes.

- ``POST /v4/projects/{project}/subscribers?subscriberId=ID``, ``GET /v4/projects/{project}/subscribers``,
  ``DELETE /v4/projects/{project}/subscribers/{id}`` (any non-empty ``Authorization: Bearer ...``: the real
  API wants a Google Cloud token, which the emulator cannot check). Create verifies the endpoint as Google
  does, with two real POSTs of ``{"type": "verification"}`` (with ``Authorization: <the secret>``: 201
  expected; without it: 401 or 403), sent from a worker thread so that the event loop keeps serving (the
  endpoint may call the emulator meanwhile); a failure is 400 ``FAILED_PRECONDITION`` and nothing is
  created. Create and delete answer a finished long-running ``Operation`` (as the published clients type
  them); the secret is never echoed (``endpointAuthorization: {"secretSet": true}``). Unlike Google, plain
  ``http://`` endpoints are accepted (loopback tests).
- While a subscriber has an ``AUTOMATIC`` config for a data type, every change of a user's data of that type
  made through the control routes is notified: one POST per change and subscriber whose body is a JSON array
  of (at most 99) ``{"data": {"version": "1", "clientProvidedSubscriptionName", "healthUserId",
  "operation": "UPSERT"|"DELETE", "dataType", "intervals": [{"physicalTimeInterval", "civilDateTimeInterval"}]}}``,
  signed with the emulator's ECDSA P-256 key (``X-HEALTHAPI-SIGNATURE``: base64 of the DER signature of the
  body's SHA-256), with ``Authorization: <the secret>``. Delivered by a background thread, retried on
  anything but 2xx (``max_attempts`` in all).
- Controls under ``/_emulator/google``: ``GET /public-key`` (the PEM public key the receiver is configured
  with), ``PUT /push`` (delivery faults: ``delay_seconds``, ``duplicate_rate``, ``lost_rate``, ``seed``,
  ``max_attempts``, ``retry_seconds``), ``GET /push[?wait=SECONDS]`` (settings, pending count and the last
  deliveries, after waiting until none is pending) and ``DELETE /push`` (defaults back, the log emptied).

The key pair is derived from the emulator's seed: every emulator of a seed signs with the same key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Request, Response

from fitness_emulator.core import ApiError, Stats, json_bytes, json_response, read_json_object
from fitness_emulator.google_data import DATA_TYPES, Point, civil_json, iso_z

SUBSCRIBER_ID_RE = re.compile(r"[a-z][a-z0-9-]{2,34}[a-z0-9]")
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
POLICIES = ("AUTOMATIC", "MANUAL")
SIGNATURE_HEADER = "X-HEALTHAPI-SIGNATURE"
MAX_NOTIFICATIONS = 99  # per request body
LOG_SIZE = 500
VERIFY_TIMEOUT = 5.0
DELIVERY_TIMEOUT = 5.0
#: the @type of a finished operation's response (the published discovery document's package; unverified)
SUBSCRIBER_TYPE = "type.googleapis.com/google.devicesandservices.health.v4.Subscriber"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def signing_key(seed: int) -> ec.EllipticCurvePrivateKey:
    """The emulator's P-256 notification key, a pure function of the seed."""
    digest = hashlib.sha256(f"{seed}:google:push-key".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % (P256_ORDER - 1) + 1, ec.SECP256R1())


def push_error(code: int, message: str, status: str, reason: str | None = None) -> ApiError:
    """Google's error shape (as ``google.google_error``; kept here to avoid an import cycle)."""
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                "domain": "health.googleapis.com"}] if reason else []
    return ApiError(code, {"error": {"code": code, "message": message, "status": status, "details": details}})


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Subscriber:
    project: str
    id: str
    endpoint_uri: str
    configs: list[dict[str, Any]]
    secret: str
    created: str = field(default_factory=_now_iso)

    @property
    def name(self) -> str:
        return f"projects/{self.project}/subscribers/{self.id}"

    def wants(self, data_type: str) -> bool:
        return any(c["subscriptionCreatePolicy"] == "AUTOMATIC" and data_type in c["dataTypes"]
                   for c in self.configs)

    def resource(self) -> dict[str, Any]:
        return {"name": self.name, "endpointUri": self.endpoint_uri, "createTime": self.created,
                "updateTime": self.created, "subscriberConfigs": [dict(c) for c in self.configs],
                "endpointAuthorization": {"secretSet": True}}


@dataclass
class PushSettings:
    """Delivery faults and retries (``PUT /_emulator/google/push``)."""

    delay_seconds: float = 0.0  # before the first attempt of each delivery
    duplicate_rate: float = 0.0  # chance that a body is delivered twice
    lost_rate: float = 0.0  # chance that a body is never sent
    seed: int | None = None  # of the draws for duplicate_rate and lost_rate (None: the emulator's seed)
    max_attempts: int = 4  # a delivery answered other than 2xx (or not at all) is tried again
    retry_seconds: float = 0.2  # the first wait between attempts; doubled each time

    def checked(self, changes: dict[str, Any]) -> PushSettings:
        """A copy with ``changes``; ValueError naming the first bad one."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown push settings: {sorted(unknown)}; known: {sorted(known)}")
        values = asdict(self)
        for name, value in changes.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if name == "seed":
                if value is not None and (not number or not isinstance(value, int)):
                    raise ValueError("seed must be an integer or null")
            elif name.endswith("_rate"):
                if not number or not 0 <= value <= 1:
                    raise ValueError(f"{name} must be a number in 0..1")
            elif name == "max_attempts":
                if not number or not isinstance(value, int) or not 1 <= value <= 20:
                    raise ValueError("max_attempts must be an integer in 1..20")
            elif not number or not 0 <= value <= 600:
                raise ValueError(f"{name} must be a number of seconds in 0..600")
            values[name] = value
        return PushSettings(**values)


def interval_json(point: Point) -> dict[str, Any]:
    """The interval of a notification about ``point``: whole minutes around its instant (a nutrition log:
    around its start and end), physical (UTC) and civil (the point's own UTC offsets)."""
    last, last_offset = (point.end, point.end_offset) if point.data_type == "nutrition-log" and point.end else (
        point.time, point.offset)
    start = point.time - point.time % 60
    end = last - last % 60 + 60
    return {
        "physicalTimeInterval": {"startTime": iso_z(start), "endTime": iso_z(end)},
        "civilDateTimeInterval": {"startDateTime": civil_json(start, point.offset),
                                  "endDateTime": civil_json(end, last_offset)},
    }


def notification_json(subscriber: Subscriber, user_id: str, operation: str, point: Point) -> dict[str, Any]:
    return {"data": {"version": "1", "clientProvidedSubscriptionName": subscriber.id, "healthUserId": user_id,
                     "operation": operation, "dataType": point.data_type, "intervals": [interval_json(point)]}}


class GooglePush:
    """The subscribers of every project and the notification deliveries (thread-safe)."""

    def __init__(self, seed: int, stats: Stats, session_factory: Callable[[], requests.Session] | None = None) -> None:
        self.seed = seed
        self.key = signing_key(seed)
        self.public_key_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.stats = stats
        self._session_factory = session_factory or _session
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._subscribers: dict[tuple[str, str], Subscriber] = {}
        self.settings = PushSettings()
        self._rng = random.Random(f"{seed}:google:push")
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._deliveries = 0
        self._pending = 0
        stats.declare("google_push_deliveries", "google_push_delivered", "google_push_failed", "google_push_lost",
                      "google_push_duplicated")

    # ---- signing

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    # ---- subscribers

    def subscriber(self, project: str, subscriber_id: str) -> Subscriber | None:
        with self._lock:
            return self._subscribers.get((project, subscriber_id))

    def add(self, subscriber: Subscriber) -> None:
        with self._lock:
            key = (subscriber.project, subscriber.id)
            if key in self._subscribers:
                raise push_error(409, f"Subscriber {subscriber.name} already exists.", "ALREADY_EXISTS")
            self._subscribers[key] = subscriber

    def listed(self, project: str) -> list[Subscriber]:
        with self._lock:
            return [s for (p, _), s in self._subscribers.items() if p == project]

    def remove(self, project: str, subscriber_id: str) -> bool:
        with self._lock:
            return self._subscribers.pop((project, subscriber_id), None) is not None

    def verify(self, endpoint_uri: str, secret: str) -> str | None:
        """Google's verification of an endpoint (blocking): None when it passes, else what failed."""
        body = json_bytes({"type": "verification"})
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self.sign(body)}
        with self._session_factory() as session:
            for authorized in (True, False):
                sent = {**headers, "Authorization": secret} if authorized else headers
                try:
                    answer = session.post(endpoint_uri, data=body, headers=sent, timeout=VERIFY_TIMEOUT)
                except requests.RequestException as error:
                    return f"the endpoint could not be reached ({type(error).__name__})"
                expected = (201,) if authorized else (401, 403)
                if answer.status_code not in expected:
                    which = "with the endpoint's Authorization secret" if authorized else "without Authorization"
                    return (f"the verification request {which} was answered {answer.status_code}, expected "
                            f"{' or '.join(map(str, expected))}")
        return None

    # ---- notifications

    def notify(self, user_id: str, operation: str, points: Iterable[Point]) -> int:
        """Notify every subscriber that wants them of these changes of ``user_id``'s data; the number of
        request bodies scheduled (lost ones included)."""
        points = list(points)
        with self._lock:
            subscribers = list(self._subscribers.values())
        scheduled = 0
        for subscriber in subscribers:
            objects = [notification_json(subscriber, user_id, operation, p) for p in points
                       if subscriber.wants(p.data_type)]
            for first in range(0, len(objects), MAX_NOTIFICATIONS):
                self._schedule(subscriber, objects[first:first + MAX_NOTIFICATIONS])
                scheduled += 1
        return scheduled

    def _schedule(self, subscriber: Subscriber, objects: list[dict[str, Any]]) -> None:
        body = json_bytes(objects)
        signature = self.sign(body)
        summary = [{k: o["data"][k] for k in ("healthUserId", "dataType", "operation")} for o in objects]
        with self._lock:
            settings = self.settings
            lost = self._rng.random() < settings.lost_rate
            copies = 0 if lost else (2 if self._rng.random() < settings.duplicate_rate else 1)
            entries = []
            for copy in range(max(copies, 1)):
                self._deliveries += 1
                entry = {"id": self._deliveries, "subscriber": subscriber.name, "endpointUri": subscriber.endpoint_uri,
                         "notifications": summary, "duplicate": copy > 0, "status": "lost" if lost else "pending",
                         "attempts": [], "queuedAt": _now_iso(), "finishedAt": _now_iso() if lost else None}
                self._log.append(entry)
                entries.append(entry)
            self._pending += copies
        self.stats.incr("google_push_deliveries", len(entries))
        if lost:
            self.stats.incr("google_push_lost")
            return
        if copies == 2:
            self.stats.incr("google_push_duplicated")
        headers = {"Content-Type": "application/json", "Authorization": subscriber.secret,
                   SIGNATURE_HEADER: signature}
        for entry in entries:
            threading.Thread(target=self._deliver, args=(entry, subscriber.endpoint_uri, body, headers, settings),
                             name=f"google-push-{entry['id']}", daemon=True).start()

    def _deliver(self, entry: dict[str, Any], url: str, body: bytes, headers: dict[str, str],
                 settings: PushSettings) -> None:
        status = "failed"
        try:
            if settings.delay_seconds:
                time.sleep(settings.delay_seconds)
            with self._session_factory() as session:
                for attempt in range(settings.max_attempts):
                    if attempt:
                        time.sleep(settings.retry_seconds * 2 ** (attempt - 1))
                    try:
                        answer: int | str = session.post(url, data=body, headers=headers,
                                                         timeout=DELIVERY_TIMEOUT).status_code
                    except requests.RequestException as error:
                        answer = type(error).__name__
                    with self._lock:
                        entry["attempts"].append(answer)
                    if isinstance(answer, int) and 200 <= answer < 300:
                        status = "delivered"
                        break
        finally:
            self.stats.incr(f"google_push_{status}")
            with self._lock:
                entry["status"], entry["finishedAt"] = status, _now_iso()
                self._pending -= 1
                self._idle.notify_all()

    # ---- controls

    def configure(self, changes: dict[str, Any]) -> None:
        settings = self.settings.checked(changes)
        with self._lock:
            self.settings = settings
            if "seed" in changes:
                self._rng = random.Random(f"{self.seed if settings.seed is None else settings.seed}:google:push")

    def reset(self) -> None:
        with self._lock:
            self.settings = PushSettings()
            self._rng = random.Random(f"{self.seed}:google:push")
            self._log.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is pending (at most ``timeout`` s); whether none is."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def view(self) -> dict[str, Any]:
        with self._lock:
            return {"settings": asdict(self.settings), "pending": self._pending,
                    "deliveries": [dict(e, attempts=list(e["attempts"])) for e in self._log]}


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between the emulator and a loopback endpoint
    return session


# --------------------------------------------------------------------------- routes


def _push(request: Request) -> GooglePush:
    push: GooglePush = request.app.state.emulator.google.push
    return push


def _cloud_token(request: Request) -> None:
    """Some ``Authorization: Bearer <token>`` (the emulator cannot check a Google Cloud token); 401 otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        error = push_error(401, "Request is missing required authentication credential. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.",
                           "UNAUTHENTICATED", "CREDENTIALS_MISSING")
        error.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        raise error


def _project(project: str) -> str:
    if not PROJECT_RE.fullmatch(project):
        raise push_error(400, f"Invalid project {project!r}.", "INVALID_ARGUMENT")
    return project


def _invalid(message: str) -> ApiError:
    return push_error(400, message, "INVALID_ARGUMENT")


def parse_create(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """(endpointUri, subscriberConfigs, secret) of a CreateSubscriberPayload; 400 INVALID_ARGUMENT otherwise."""
    unknown = set(body) - {"endpointUri", "subscriberConfigs", "endpointAuthorization"}
    if unknown:
        raise _invalid(f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}.")
    uri = body.get("endpointUri")
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise _invalid("endpointUri is required and must be an HTTPS URL.")
    configs = body.get("subscriberConfigs", [])
    if not isinstance(configs, list):
        raise _invalid("subscriberConfigs must be a list.")
    checked = []
    for index, config in enumerate(configs):
        types = config.get("dataTypes") if isinstance(config, dict) else None
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise _invalid(f"subscriberConfigs[{index}].dataTypes must be a non-empty list of data types.")
        for data_type in types:
            if data_type not in DATA_TYPES:
                raise _invalid(f"subscriberConfigs[{index}].dataTypes: unsupported data type {data_type!r} "
                               f"(kebab-case; supported here: {', '.join(DATA_TYPES)}).")
        policy = config.get("subscriptionCreatePolicy")
        if policy not in POLICIES:
            raise _invalid(f"subscriberConfigs[{index}].subscriptionCreatePolicy must be one of {POLICIES}.")
        checked.append({"dataTypes": list(types), "subscriptionCreatePolicy": policy})
    authorization = body.get("endpointAuthorization")
    secret = authorization.get("secret") if isinstance(authorization, dict) else None
    if not isinstance(secret, str) or not secret.strip():
        raise _invalid("endpointAuthorization.secret is required.")
    return uri, checked, secret


def _operation(project: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"projects/{project}/operations/{uuid.uuid4()}", "done": True, "response": response}


router = APIRouter()


@router.post("/v4/projects/{project}/subscribers")
async def create_subscriber(project: str, request: Request) -> Response:
    _cloud_token(request)
    push = _push(request)
    project = _project(project)
    subscriber_id = request.query_params.get("subscriberId") or str(uuid.uuid4())
    if "subscriberId" in request.query_params and not SUBSCRIBER_ID_RE.fullmatch(subscriber_id):
        raise _invalid("subscriberId must be 4-36 characters matching [a-z]([a-z0-9-]{2,34}[a-z0-9]).")
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise _invalid("Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received: the body must be an object.")
    uri, configs, secret = parse_create(body)
    if push.subscriber(project, subscriber_id) is not None:
        raise push_error(409, f"Subscriber projects/{project}/subscribers/{subscriber_id} already exists.",
                         "ALREADY_EXISTS")
    problem = await asyncio.to_thread(push.verify, uri, secret)
    if problem is not None:
        raise push_error(400, f"Endpoint verification failed: {problem}.", "FAILED_PRECONDITION",
                         "ENDPOINT_VERIFICATION_FAILED")
    subscriber = Subscriber(project, subscriber_id, uri, configs, secret)
    push.add(subscriber)
    return json_response(_operation(project, {"@type": SUBSCRIBER_TYPE, **subscriber.resource()}))


@router.get("/v4/projects/{project}/subscribers")
async def list_subscribers(project: str, request: Request) -> Response:
    _cloud_token(request)
    subscribers = [s.resource() for s in _push(request).listed(_project(project))]
    return json_response({"subscribers": subscribers} if subscribers else {})


@router.delete("/v4/projects/{project}/subscribers/{subscriber_id}")
async def delete_subscriber(project: str, subscriber_id: str, request: Request) -> Response:
    _cloud_token(request)
    if not _push(request).remove(_project(project), subscriber_id):
        raise push_error(404, f"Subscriber projects/{project}/subscribers/{subscriber_id} was not found.",
                         "NOT_FOUND")
    return json_response(_operation(project, {"@type": EMPTY_TYPE}))


control_router = APIRouter()


@control_router.get("/public-key")
async def public_key(request: Request) -> Response:
    """The PEM public key notifications are signed with (``FITNESS_GOOGLE_PUBLIC_KEY`` of the receiver)."""
    return Response(_push(request).public_key_pem, media_type="application/x-pem-file")


@control_router.get("/push")
async def push_view(request: Request) -> Response:
    """``{"settings", "pending", "deliveries": [...]}``; ``?wait=S``: first wait (at most S s) until nothing is
    pending."""
    push = _push(request)
    wait = request.query_params.get("wait")
    if wait is not None:
        try:
            seconds = float(wait)
            if not 0 <= seconds <= 120:
                raise ValueError
        except ValueError:
            raise ApiError(400, {"message": "wait must be a number of seconds in 0..120"}) from None
        await asyncio.to_thread(push.wait_idle, seconds)
    return json_response(push.view())


@control_router.put("/push")
async def push_configure(request: Request) -> Response:
    """``{"delay_seconds"?, "duplicate_rate"?, "lost_rate"?, "seed"?, "max_attempts"?, "retry_seconds"?}``."""
    push = _push(request)
    try:
        push.configure(await read_json_object(request))
    except ValueError as error:
        raise ApiError(400, {"message": str(error)}) from None
    return json_response(push.view())


@control_router.delete("/push")
async def push_reset(request: Request) -> Response:
    """Delivery settings back to their defaults and the log emptied (subscribers stay)."""
    _push(request).reset()
    return Response(status_code=204)
