"""fitness_pipeline.errors: the families, and what Airflow is told for each."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from fitness_pipeline import compat, errors
from fitness_pipeline.errors import (
    ApiError,
    AuthorizationError,
    ComeBackLater,
    FatalApiError,
    NeedsPersonError,
    PaginationLoopError,
    RateLimitError,
    RetriableApiError,
    RetriableError,
    airflow_outcome,
    error_class_for_status,
    raise_for_airflow,
)

RESET = dt.datetime(2026, 11, 20, 12, 15, tzinfo=dt.UTC)


class MassDeletionLike(NeedsPersonError):
    """What the loader's MassDeletionError becomes: any NeedsPersonError fails the task."""


def test_families() -> None:
    assert issubclass(AuthorizationError, FatalApiError) and issubclass(FatalApiError, NeedsPersonError)
    assert issubclass(PaginationLoopError, NeedsPersonError)
    assert issubclass(RetriableApiError, RetriableError)
    assert issubclass(RateLimitError, ComeBackLater) and issubclass(ComeBackLater, RetriableError)
    assert not issubclass(RateLimitError, NeedsPersonError)  # the retry signal is no "retrying will not help"
    for cls in (AuthorizationError, FatalApiError, RetriableApiError, RateLimitError, PaginationLoopError):
        assert issubclass(cls, ApiError)
    # the names tasks and tests import from the hooks are these very classes
    from fitness_pipeline.hooks import base

    assert (base.ApiError, base.AuthorizationError, base.RateLimitError) == (ApiError, AuthorizationError,
                                                                             RateLimitError)


def test_attributes() -> None:
    limited = RateLimitError("limited", RESET, reset_known=False)
    assert (str(limited), limited.status, limited.retry_at, limited.reset_known) == ("limited", 429, RESET, False)
    assert RateLimitError("limited", RESET).reset_known
    assert AuthorizationError("who?", status=401).status == 401
    assert ApiError("x").status is None


@pytest.mark.parametrize(("status", "expected"), [
    (400, FatalApiError), (403, FatalApiError), (404, FatalApiError), (410, FatalApiError),
    (408, RetriableApiError), (409, RetriableApiError), (425, RetriableApiError), (429, RetriableApiError),
    (500, RetriableApiError), (503, RetriableApiError), (None, RetriableApiError),
])
def test_error_class_for_status(status: int | None, expected: type) -> None:
    assert error_class_for_status(status) is expected


@pytest.mark.parametrize("error", [
    AuthorizationError("re-authorize", status=400), FatalApiError("bad filter", status=400),
    PaginationLoopError("loops"), MassDeletionLike("refused to mark 80% deleted"),
])
def test_needs_a_person_fails_the_task(error: Exception) -> None:
    outcome = airflow_outcome(error)
    assert isinstance(outcome, compat.AirflowFailException)
    assert str(outcome) == str(error)


def test_known_reset_on_airflow_3_reschedules(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(compat, "AIRFLOW_3", True)
    caplog.set_level(logging.WARNING, logger="fitness_pipeline.errors")
    error = RateLimitError("Strava rate limit: the read limit reached.", RESET)
    outcome = airflow_outcome(error)
    assert isinstance(outcome, compat.AirflowRescheduleException)
    assert outcome.reschedule_date == RESET
    assert f"Strava rate limit: the read limit reached. Rescheduled for {RESET}." in caplog.messages


@pytest.mark.parametrize(("airflow_3", "reset_known"), [(True, False), (False, True), (False, False)])
def test_unknown_reset_or_airflow_2_retries(airflow_3: bool, reset_known: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "AIRFLOW_3", airflow_3)
    error = RateLimitError("limited", RESET, reset_known=reset_known)
    assert airflow_outcome(error) is error


@pytest.mark.parametrize("error", [
    RetriableApiError("502", status=502), ApiError("no family"), ValueError("a bug"),
    ComeBackLater("later", RESET, reset_known=False),
])
def test_everything_else_is_raised_as_it_is(error: Exception) -> None:
    assert airflow_outcome(error) is error


def test_raise_for_airflow_chains_the_cause() -> None:
    error = AuthorizationError("re-authorize")
    with pytest.raises(compat.AirflowFailException) as raised:
        raise_for_airflow(error)
    assert raised.value.__cause__ is error
    retriable = RetriableApiError("503")
    with pytest.raises(RetriableApiError) as raised_again:
        raise_for_airflow(retriable)
    assert raised_again.value is retriable and retriable.__cause__ is None


def test_errors_module_imports_neither_airflow_nor_requests() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, fitness_pipeline.errors, fitness_pipeline.apis; "
            "print(sorted(m for m in ('airflow', 'requests') if m in sys.modules))")
    plugins = str(Path(errors.__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": plugins}).stdout
    assert out.strip() == "[]"
