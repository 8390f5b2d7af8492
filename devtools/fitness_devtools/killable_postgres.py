"""A PostgreSQL server of its own that a fault test (or the soak) can kill and start again on the same data.

The test session's shared server (:func:`fitness_devtools.embedded_stack.start_postgres`) must never die
under the other tests, so a fault test starts one of these: the same ``pgserver`` binaries, its own data
directory and socket. :meth:`KillablePostgres.kill` is a real crash (SIGKILL of the postmaster, or
``pg_ctl stop -m immediate``: no checkpoint, recovery from the WAL at the next start);
:meth:`KillablePostgres.restart` starts it again on the same data directory, as an operator or a
container runtime would.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fitness_devtools.embedded_stack import EmbeddedPostgres, start_postgres

log = logging.getLogger(__name__)

KillMode = Literal["sigkill", "immediate"]
KILL_MODES: tuple[KillMode, ...] = ("sigkill", "immediate")


class KillablePostgres:
    """An embedded PostgreSQL (``pgserver``) that can be crashed and restarted; deleted by :meth:`stop`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.embedded: EmbeddedPostgres = start_postgres(data_dir, keep=False)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        return info.pid if info is not None and info.is_running() else None

    def is_running(self) -> bool:
        return self.pid is not None

    def kill(self, mode: KillMode = "sigkill", *, timeout: float = 30) -> None:
        """Crash the server now and wait until none of its processes is left."""
        import psutil

        pid = self.pid
        if pid is None:
            return
        postmaster = psutil.Process(pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        if mode == "sigkill":
            os.kill(pid, signal.SIGKILL)
        elif mode == "immediate":
            from pgserver import pg_ctl

            pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=self.data_dir, user=self.embedded.server.system_user)
        else:
            raise ValueError(f"unknown kill mode {mode!r}; one of {KILL_MODES}")
        # the backends notice the postmaster's death and exit; a new postmaster refuses to start while
        # any of them still holds the old shared memory
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=timeout)
        log.info("PostgreSQL in %s killed (%s)", self.data_dir, mode)

    def restart(self, *, timeout: float = 60) -> None:
        """Start the server again on the same data directory (crash recovery runs first) and wait for it."""
        server = self.embedded.server
        deadline = time.monotonic() + timeout
        while True:
            try:
                with server._lock:  # pgserver's own inter-process lock around starting a server
                    server.ensure_postgres_running()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        info = server.get_postmaster_info()
        self.embedded = EmbeddedPostgres(server=server, socket_dir=str(info.socket_dir),
                                         port=int(info.port or 5432))

    def stop(self) -> None:
        """Stop the server and delete its data."""
        if not self.is_running():
            self.restart()  # pgserver's cleanup stops a running server before deleting its data
        self.embedded.stop()


def crash_when_blocked(server: KillablePostgres, database: str, lock: str, mode: KillMode,
                       report: dict[str, Any] | None = None, *, waiting: str = "%",
                       timeout: float = 120) -> threading.Thread:
    """Take ``lock`` (SQL: ``LOCK TABLE ...``, ``SELECT pg_advisory_lock(...)``) in ``database`` and hold it;
    once another session waits for a lock there with a query ``LIKE waiting``, crash the server (``mode``)
    and start it again on the same data directory. Runs in a thread, which is returned; the crash comes after
    ``timeout`` s at the latest, so nothing hangs on the lock. ``report["waited"]``: the start of the waiting
    query, when one waited.

    A step blocked on the lock is inside PostgreSQL when the server dies: a crash in the middle of that
    step, wherever its statements are, without timing guesses.
    """
    import psycopg

    holder = psycopg.connect(server.embedded.dsn(database))
    holder.execute(lock)  # held until the crash ends the session

    def watch() -> None:
        deadline = time.monotonic() + timeout
        try:
            with psycopg.connect(server.embedded.dsn(database), autocommit=True) as monitor:
                while time.monotonic() < deadline:
                    row = monitor.execute("SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND pid <> %s AND query LIKE %s LIMIT 1",
                                          (holder.info.backend_pid, waiting)).fetchone()
                    if row:
                        if report is not None:
                            report["waited"] = str(row[0])[:80]
                        break
                    time.sleep(0.05)
        finally:
            server.kill(mode)
            time.sleep(1.0)
            server.restart()

    thread = threading.Thread(target=watch, name="crash-when-blocked", daemon=True)
    thread.start()
    return thread
