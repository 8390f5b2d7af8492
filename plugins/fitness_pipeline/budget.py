"""One Strava budget for every task, worker and run: a read is reserved in PostgreSQL before it is sent.

Strava's limits belong to the API application: all its athletes, tasks and clients share 100 reads per
15 minutes (windows at the quarter hours) and 1,000 per UTC day (``apis``). Each request first reserves one
read with a single atomic upsert, which succeeds only while the window and the day still have room, so two
tasks can never both take the last read. ``share`` lets a history import use only part of each window and
day, leaving the rest to the hourly runs. Every response's usage headers then raise the counts to what Strava
says (other clients of the same application count there too); they never lower them.

A refused reservation returns when the budget resets; the hook waits for it or, when that is further away
than ``max_rate_limit_wait``, gives the worker slot back (:class:`~fitness_pipeline.errors.RateLimitError`,
a reschedule) without having sent the request.
"""

from __future__ import annotations

import math
import threading
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import database_of, execute, transaction
from fitness_pipeline.schema import api_budget

DAY = 86_400


@dataclass(frozen=True)
class Limits:
    window: int
    day: int


#: Strava's read limits until a response says otherwise (the application's may be higher)
STRAVA_READ_LIMITS = Limits(100, 1_000)


def allowed(limit: int, share: float) -> int:
    """How many reads ``share`` of ``limit`` allows (at least one while share > 0)."""
    return max(1, math.floor(limit * share)) if share > 0 else 0


def reset_at(now: float, window_seconds: int, day_spent: bool) -> float:
    """When a refused reservation may succeed: the next UTC midnight when the day is spent, else the next window."""
    if day_spent:
        return (int(now // DAY) + 1) * DAY
    return (int(now // window_seconds) + 1) * window_seconds


class Budget(Protocol):
    def reserve(self, now: float, share: float = 1.0) -> float | None:
        """Reserve one read; None when reserved, else the epoch second at which the budget resets."""

    def observe(self, now: float, window_used: int, window_limit: int, day_used: int, day_limit: int) -> None:
        """What a response's headers said about the window and day it arrived in."""

    def close(self) -> None: ...


class MemoryBudget:
    """A budget without a database (tokens kept in memory): the same rules, known to its owner only."""

    def __init__(self, window_seconds: int, limits: Limits = STRAVA_READ_LIMITS) -> None:
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._state = {"window_index": -1, "window_used": 0, "window_limit": limits.window, "day_index": -1,
                       "day_used": 0, "day_limit": limits.day}

    def reserve(self, now: float, share: float = 1.0) -> float | None:
        with self._lock:
            self._roll(now)
            s = self._state
            day_spent = s["day_used"] + 1 > allowed(s["day_limit"], share)
            if day_spent or s["window_used"] + 1 > allowed(s["window_limit"], share):
                return reset_at(now, self.window_seconds, day_spent)
            s["window_used"] += 1
            s["day_used"] += 1
            return None

    def observe(self, now: float, window_used: int, window_limit: int, day_used: int, day_limit: int) -> None:
        with self._lock:
            self._roll(now)
            s = self._state
            if int(now // self.window_seconds) == s["window_index"]:  # a late answer never takes it back
                s["window_used"] = max(s["window_used"], window_used)
            if int(now // DAY) == s["day_index"]:
                s["day_used"] = max(s["day_used"], day_used)
            s.update(window_limit=window_limit, day_limit=day_limit)

    def _roll(self, now: float) -> None:
        """Move on to the window and day of ``now``; never back."""
        s = self._state
        window, day = int(now // self.window_seconds), int(now // DAY)
        if window > s["window_index"]:
            s.update(window_index=window, window_used=0)
        if day > s["day_index"]:
            s.update(day_index=day, day_used=0)

    def close(self) -> None:
        pass


class PostgresBudget:
    """The budget in the ``api_budget`` table of ``postgres_conn_id``'s database, shared by everything
    that uses that database; one connection per budget, one short transaction per reservation."""

    _tables_checked: ClassVar[set[str]] = set()

    def __init__(self, postgres_conn_id: str, key: str, window_seconds: int,
                 limits: Limits = STRAVA_READ_LIMITS) -> None:
        self.postgres_conn_id = postgres_conn_id
        self.key = key
        self.window_seconds = window_seconds
        self.limits = limits
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or getattr(self._conn, "closed", False):
            from fitness_pipeline.db import connect

            self._conn = connect(self.postgres_conn_id)
            database = database_of(self.postgres_conn_id)
            if database not in self._tables_checked:  # a hook used before ensure_schema ever ran
                from fitness_pipeline.ddl import ensure_schema

                ensure_schema(self._conn, tables=[api_budget])
                self._tables_checked.add(database)
        return self._conn

    def reserve(self, now: float, share: float = 1.0) -> float | None:
        t = api_budget
        window, day = int(now // self.window_seconds), int(now // DAY)
        # a row already in a later window or day (a worker whose clock is a little ahead) is counted against,
        # never reset: two clocks a second apart must not keep resetting each other at a boundary
        same_window, same_day = t.c.window_index >= window, t.c.day_index >= day

        def room(used: Any, limit: Any) -> Any:
            return used + 1 <= sa.func.greatest(1, sa.func.floor(limit * share)) if share > 0 else sa.false()

        insert = pg.insert(t).values(budget_key=self.key, window_index=window, window_used=1,
                                     window_limit=self.limits.window, day_index=day, day_used=1,
                                     day_limit=self.limits.day)
        reserve = insert.on_conflict_do_update(
            index_elements=[t.c.budget_key],
            set_={"window_used": sa.case((same_window, t.c.window_used + 1), else_=1),
                  "window_index": sa.func.greatest(t.c.window_index, window),
                  "day_used": sa.case((same_day, t.c.day_used + 1), else_=1),
                  "day_index": sa.func.greatest(t.c.day_index, day), "updated_at": sa.func.now()},
            where=sa.and_(sa.or_(~same_window, room(t.c.window_used, t.c.window_limit)),
                          sa.or_(~same_day, room(t.c.day_used, t.c.day_limit))),
        ).returning(t.c.window_used)
        with transaction(self._connection()) as cur:
            execute(cur, reserve)
            if cur.fetchone() is not None:
                return None
            # which limit refused it, decided by the same SQL arithmetic as the refusal
            execute(cur, sa.select(sa.and_(same_day, ~room(t.c.day_used, t.c.day_limit)))
                    .where(t.c.budget_key == self.key))
            (day_spent,) = cur.fetchone()
        return reset_at(now, self.window_seconds, bool(day_spent))

    def observe(self, now: float, window_used: int, window_limit: int, day_used: int, day_limit: int) -> None:
        t = api_budget
        window, day = int(now // self.window_seconds), int(now // DAY)
        insert = pg.insert(t).values(budget_key=self.key, window_index=window, window_used=window_used,
                                     window_limit=window_limit, day_index=day, day_used=day_used, day_limit=day_limit)
        upsert = insert.on_conflict_do_update(
            index_elements=[t.c.budget_key],
            set_={"window_used": sa.case((t.c.window_index == window, sa.func.greatest(t.c.window_used, window_used)),
                                         else_=window_used),
                  "day_used": sa.case((t.c.day_index == day, sa.func.greatest(t.c.day_used, day_used)),
                                      else_=day_used),
                  "window_index": window, "day_index": day, "window_limit": window_limit, "day_limit": day_limit,
                  "updated_at": sa.func.now()},
            where=sa.and_(t.c.window_index <= window, t.c.day_index <= day),  # a late answer never goes back
        )
        with transaction(self._connection()) as cur:
            execute(cur, upsert)

    def close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None
