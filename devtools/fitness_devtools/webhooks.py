"""The webhook receiver on loopback, subscribed at the emulator for both providers: what `make airflow`, the
event benchmark and the end-to-end tests run, as a deployment would (a Strava push subscription, a Google
subscriber), with the emulator in place of Strava and Google.

The receiver runs in this process (uvicorn in a thread) on the fitness database of ``AIRFLOW_CONN_FITNESS_DB``;
the subscriptions are made with ``fitness_pipeline.subscriptions`` and ``fitness_pipeline.google_subscriber``
through connections ``strava_default`` and ``fitbit_default`` (all three must be in ``os.environ``).
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

#: the Google Cloud project and subscriber of the emulator (any name: the emulator keeps them in memory)
GOOGLE_PROJECT = "fitness-local"
GOOGLE_SUBSCRIBER = "fitness-receiver"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_app(app: Any, port: int | None = None, timeout: float = 10.0) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on loopback (``port``, default a free one) in a thread; yields its URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                          access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name=f"asgi-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@dataclass(frozen=True)
class Webhooks:
    """A receiver subscribed at the emulator."""

    url: str
    strava_subscription_id: int
    strava_verify_token: str
    google_endpoint_secret: str


@contextmanager
def subscribed_receiver(emulator_url: str, port: int | None = None) -> Iterator[Webhooks]:
    """Start the receiver, subscribe it at the emulator (Strava validates the callback while it creates the
    subscription, so the receiver starts first and again once the subscription id is known), yield; then
    delete the subscriptions (the emulator stops delivering) and stop the receiver."""
    from fitness_pipeline import google_subscriber, subscriptions
    from fitness_pipeline.receiver import ReceiverSettings, create_app

    port = port or free_port()
    settings = ReceiverSettings(
        strava_verify_token=subscriptions.new_verify_token(), google_endpoint_secret=f"Bearer {secrets.token_hex(16)}",
        google_public_key_pem=requests.get(f"{emulator_url}/_emulator/google/public-key", timeout=10).text)
    url = f"http://127.0.0.1:{port}"
    strava = subscriptions.StravaApplication.from_connection("strava_default")
    with serve_app(create_app(settings), port):
        subscription = subscriptions.create(strava, f"{url}/strava", settings.strava_verify_token)
    try:
        settings = dataclasses.replace(settings, strava_subscription_id=subscription)
        with serve_app(create_app(settings), port):
            api_root, token = google_subscriber.api_root_of(), "emulator"
            google_subscriber.create_subscriber(api_root, GOOGLE_PROJECT, GOOGLE_SUBSCRIBER, f"{url}/google",
                                                google_subscriber.DEFAULT_DATA_TYPES,
                                                str(settings.google_endpoint_secret), token)
            try:
                yield Webhooks(url, subscription, str(settings.strava_verify_token),
                               str(settings.google_endpoint_secret))
            finally:
                google_subscriber.delete_subscriber(api_root, GOOGLE_PROJECT, GOOGLE_SUBSCRIBER, token)
    finally:
        subscriptions.delete(strava, subscription)
