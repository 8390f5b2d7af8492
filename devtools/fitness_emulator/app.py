"""FastAPI app factory: shared state, request counting and the ``/_emulator`` controls.

To plug in another emulated API (e.g. Google Health): add its settings dataclass as a
field of :class:`EmulatorSettings`, build its state in :class:`EmulatorState`, and
list its routers in :func:`_service_routers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fitness_emulator import google, google_push, strava
from fitness_emulator.core import ApiError, Faults, Stats, json_response, read_json_object
from fitness_emulator.google import GoogleSettings, GoogleState
from fitness_emulator.strava import StravaSettings, StravaState

CONTROL_PREFIX = "/_emulator"


@dataclass
class EmulatorSettings:
    """Top-level settings: the shared seed and server options, plus one block per API."""

    seed: int = 42
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    access_log: bool = False
    strava: StravaSettings = field(default_factory=StravaSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)


class EmulatorState:
    """Everything one app instance owns; several apps in one process share nothing.

    ``clock`` is the single time source (``time.time`` by default); replace it to move
    time in in-process tests.  ``stats`` and ``faults`` are shared by all APIs.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.clock: Callable[[], float] = time.time
        self.stats = Stats()
        self.faults = Faults()
        self.strava = StravaState(
            settings.strava, seed=settings.seed, clock=self.now, stats=self.stats, faults=self.faults
        )
        self.google = GoogleState(
            settings.google, seed=settings.seed, clock=self.now, stats=self.stats, faults=self.faults
        )
        self.stats.declare("faults_injected")

    def now(self) -> float:
        # Indirection so that replacing ``state.clock`` reaches every component.
        return self.clock()


class RequestCounter:
    """Pure ASGI middleware counting requests as "METHOD /route/template".

    Counts when the response starts (routing has set ``scope["route"]`` by then, and
    the count is visible before the client sees the response).  ``/_emulator`` control
    traffic is not counted.
    """

    def __init__(self, app: ASGIApp, stats: Stats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "<unmatched>"
                self.stats.count_request(f"{scope['method']} {template}")
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(settings: EmulatorSettings | None = None) -> FastAPI:
    """A fresh app with its own :class:`EmulatorState` at ``app.state.emulator``."""
    settings = settings or EmulatorSettings()
    state = EmulatorState(settings)
    app = FastAPI(title="fitness emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state
    app.add_exception_handler(ApiError, _api_error_handler)  # type: ignore[arg-type]
    app.add_middleware(RequestCounter, stats=state.stats)
    app.include_router(control_router, prefix=CONTROL_PREFIX)
    for prefix, service_router in _service_routers():
        app.include_router(service_router, prefix=prefix)
    return app


def _service_routers() -> list[tuple[str, APIRouter]]:
    """(prefix, router) of every emulated API and its control routes."""
    return [
        ("", strava.router),
        (f"{CONTROL_PREFIX}/strava", strava.control_router),
        ("", google.router),
        ("", google_push.router),
        (f"{CONTROL_PREFIX}/google", google.control_router),
        (f"{CONTROL_PREFIX}/google", google_push.control_router),
        (f"{CONTROL_PREFIX}/fitbit", google.fitbit_control_router),
    ]


async def _api_error_handler(_request: Request, error: ApiError) -> Response:
    return json_response(error.body, status=error.status, headers=error.headers)


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


control_router = APIRouter()


@control_router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@control_router.get("/stats")
async def get_stats(request: Request) -> Response:
    return json_response(_state(request).stats.snapshot())


@control_router.delete("/stats")
async def reset_stats(request: Request) -> Response:
    _state(request).stats.reset()
    return Response(status_code=204)


@control_router.get("/faults")
async def get_faults(request: Request) -> Response:
    return json_response(_faults_view(_state(request)))


@control_router.post("/faults")
async def set_faults(request: Request) -> Response:
    """Arm switches, e.g. ``{"fail_next": 2, "fail_status": 503}``; also ``short_page_every``."""
    state = _state(request)
    changes = await read_json_object(request)
    if "short_page_every" in changes:
        every = changes.pop("short_page_every")
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ApiError(400, {"message": "short_page_every must be an integer >= 0"})
        state.strava.short_page_every = every
    try:
        state.faults.update(changes)
    except ValueError as error:
        raise ApiError(400, {"message": str(error)}) from None
    return json_response(_faults_view(state))


@control_router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    state = _state(request)
    state.faults.clear()
    state.strava.short_page_every = state.strava.settings.short_page_every
    state.strava.push.clear_faults()
    return Response(status_code=204)


def _faults_view(state: EmulatorState) -> dict[str, Any]:
    return state.faults.as_dict() | {"short_page_every": state.strava.short_page_every}
