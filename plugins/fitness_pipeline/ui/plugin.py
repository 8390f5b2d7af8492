"""What the training page registers with Airflow 3: a FastAPI app and a navigation entry.

The ``AirflowPlugin`` itself is ``plugins/training_plugin.py`` (one class in one file: Airflow's plugins
manager imports every ``.py`` under the plugins folder and registers each ``AirflowPlugin`` subclass it
finds in a module, so a second reference to the class would register it twice). On Airflow 2 there is
no page: :func:`fastapi_apps` and :func:`external_views` are only called on Airflow 3.

Checked against Airflow 3.3.2 (``airflow/api_fastapi/core_api/datamodels/plugins.py``): a fastapi app is
``{"app", "url_prefix", "name"}``; an external view ``{"name", "href", "destination", "url_route",
"category", "icon", "icon_dark_mode"}`` with destination ``nav`` and category ``browse``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

PLUGIN_NAME = "fitness_training"
URL_PREFIX = "/training"
URL_ROUTE = "training"
VIEW_NAME = "Training"

_ICON = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='{color}' "
         "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'><rect x='3' y='4' width='18' "
         "height='17' rx='2'/><path d='M3 9h18M8 2v4M16 2v4M7 13h2M11 13h2M15 13h2M7 17h2M11 17h2'/></svg>")


def icon(color: str) -> str:
    """A calendar icon as a ``data:`` URL (the nav shows it with ``<img>``; no request to fetch it)."""
    return "data:image/svg+xml," + quote(_ICON.format(color=color), safe="/:='")


class TrainingApp:
    """The ASGI app Airflow mounts: :func:`fitness_pipeline.ui.app.create_app`'s FastAPI app, built on the
    first request. Airflow loads plugins in every process (scheduler, DAG processor, each task), and only
    the API server serves this app: elsewhere, importing FastAPI and Airflow's API security (~0.5 s) would
    be wasted."""

    def __init__(self) -> None:
        self._app: Any = None

    @property
    def app(self) -> Any:
        """The FastAPI app (built now if it was not yet)."""
        if self._app is None:
            from fitness_pipeline.ui.app import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def fastapi_apps() -> list[dict[str, Any]]:
    """The app, mounted at ``/training`` by the API server (Airflow 3 only)."""
    return [{"app": TrainingApp(), "url_prefix": URL_PREFIX, "name": VIEW_NAME}]


def external_views() -> list[dict[str, Any]]:
    """Browse > Training: the page inside Airflow's UI at ``/plugin/training`` (an iframe of ``training/``,
    relative to ``[api] base_url``)."""
    return [{"name": VIEW_NAME, "href": "training/", "destination": "nav", "category": "browse",
             "url_route": URL_ROUTE, "icon": icon("#51504f"), "icon_dark_mode": icon("#e2e2e2")}]
