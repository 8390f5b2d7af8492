"""Stand-ins for the fast tier: a Connection, hand-built ``requests.Response`` objects, hooks on them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from fitness_pipeline.tokens import MemoryTokenStore


@dataclass
class StubConnection:
    """The attributes of ``airflow.models.Connection`` the hooks read."""

    host: str | None = "https://api.example.test"
    login: str | None = "client-id"
    password: str | None = "client-secret"
    schema: str | None = None
    port: int | None = None
    extra_dejson: dict[str, Any] = field(default_factory=lambda: {"refresh_token": "seed-refresh-token"})


def response(status: int = 200, body: Any = None, url: str = "https://api.example.test/x", *,
             method: str = "GET", headers: Mapping[str, str] | None = None, raw: bytes | None = None,
             reason: str = "") -> requests.Response:
    """A ``requests.Response`` built by hand: ``body`` as JSON, or ``raw`` bytes."""
    r = requests.Response()
    r.status_code = status
    r._content = raw if raw is not None else json.dumps(body).encode()
    r.url = url
    r.reason = reason
    r.headers.update(headers or {})
    r.request = requests.Request(method, url).prepare()
    return r


def hook_on(hook_class: type, conn: StubConnection | None = None, **kwargs: Any) -> Any:
    """A hook of ``hook_class`` reading ``conn`` (no Airflow connection lookup), tokens in memory."""
    hook = hook_class(token_store=kwargs.pop("token_store", MemoryTokenStore()), **kwargs)
    hook.__dict__["connection"] = conn or StubConnection()  # what the cached property would hold
    return hook


def serve(hook: Any, answers: Iterable[Any] | Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """Make ``hook.request`` answer ``answers`` (JSON bodies, in turn, or a function of the params)
    without any HTTP; returns the params of each request, as they were sent."""
    sent: list[dict[str, Any]] = []
    queue = None if callable(answers) else iter(answers)

    def request(method: str, path: str, **kwargs: Any) -> requests.Response:
        params = dict(kwargs.get("params") or {})
        sent.append(params)
        body = answers(params) if queue is None else next(queue)  # type: ignore[operator]
        return response(200, body, f"https://api.example.test{path}", method=method)

    hook.request = request
    return sent
