"""Run an emulator app with uvicorn in a background daemon thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from fitness_emulator.app import EmulatorSettings, EmulatorState, create_app


class RunningEmulator:
    """A started emulator: ``url``, ``settings``, live ``state``; stop() or use as a context manager."""

    def __init__(
        self,
        settings: EmulatorSettings,
        state: EmulatorState,
        server: uvicorn.Server,
        thread: threading.Thread,
        url: str,
    ) -> None:
        self.settings = settings
        self.state = state
        self.url = url
        self._server = server
        self._thread = thread

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    def reset_stats(self) -> None:
        self.state.stats.reset()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown; joins the server thread and stops Strava's event deliveries.  Safe to call twice."""
        self.state.strava.push.close()
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningEmulator({self.url!r}, running={self.running})"


def start_emulator(settings: EmulatorSettings | None = None, *, timeout: float = 15.0) -> RunningEmulator:
    """Start uvicorn on ``settings.host``:``settings.port`` (0 = free port); return once it accepts connections."""
    settings = settings or EmulatorSettings()
    app = create_app(settings)
    # Bind ourselves so port 0 resolves before the thread starts and the port cannot be raced.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_config=None,  # never reconfigure the host process's logging
        access_log=settings.access_log,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fitness-emulator-{port}", daemon=True
    )
    thread.start()
    running = RunningEmulator(settings, app.state.emulator, server, thread, f"http://{host}:{port}")
    try:
        _wait_until_accepting(server, thread, host, port, timeout)
    except BaseException:
        running.stop()
        sock.close()
        raise
    return running


def _wait_until_accepting(
    server: uvicorn.Server, thread: threading.Thread, host: str, port: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("emulator server thread exited during startup")
        if server.started:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                pass
        time.sleep(0.01)
    raise TimeoutError(f"emulator did not accept connections on {host}:{port} within {timeout}s")
