"""Airflow hooks for the upstream APIs."""

from fitness_pipeline.hooks.base import ApiError, AuthorizationError, RateLimitError
from fitness_pipeline.hooks.strava import StravaHook

__all__ = ["ApiError", "AuthorizationError", "RateLimitError", "StravaHook"]
