"""Airflow hooks for the upstream APIs (their errors: :mod:`fitness_pipeline.errors`)."""

from fitness_pipeline.hooks.base import (
    ApiError,
    AuthorizationError,
    FatalApiError,
    PaginationLoopError,
    RateLimitError,
    RetriableApiError,
)
from fitness_pipeline.hooks.strava import StravaHook

__all__ = ["ApiError", "AuthorizationError", "FatalApiError", "PaginationLoopError", "RateLimitError",
           "RetriableApiError", "StravaHook"]
