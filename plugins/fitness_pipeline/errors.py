"""What went wrong, sorted by what to do next, and the one place that turns it into an Airflow outcome.

Three families (after the Singer SDK's ``RetriableAPIError`` / ``FatalAPIError``):

``RetriableError``
    A later try may succeed: Airflow retries the task with its backoff (a 5xx that outlived the
    hook's own retries, a truncated or oddly shaped answer, a token endpoint that was down).
``ComeBackLater`` (a ``RetriableError``)
    Retrying will succeed, but not before ``retry_at`` (a rate limit). ``reset_known``: the API said
    when (Strava's 15-minute and daily windows), so the task may be rescheduled for that moment;
    otherwise (Google's 429 without ``Retry-After``) an ordinary retry with backoff is the better bet.
``NeedsPersonError``
    Retrying cannot help: the message says what a person has to do (re-authorize, fix the
    connection, confirm a mass deletion, look at a server that pages in a loop).

``ApiError`` is the base of everything the hooks raise about an API call (``.status`` is the HTTP
status, when there was one); its subclasses say the family: :class:`RetriableApiError`,
:class:`FatalApiError` (with :class:`AuthorizationError` and :class:`PaginationLoopError`) and
:class:`RateLimitError`. A bare ``ApiError`` is treated as retriable.

:func:`airflow_outcome` / :func:`raise_for_airflow` map the families to Airflow. Airflow is imported
lazily (through :mod:`fitness_pipeline.compat`): this module imports neither Airflow nor requests.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NoReturn

log = logging.getLogger(__name__)

#: 4xx statuses a later try may not see again (timeout, conflict, too early, too many requests)
RETRIABLE_4XX = frozenset({408, 409, 425, 429})


# --- the three families -----------------------------------------------------------------------


class RetriableError(RuntimeError):
    """A later try of the task may succeed: let Airflow retry it (with the task's backoff)."""


class ComeBackLater(RetriableError):
    """A try succeeds again from ``retry_at`` on (an aware UTC datetime), not before.

    ``reset_known``: the API said when (so rescheduling for ``retry_at`` is safe); otherwise
    ``retry_at`` is a guess and an ordinary retry with backoff serves better.
    """

    def __init__(self, message: str, retry_at: dt.datetime, *, reset_known: bool = True) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.reset_known = reset_known


class NeedsPersonError(RuntimeError):
    """Retrying cannot help: a person has to act, and the message says how."""


# --- errors of API calls --------------------------------------------------------------------------


class ApiError(RuntimeError):
    """An API call failed; the subclass says what to do next (a bare ``ApiError`` counts as retriable).

    ``status``: the HTTP status of the answer, or None (no answer, or not an HTTP matter).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetriableApiError(ApiError, RetriableError):
    """The API failed in a way a later try may not meet again (5xx after the hook's own retries,
    a body that is not JSON or not of the documented shape, a token endpoint that was down)."""


class FatalApiError(ApiError, NeedsPersonError):
    """The API refused the request itself (a 4xx other than 408/409/425/429): the same request
    gets the same answer on every try, so a person has to change something (see the message)."""


class AuthorizationError(FatalApiError):
    """The credentials were refused or lack a scope: a person has to re-authorize or fix the
    connection (the message says which)."""


class AuthorizationRevokedError(AuthorizationError):
    """The provider refused the athlete's own refresh token for good (revoked, or rotated away): only the athlete
    authorizing the app again helps. An athlete other than the default one is then marked inactive."""


class PaginationLoopError(FatalApiError):
    """A listing did not end: the server handed out a page token twice, or more pages than
    ``max_pages``. :class:`fitness_pipeline.hooks.base.PageGuard` says why this needs a person
    rather than a retry."""


class RateLimitError(ApiError, ComeBackLater):
    """A rate limit resets too far ahead to wait inside this try: come back at ``retry_at``."""

    def __init__(self, message: str, retry_at: dt.datetime, *, reset_known: bool = True) -> None:
        ComeBackLater.__init__(self, message, retry_at, reset_known=reset_known)
        self.status = 429


def error_class_for_status(status: int | None) -> type[ApiError]:
    """The family of an HTTP error the hook has no more specific class for: 4xx (but
    :data:`RETRIABLE_4XX`) are the request's fault and fatal; 5xx and no status are retriable."""
    if status is not None and 400 <= status < 500 and status not in RETRIABLE_4XX:
        return FatalApiError
    return RetriableApiError


# --- the Airflow outcome ----------------------------------------------------------------------------


def airflow_outcome(error: BaseException) -> BaseException:
    """The exception a task should raise for ``error`` (``error`` itself when Airflow's retries fit).

    - :class:`NeedsPersonError` (authorization, fatal 4xx, pagination loops, and whatever else
      subclasses it, e.g. the loader's mass-deletion guard): ``AirflowFailException`` with the same
      message, so the task fails at once instead of repeating the refusal on every retry.
    - :class:`ComeBackLater` with ``reset_known`` on Airflow 3: ``AirflowRescheduleException`` for
      ``retry_at`` (logged as a warning): the worker slot is given back until the reset, and the try
      is not used up. Airflow 2 ignores ``reschedule_date`` for tasks that are not sensors (it would run
      the task again at once and spend quota), and an unknown reset is better served by backoff: then,
      as for everything else (retriable errors, errors of no family), ``error`` itself.

    Use :func:`raise_for_airflow` in an ``except`` block; this function only decides (and logs).
    """
    if isinstance(error, NeedsPersonError):
        from fitness_pipeline.compat import AirflowFailException

        return AirflowFailException(str(error))
    if isinstance(error, ComeBackLater):
        from fitness_pipeline.compat import AIRFLOW_3, AirflowRescheduleException

        if AIRFLOW_3 and error.reset_known:
            log.warning("%s Rescheduled for %s.", error, error.retry_at)
            return AirflowRescheduleException(reschedule_date=error.retry_at)
    return error


def raise_for_airflow(error: BaseException) -> NoReturn:
    """Raise :func:`airflow_outcome` of ``error``, chained to it; ``error`` itself when it stays.

    In a task: ``except Exception as error: raise_for_airflow(error)``.
    """
    outcome = airflow_outcome(error)
    if outcome is error:
        raise error
    raise outcome from error
