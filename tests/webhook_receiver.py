"""The webhook receiver behind uvicorn on loopback, for tests in which a provider (the emulator) calls it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run the ASGI ``app`` with uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True, name=f"receiver-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def google_receiver(emulator_url: str, secret: str) -> Iterator[str]:
    """The receiver on the test's ``fitness_db``, configured with the endpoint ``secret`` and the emulator's
    public key; yields the URL of its Google endpoint (``.../google``)."""
    from fitness_pipeline.receiver import ReceiverSettings, create_app

    pem = requests.get(f"{emulator_url}/_emulator/google/public-key", timeout=10).text
    with serve(create_app(ReceiverSettings(google_endpoint_secret=secret, google_public_key_pem=pem))) as url:
        yield f"{url}/google"
