"""The training page's FastAPI app, mounted by Airflow 3's API server at ``/training``.

Routes (all GET, all behind Airflow's login, see :func:`create_app`):

- ``/`` the page (``static/index.html``), ``/static/{path}`` its files;
- ``/api/calendar?month=YYYY-MM`` (default: this month) or ``?start=YYYY-MM-DD&weeks=N`` (1-60, default 6):
  every ISO week touching the month (or N weeks from ``start``'s week), day by day, with week totals;
- ``/api/trends?weeks=N`` (1-520, default 52, ending this week);
- ``/api/sync``: sync health, quarantine (no payloads), OAuth token times, rate-limit usage;
- ``/api/athletes``: the athletes the logged-in Airflow user may see (table ``athlete``, ``airflow_users``);
- ``/api/activity?id=N``: one activity with its detail (calories burned, description, device, gear) and laps.

The data routes show one athlete: ``athlete=<id>`` (default: the first the user may see). An athlete the user
may not see is a 404, as one that does not exist; a user who may see none gets a 403 saying who can map them.

``calendar`` and ``trends`` also take ``today=YYYY-MM-DD`` (the browser's local date; default: the
server's), which decides the current week and the year to date.

Each data request runs its queries (:mod:`fitness_pipeline.ui.queries`) in one read-only transaction on
the ``fitness_db`` connection with a 2 s statement timeout, in FastAPI's thread pool (plain ``def``
routes). A bad parameter is a 422 with a message saying what is accepted; a database that does not have
the views yet (before the first run of ``fitness_sync``), a missing connection or a timed-out query is
a 503 with a message, never a traceback. Nothing about the data, the parameters or the user is logged.

This module imports no FastAPI and no Airflow API at module level (it is imported on Airflow 2.11 too).
"""

import datetime as dt
import logging
import mimetypes
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
#: the DAG whose readers may see the page: it loaded the data
DAG_ID = "fitness_sync"

#: media types by suffix, not left to the host's /etc/mime.types
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
               ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2", ".woff": "font/woff",
               ".txt": "text/plain; charset=utf-8"}
#: personal data: never cached by a shared cache, not kept by the browser either
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
STATIC_HEADERS = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}

# SQLSTATEs that mean "this database is not (fully) set up for the page yet"
_SCHEMA_MISSING = {"42P01", "42703", "3F000"}  # undefined table / column, invalid schema
_CANCELLED = {"57014", "55P03"}  # statement timeout, lock timeout


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def static_file(relative: str) -> Path | None:
    """The file ``relative`` to :data:`STATIC_DIR`, or None if it is not a file inside it (``..``,
    absolute paths and symlinks out of it included)."""
    if not relative or "\x00" in relative or len(relative) > 200:
        return None
    root = STATIC_DIR.resolve()
    try:
        candidate = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg 3 or psycopg2 error (or of its cause), if any."""
    for candidate in (error, error.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


class Unavailable(Exception):
    """The data cannot be read now; ``message`` tells the user why (no details of the data)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def run_query(query: Any, *args: Any) -> Any:
    """``query(cursor, *args)`` in a read-only transaction on ``fitness_db``; database trouble becomes
    :class:`Unavailable` (logged by its SQLSTATE or exception class only)."""
    from fitness_pipeline.ui import queries

    try:
        with queries.read_only() as cursor:
            return query(cursor, *args)
    except Exception as error:
        if type(error).__name__ == "AirflowNotFoundException":
            log.warning("training page: the Airflow connection %r is not defined", queries.FITNESS_DB_CONN_ID)
            raise Unavailable("no_connection", f"The Airflow connection {queries.FITNESS_DB_CONN_ID!r} is not "
                                               "defined: it should point at the fitness database.") from None
        state = _sqlstate(error)
        if state in _SCHEMA_MISSING:
            log.info("training page: the fitness database has no training views yet (SQLSTATE %s)", state)
            raise Unavailable("no_schema", "The fitness database has no training data yet: the views are "
                                           "created by the first run of the fitness_sync DAG (its "
                                           "ensure_schema task). Trigger or unpause fitness_sync, then "
                                           "reload.") from None
        if state in _CANCELLED:
            log.warning("training page: a query was cancelled (SQLSTATE %s)", state)
            raise Unavailable("timeout", "The fitness database did not answer in time; try again.") from None
        if state is not None or type(error).__module__.split(".")[0] in ("psycopg", "psycopg2"):
            log.warning("training page: database error %s (SQLSTATE %s)", type(error).__name__, state)
            raise Unavailable("database", "The fitness database cannot be read right now.") from None
        raise


def create_app() -> Any:
    """The FastAPI app (Airflow 3 only). Every route depends on Airflow's login: the user of the
    ``Authorization: Bearer`` JWT or the ``_token`` cookie must be allowed to read ``fitness_sync``'s
    runs (``requires_access_dag("GET", DagAccessEntity.RUN, "fitness_sync")``). No OpenAPI or docs routes."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse

    from fitness_pipeline.ui import queries

    requires_login = requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID)
    app = FastAPI(title="Training", docs_url=None, redoc_url=None, openapi_url=None,
                  swagger_ui_oauth2_redirect_url=None,
                  dependencies=[Depends(requires_login)])
    #: the auth dependency, for ``app.dependency_overrides`` in benchmarks
    app.state.requires_login = requires_login

    @app.exception_handler(queries.ParamError)
    def bad_parameter(request: Request, error: queries.ParamError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422, headers=NO_STORE)

    @app.exception_handler(queries.NotShown)
    def not_shown(request: Request, error: queries.NotShown) -> JSONResponse:
        return JSONResponse({"detail": error.message, "code": error.code}, status_code=error.status,
                            headers=NO_STORE)

    @app.exception_handler(Unavailable)
    def unavailable(request: Request, error: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": error.message, "code": error.code}, status_code=503, headers=NO_STORE)

    def data(payload: dict[str, Any]) -> JSONResponse:
        return JSONResponse(payload, headers=NO_STORE)

    def today_or(value: str | None) -> dt.date:
        return queries.parse_date(value, "today") if value is not None else dt.date.today()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        index = STATIC_DIR / INDEX
        if not index.is_file():
            raise HTTPException(404, "the page's files are missing from this installation")
        return FileResponse(index, media_type=MEDIA_TYPES[".html"], headers=STATIC_HEADERS)

    @app.get("/static/{path:path}", include_in_schema=False)
    def static(path: str) -> FileResponse:
        found = static_file(path)
        if found is None:
            raise HTTPException(404, "Not Found")
        return FileResponse(found, media_type=media_type(found), headers=STATIC_HEADERS)

    def user_name(user: Annotated[Any, Depends(get_user)]) -> str:
        return str(user.get_name())

    #: the Airflow user asking: which athletes they may see is in the athlete table
    UserName = Annotated[str, Depends(user_name)]
    #: the user's name dependency, for ``app.dependency_overrides`` in benchmarks and tests
    app.state.user_name = user_name

    @app.get("/api/athletes")
    def athletes(user: UserName) -> JSONResponse:
        return data({"athletes": run_query(queries.athletes_shown, user)})

    @app.get("/api/calendar")
    def calendar(user: UserName, month: str | None = None, start: str | None = None, weeks: str | None = None,
                 today: str | None = None, athlete: str | None = None) -> JSONResponse:
        now = today_or(today)
        if month is not None and (start is not None or weeks is not None):
            raise queries.ParamError("give either month=YYYY-MM or start=YYYY-MM-DD (with weeks=N), not both")
        if start is not None:
            first_week = queries.monday(queries.parse_date(start, "start"))
            count = queries.parse_weeks(weeks, queries.MAX_CALENDAR_WEEKS, queries.DEFAULT_CALENDAR_WEEKS)
        elif weeks is not None:
            raise queries.ParamError("weeks goes with start=YYYY-MM-DD")
        else:
            first_week, count = queries.month_weeks(
                queries.parse_month(month) if month is not None else now.replace(day=1))
        return data(run_query(queries.for_athlete, user, athlete, queries.calendar, first_week, count, now))

    @app.get("/api/trends")
    def trends(user: UserName, weeks: str | None = None, today: str | None = None,
               athlete: str | None = None) -> JSONResponse:
        count = queries.parse_weeks(weeks, queries.MAX_TREND_WEEKS, queries.DEFAULT_TREND_WEEKS)
        return data(run_query(queries.for_athlete, user, athlete, queries.trends, count, today_or(today)))

    @app.get("/api/activity")
    def activity(user: UserName, id: str | None = None, athlete: str | None = None) -> JSONResponse:
        activity_id = queries.parse_activity_id(id)
        return data(run_query(queries.for_athlete, user, athlete, queries.activity, activity_id))

    @app.get("/api/sync")
    def sync(user: UserName, athlete: str | None = None) -> JSONResponse:
        return data(run_query(queries.for_athlete, user, athlete, queries.sync))

    # last: any other path or method is a 404/405 only after the login check (an anonymous request learns
    # nothing about which routes exist), and no trailing-slash redirect answers before it either
    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                   include_in_schema=False)
    def elsewhere(path: str, request: Request) -> JSONResponse:
        known = {route.path for route in app.routes if getattr(route, "path", "") != "/{path:path}"}
        if f"/{path}" in known:
            return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=NO_STORE)
        return JSONResponse({"detail": "Not Found"}, status_code=404, headers=NO_STORE)

    return app
