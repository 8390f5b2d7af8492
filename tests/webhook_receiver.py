"""The webhook receiver behind uvicorn on loopback, for tests in which a provider (the emulator) calls it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests

from fitness_devtools.webhooks import serve_app


@contextmanager
def google_receiver(emulator_url: str, secret: str) -> Iterator[str]:
    """The receiver on the test's ``fitness_db``, configured with the endpoint ``secret`` and the emulator's
    public key; yields the URL of its Google endpoint (``.../google``)."""
    from fitness_pipeline.receiver import ReceiverSettings, create_app

    pem = requests.get(f"{emulator_url}/_emulator/google/public-key", timeout=10).text
    with serve_app(create_app(ReceiverSettings(google_endpoint_secret=secret, google_public_key_pem=pem))) as url:
        yield f"{url}/google"
