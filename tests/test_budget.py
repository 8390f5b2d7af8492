"""The shared Strava budget (``fitness_pipeline.budget``): the same rules in memory and in PostgreSQL, and in
PostgreSQL concurrent reservations (threads with a connection each) never take more than the window holds;
through the hook and the emulator, runs in parallel under a tight limit get no 429."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from fitness_pipeline.budget import DAY, Limits, MemoryBudget, PostgresBudget

WINDOW = 900
#: 2026-11-20 12:05:00 UTC: 300 s into a 15-minute window
NOW = 1_795_262_700.0
NEXT_WINDOW = (NOW // WINDOW + 1) * WINDOW
MIDNIGHT = (NOW // DAY + 1) * DAY


@pytest.fixture(params=["memory", "postgres"])
def make_budget(request: pytest.FixtureRequest) -> Any:
    budgets: list[Any] = []

    def make(limits: Limits, key: str = "strava:test:900") -> Any:
        if request.param == "memory":
            budget = MemoryBudget(WINDOW, limits)
        else:
            request.getfixturevalue("fitness_db")
            budget = PostgresBudget("fitness_db", key, WINDOW, limits)
        budgets.append(budget)
        return budget

    yield make
    for budget in budgets:
        budget.close()


def test_a_window_holds_its_limit_then_waits_for_the_next(make_budget: Any) -> None:
    budget = make_budget(Limits(3, 1000))
    assert [budget.reserve(NOW) for _ in range(4)] == [None, None, None, NEXT_WINDOW]
    assert budget.reserve(NEXT_WINDOW) is None  # a new window, a new count


def test_a_spent_day_waits_for_utc_midnight(make_budget: Any) -> None:
    budget = make_budget(Limits(100, 2))
    assert [budget.reserve(NOW), budget.reserve(NOW + 1), budget.reserve(NEXT_WINDOW)] == [None, None, MIDNIGHT]
    assert budget.reserve(MIDNIGHT) is None


def test_an_import_takes_its_share_and_leaves_the_rest(make_budget: Any) -> None:
    budget = make_budget(Limits(10, 1000))
    assert [budget.reserve(NOW, share=0.5) for _ in range(6)] == [None] * 5 + [NEXT_WINDOW]
    assert [budget.reserve(NOW) for _ in range(6)] == [None] * 5 + [NEXT_WINDOW]  # the hourly runs' half


def test_headers_raise_the_count_and_the_limits_never_lower_it(make_budget: Any) -> None:
    budget = make_budget(Limits(100, 1000))
    budget.reserve(NOW)
    budget.observe(NOW, window_used=8, window_limit=10, day_used=8, day_limit=1000)  # other clients' reads
    assert [budget.reserve(NOW) for _ in range(3)] == [None, None, NEXT_WINDOW]
    budget.observe(NOW, window_used=1, window_limit=10, day_used=1, day_limit=1000)  # an older answer
    assert budget.reserve(NOW) == NEXT_WINDOW


def test_a_late_answer_never_takes_the_budget_back(make_budget: Any) -> None:
    budget = make_budget(Limits(3, 1000))
    assert [budget.reserve(NEXT_WINDOW) for _ in range(3)] == [None] * 3
    budget.observe(NOW, window_used=1, window_limit=3, day_used=1, day_limit=1000)  # from the window before
    assert budget.reserve(NEXT_WINDOW) == NEXT_WINDOW + WINDOW


def test_a_clock_a_little_behind_counts_against_the_newer_window(fitness_db: str) -> None:
    """Two workers whose clocks straddle a window boundary share that window; they never reset each other."""
    ahead = PostgresBudget("fitness_db", "strava:skew:900", WINDOW, Limits(3, 1000))
    behind = PostgresBudget("fitness_db", "strava:skew:900", WINDOW, Limits(3, 1000))
    try:
        assert [ahead.reserve(NEXT_WINDOW), ahead.reserve(NEXT_WINDOW)] == [None, None]
        assert behind.reserve(NEXT_WINDOW - 1) is None  # its window is already the newer one's third read
        assert [ahead.reserve(NEXT_WINDOW), behind.reserve(NEXT_WINDOW - 1)] == [NEXT_WINDOW + WINDOW, NEXT_WINDOW]
    finally:
        ahead.close()
        behind.close()


def test_concurrent_reservations_never_take_more_than_the_window(fitness_db: str) -> None:
    limit, workers, attempts = 25, 6, 10
    results: list[float | None] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def reserve_many() -> None:
        budget = PostgresBudget("fitness_db", "strava:race:900", WINDOW, Limits(limit, 1000))
        try:
            start.wait()
            got = [budget.reserve(NOW) for _ in range(attempts)]
        finally:
            budget.close()
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=reserve_many) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(None) == limit
    assert results.count(NEXT_WINDOW) == workers * attempts - limit


# --- through the hook, against the emulator ------------------------------------------------------------------

def test_parallel_extracts_under_a_tight_limit_get_no_429(schema: Any, make_emulator: Any,
                                                          connect_strava: Any) -> None:
    """Three imports at once, pages of two, three reads per 3-second window for the whole application: each
    request waits for room in the shared budget instead of being refused; every import lands its window."""
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.windows import Window
    from tests.test_dag import emulator_activity_ids, this_hour

    emulator = connect_strava(make_emulator(read_limit=(3, 1000), rate_window_seconds=3, max_per_page=2),
                              rate_limit_window_seconds=3, read_rate_limits="3,1000")
    hour = this_hour()
    windows = {f"import-{n}": Window(hour - dt.timedelta(days=10 * (n + 1)), hour - dt.timedelta(days=10 * n))
               for n in range(3)}
    landed: dict[str, int] = {}

    def run(run_id: str) -> None:
        landed[run_id] = extract("strava_activity", run_id, windows[run_id]).extracted

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in windows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    stats = emulator.stats()
    assert stats["rate_limited"] == 0
    assert stats["requests"]["GET /api/v3/athlete/activities"] > 9  # more than three windows' worth
    for run_id, window in windows.items():
        assert landed[run_id] >= len(emulator_activity_ids(emulator, window.start, window.end)) > 0
