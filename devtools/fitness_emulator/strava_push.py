"""Strava's push subscriptions (webhooks): one subscription per application, its validation handshake, and
the events delivered to its callback in the background.

As Strava documents it: ``POST /api/v3/push_subscriptions`` sends ``GET callback_url?hub.mode=subscribe&
hub.challenge=..&hub.verify_token=..`` at once and creates the subscription only when the callback answers
200 with ``{"hub.challenge": <the same>}`` within 2 s. While one exists, every activity created, updated (its
title, type or privacy) or deleted and every revoked authorization is POSTed to the callback as Strava's
event JSON; a delivery not answered 200 within 2 s is tried again, three attempts in all.

Deliveries run on an event loop of their own (a daemon thread, started with the first subscription), so a
callback served by the emulator's own server, or by anything else in the process, never deadlocks, and the
control request that made the change returns at once. Delivery faults (``delay_seconds``,
``duplicate_rate``, ``lost_rate``) and a bounded delivery log are the controls' (``/_emulator/strava/push``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Strava: a delivery is answered within 2 s, else retried, three attempts in all
DELIVERY_ATTEMPTS = 3
MAX_CALLBACK_URL_LENGTH = 255
LOG_SIZE = 100_000
FIRST_SUBSCRIPTION_ID = 120475
MAX_CONCURRENT_POSTS = 16


class PushError(Exception):
    """A refused push-subscription request: ``status`` and Strava's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


def push_error(status: int, message: str, field: str, code: str) -> PushError:
    return PushError(status, {"message": message, "errors": [{"resource": "PushSubscription", "field": field,
                                                                "code": code}]})


@dataclass
class PushFaults:
    """How deliveries misbehave (``PUT /_emulator/strava/push``); the defaults are a well-behaved Strava."""

    #: every delivery starts this late (the event is late)
    delay_seconds: float = 0.0
    #: the share of events delivered twice (a second delivery of the same event after the first)
    duplicate_rate: float = 0.0
    #: the share of events never delivered
    lost_rate: float = 0.0
    #: the seed of the draws for duplicates and losses (None: the emulator's seed)
    seed: int | None = None
    #: the pause between two attempts of a delivery
    retry_pause_seconds: float = 1.0
    #: an attempt not answered 200 within this is a failed one (Strava: 2 s)
    timeout_seconds: float = 2.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; ValueError on unknown names or bad values (nothing changed then)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown push settings: {sorted(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "seed":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError("seed must be an integer or null")
                checked[name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} must be in 0..1")
            if name == "timeout_seconds" and value == 0:
                raise ValueError("timeout_seconds must be > 0")
            checked[name] = float(value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Subscription:
    id: int
    application_id: int | str
    callback_url: str
    verify_token: str
    created_at: str

    def view(self) -> dict[str, Any]:
        """As Strava lists it (never the verify token)."""
        return {"id": self.id, "resource_state": 2, "application_id": self.application_id,
                "callback_url": self.callback_url, "created_at": self.created_at, "updated_at": self.created_at}


class StravaPush:
    """The application's push subscription and the deliveries of its events.

    ``clock`` gives ``event_time`` (the emulator's time); sent times in the log are real time.
    """

    def __init__(self, *, client_id: str, client_secret: str, seed: int, clock: Callable[[], float]) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.seed = seed
        self.clock = clock
        self.faults = PushFaults()
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._creating = False
        self._next_id = FIRST_SUBSCRIPTION_ID
        self._rng = random.Random(seed)
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._seq = 0
        self._pending = 0
        self._totals = dict.fromkeys(("events", "posts", "delivered", "failed", "duplicated", "lost"), 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._posts: asyncio.Semaphore | None = None

    # ---- the subscription API

    @property
    def application_id(self) -> int | str:
        return int(self.client_id) if self.client_id.isdigit() else self.client_id

    def check_client(self, params: dict[str, str]) -> None:
        """401 unless ``params`` carry the application's client id and secret."""
        given = (params.get("client_id", ""), params.get("client_secret", ""))
        if not (secrets.compare_digest(given[0].encode(), self.client_id.encode())
                and secrets.compare_digest(given[1].encode(), self.client_secret.encode())):
            raise PushError(401, {"message": "Authorization Error", "errors": [
                {"resource": "Application", "field": "client_id", "code": "invalid"}]})

    @property
    def subscription(self) -> Subscription | None:
        with self._lock:
            return self._subscription

    async def create(self, params: dict[str, str]) -> Subscription:
        """Validate the callback as Strava does (the handshake), then create the one subscription."""
        self.check_client(params)
        callback_url, verify_token = params.get("callback_url", ""), params.get("verify_token", "")
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(callback_url) > MAX_CALLBACK_URL_LENGTH:
            raise push_error(400, "Bad Request", "callback_url", "invalid")
        if not verify_token:
            raise push_error(400, "Bad Request", "verify_token", "invalid")
        with self._lock:
            if self._subscription is not None or self._creating:
                raise push_error(400, "Bad Request", "", "already exists")
            self._creating = True
        try:
            await asyncio.wrap_future(self._run(self._validate(callback_url, verify_token)))
            with self._lock:
                subscription = Subscription(self._next_id, self.application_id, callback_url, verify_token,
                                            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
                self._next_id += 1
                self._subscription = subscription
            return subscription
        finally:
            with self._lock:
                self._creating = False

    async def _validate(self, callback_url: str, verify_token: str) -> None:
        challenge = secrets.token_urlsafe(16)
        params = {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
        try:
            response = await self._http().get(callback_url, params=params, timeout=self.faults.timeout_seconds)
        except Exception:  # unreachable, too slow, an URL httpx cannot use: not validated
            response = None
        if response is None or response.status_code != 200:
            raise push_error(400, "Bad Request", "callback url", "GET to callback URL does not return 200")
        try:
            echoed = response.json().get("hub.challenge")
        except (ValueError, AttributeError):
            echoed = None
        if echoed != challenge:
            raise push_error(400, "Bad Request", "callback url", "callback URL does not return the challenge")

    def delete(self, subscription_id: int, params: dict[str, str]) -> None:
        self.check_client(params)
        with self._lock:
            if self._subscription is None or self._subscription.id != subscription_id:
                raise PushError(404, {"message": "Resource Not Found", "errors": [
                    {"resource": "PushSubscription", "field": "id", "code": "not found"}]})
            self._subscription = None

    # ---- events

    def emit(self, object_type: str, object_id: int, aspect_type: str, owner_id: int,
             updates: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Deliver an event in the background, if there is a subscription; returns its log entry (or None)."""
        with self._lock:
            subscription = self._subscription
            if subscription is None:
                return None
            event = {"object_type": object_type, "object_id": object_id, "aspect_type": aspect_type,
                     "updates": dict(updates or {}), "owner_id": owner_id, "subscription_id": subscription.id,
                     "event_time": int(self.clock())}
            lost = self._rng.random() < self.faults.lost_rate if self.faults.lost_rate else False
            duplicated = (not lost and bool(self.faults.duplicate_rate)
                          and self._rng.random() < self.faults.duplicate_rate)
            self._seq += 1
            entry: dict[str, Any] = {"seq": self._seq, "event": event, "callback_url": subscription.callback_url,
                                     "attempts": 0, "statuses": [], "sent_at": [], "delivered": False,
                                     "duplicated": duplicated, "lost": lost, "done": lost}
            self._log.append(entry)
            self._totals["events"] += 1
            if lost:
                self._totals["lost"] += 1
                return dict(entry)
            self._totals["duplicated"] += duplicated
            self._pending += 1
            delay = self.faults.delay_seconds
        self._run(self._deliver(entry, delay))
        return dict(entry)

    async def _deliver(self, entry: dict[str, Any], delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            delivered = await self._attempts(entry)
            with self._lock:
                entry["delivered"] = delivered
                self._totals["delivered" if delivered else "failed"] += 1
            if entry["duplicated"]:
                await self._attempts(entry)  # the same event once more, retried like any delivery
        finally:
            with self._lock:
                entry["done"] = True
                self._pending -= 1

    async def _attempts(self, entry: dict[str, Any]) -> bool:
        """One delivery: up to three POSTs until one is answered 200 within the timeout."""
        for attempt in range(DELIVERY_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.faults.retry_pause_seconds)
            with self._lock:
                entry["attempts"] += 1
                entry["sent_at"].append(time.time())
                self._totals["posts"] += 1
            status: int | str
            try:
                async with self._posts or asyncio.Semaphore(MAX_CONCURRENT_POSTS):
                    response = await self._http().post(entry["callback_url"], json=entry["event"],
                                                       timeout=self.faults.timeout_seconds)
                status = response.status_code
            except httpx.TimeoutException:
                status = "timeout"
            except Exception as error:  # refused, reset, an URL httpx cannot use: a failed attempt all the same
                status = type(error).__name__
            with self._lock:
                entry["statuses"].append(status)
            if status == 200:
                return True
        return False

    # ---- the controls' view

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no delivery is pending; whether none is."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending

    def view(self, *, log: bool = True, since: int = 0) -> dict[str, Any]:
        with self._lock:
            subscription = self._subscription.view() if self._subscription else None
            view: dict[str, Any] = {**self.faults.as_dict(), "subscription": subscription,
                                    "pending": self._pending, "totals": dict(self._totals)}
            if log:
                view["log"] = [{**e, "event": dict(e["event"]), "statuses": list(e["statuses"]),
                                "sent_at": list(e["sent_at"])} for e in self._log if e["seq"] > since]
            return view

    def update_faults(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self.faults.update(changes)
            if "seed" in changes:
                self._rng = random.Random(self.seed if self.faults.seed is None else self.faults.seed)

    def clear_faults(self) -> None:
        """Well-behaved deliveries again (``DELETE /_emulator/faults``)."""
        with self._lock:
            self.faults = PushFaults()
            self._rng = random.Random(self.seed)

    def reset(self) -> None:
        """Well-behaved deliveries again, the log and totals emptied (the subscription stays)."""
        with self._lock:
            self.faults = PushFaults()
            self._rng = random.Random(self.seed)
            self._log.clear()
            self._totals = dict.fromkeys(self._totals, 0)

    # ---- the delivery loop

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coroutine`` on the deliveries' own event loop (started on first use)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    self._posts = asyncio.Semaphore(MAX_CONCURRENT_POSTS)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="strava-push", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def _http(self) -> httpx.AsyncClient:
        # on the deliveries' loop only; trust_env=False: no proxy from the environment for a callback
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self._client

    def close(self) -> None:
        """Stop the delivery loop (pending deliveries are abandoned). Safe to call twice."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        client, self._client = self._client, None
        if client is not None:
            closed = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            with contextlib.suppress(Exception):  # best effort at shutdown
                closed.result(2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
