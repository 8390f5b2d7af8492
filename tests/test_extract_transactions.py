"""No database transaction stays open while an extract waits for an API: watched from a second
connection in ``pg_stat_activity`` while the emulator answers slowly."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
import requests

from tests.helpers import query

DAY = dt.timedelta(days=1)


def held_transactions(conn: Any, database: str) -> list[str]:
    """The other sessions on ``database`` idle inside a transaction for longer than a statement gap
    (a few milliseconds of Python between the statements of one short transaction): waiting for
    something else, such as an HTTP answer (the emulator's slow ones take 0.6 s)."""
    rows = query(conn, "SELECT state || ': ' || query FROM pg_stat_activity WHERE datname = %s "
                       "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%' "
                       "AND clock_timestamp() - state_change > interval '0.3 seconds'", (database,))
    conn.commit()  # pg_stat_activity is a snapshot per transaction: the next look must be a new one
    return [state for (state,) in rows]


@pytest.mark.parametrize("source", ["strava_activity", "fitbit_weight", "fitbit_calories"])
def test_no_transaction_is_open_while_the_api_answers_slowly(schema: Any, fitness_db: str, all_connections: Any,
                                                             source: str) -> None:
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.windows import Window

    emulator = all_connections
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    # Strava lists 90 days in several pages; weight makes three listings (heights, body fat, weights)
    requests.post(f"{emulator.url}/_emulator/faults", json={"slow_next": 4, "slow_seconds": 0.6},
                  timeout=5).raise_for_status()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["extracted"] = extract(source, "slow", Window(hour - 90 * DAY, hour))
        except BaseException as error:  # reported below
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    seen: list[str] = []
    looks = 0
    while worker.is_alive():
        seen += held_transactions(schema, fitness_db)
        looks += 1
        time.sleep(0.02)
    worker.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["extracted"].extracted > 0
    assert looks > 20  # the extract really was watched while it waited (4 slow answers of 0.6 s)
    assert seen == []


def test_the_watch_sees_a_transaction_held_across_a_wait(schema: Any, fitness_db: str) -> None:
    """The control: what the weight extract used to do (a transaction open while it waited)."""
    from contextlib import closing

    from fitness_pipeline.db import connect, transaction

    def hold() -> None:
        with closing(connect()) as conn, transaction(conn) as cur:
            cur.execute("SELECT count(*) FROM fitbit_height")
            time.sleep(0.8)  # an HTTP request inside the transaction

    worker = threading.Thread(target=hold)
    worker.start()
    seen: list[str] = []
    while worker.is_alive():
        seen += held_transactions(schema, fitness_db)
        time.sleep(0.02)
    worker.join()
    assert seen and all("fitbit_height" in s for s in seen)
