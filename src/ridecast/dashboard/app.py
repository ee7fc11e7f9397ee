"""The dashboard as an ASGI app: four pages, their JSON, and the static files (uPlot vendored).

Mounted by the web service at ``/dashboard`` and served on its own by ``ridecast dashboard``
(:func:`standalone_app`, which redirects ``/`` there), so its URLs are the same everywhere:

=======================  ==============================================================
``GET /dashboard/``      the live service page (``rollouts``, ``batch``, ``drift`` beside it)
``GET …/api/live``       ``?model=ride-duration&window=15m``
``GET …/api/rollouts``   ``?id=ROLLOUT`` (default: the active rollout, else the latest)
``GET …/api/batch``      every published batch run
``GET …/api/drift``      ``?subject=green:2025-03`` or ``?subject=last:1000``
=======================  ==============================================================

Every JSON answer is 200 with ``"empty": true`` when there is nothing to show yet; a database
that cannot be read gets 503 with a one-line ``error``. Queries run on the thread pool, never
on the event loop that answers predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ridecast.dashboard import pages
from ridecast.dashboard.batches import batch_view
from ridecast.dashboard.drift import DriftReports, drift_view
from ridecast.dashboard.live import DEFAULT_WINDOW, live_view
from ridecast.dashboard.rollouts import rollouts_view
from ridecast.dashboard.sources import Sources
from ridecast.monitoring.database import first_line

if TYPE_CHECKING:
    from ridecast.registry import Registry
    from ridecast.settings import Settings

log = logging.getLogger("ridecast.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
MOUNT = "/dashboard"
# Only this origin's own files: no CDN, and nothing a page could be talked into loading.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=SECURITY_HEADERS,
    )


class Dashboard:
    """The state the routes share: where the data is, and the drift reports kept so far."""

    def __init__(self, sources: Sources, drift: DriftReports) -> None:
        self.sources = sources
        self.drift = drift

    async def _answer(self, what: str, read: Callable[[], dict[str, Any]]) -> Response:
        try:
            return _json(await run_in_threadpool(read))
        except Exception as exc:
            message = f"cannot read the {what} from {self.sources.describe()}: {first_line(exc)}"
            log.warning("dashboard: %s", message)
            return _json({"error": message}, status=503)

    async def live(self, request: Request) -> Response:
        query = request.query_params
        model, window = query.get("model"), query.get("window", DEFAULT_WINDOW)
        return await self._answer("prediction log", lambda: live_view(self.sources, model, window))

    async def rollouts(self, request: Request) -> Response:
        rollout_id = request.query_params.get("id")
        return await self._answer(
            "rollout state", lambda: rollouts_view(self.sources, rollout_id or None)
        )

    async def batch(self, request: Request) -> Response:
        return await self._answer("batch results", lambda: batch_view(self.sources))

    async def drift_reports(self, request: Request) -> Response:
        subject = request.query_params.get("subject")
        return await self._answer("drift reports", lambda: drift_view(self.drift, subject))


def _page(name: str) -> Callable[[Request], Any]:
    html = pages.render(name)

    async def page(_request: Request) -> Response:
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    return page


def create_dashboard(
    settings: Settings,
    *,
    log_url: str | None = None,
    state_url: str | None = None,
    registry: Registry | None = None,
) -> Starlette:
    """The dashboard over ``log_url`` (default: the settings' prediction log) and ``state_url``
    (default: the settings' state URL, or ``log_url`` when that was given). ``registry`` (a
    serving process's) lets drift reports reuse its loaded models."""
    log_url = log_url or settings.resolved_prediction_log_url
    if state_url is None:
        state_url = settings.state_url or log_url
    if log_url != settings.resolved_prediction_log_url:
        settings = settings.model_copy(update={"prediction_log_url": log_url})
    sources = Sources(log_url, state_url)
    dashboard = Dashboard(sources, DriftReports(settings, registry, sources))
    routes: list[BaseRoute] = [
        Route(f"/{path}", _page(name)) for path, name, _label, _title in pages.PAGES
    ]
    routes += [
        Route("/api/live", dashboard.live),
        Route("/api/rollouts", dashboard.rollouts),
        Route("/api/batch", dashboard.batch),
        Route("/api/drift", dashboard.drift_reports),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = dashboard
    return app


def standalone_app(dashboard: Starlette) -> Starlette:
    """``ridecast dashboard``: ``dashboard`` at ``/dashboard/``, and ``/`` pointing there."""

    async def home(_request: Request) -> Response:
        return RedirectResponse(f"{MOUNT}/")

    return Starlette(routes=[Route("/", home), Mount(MOUNT, dashboard)])
