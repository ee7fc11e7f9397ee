"""The admin API under ``/admin/rollouts``: the same operations as ``ridecast rollout``.

Every call needs ``Authorization: Bearer <token>`` (``RIDECAST_ADMIN_TOKEN`` or the file named by
``RIDECAST_ADMIN_TOKEN_FILE``), compared in constant time: no token gets 401, a wrong one 403.
With no token configured the admin API is off (404 says how to turn it on). ``POST /feedback``
uses the same check with its own token (``RIDECAST_FEEDBACK_TOKEN``, default: the admin token),
because whoever can post feedback can steer a canary.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ridecast.errors import RidecastError

if TYPE_CHECKING:
    from ridecast.web.app import ServingProcess

TAG = "rollouts (admin)"


def check_token(
    request: Request, token: str | None, what: str
) -> tuple[int, dict[str, Any]] | None:
    """None when the request may pass; else (status, body)."""
    if token is None:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, {"detail": f"{what} needs 'Authorization: Bearer <token>'"}
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 403, {"detail": f"the bearer token is not valid for {what}"}
    return None


def _json(status: int, content: Any) -> Response:
    return Response(
        orjson.dumps(content, default=str), status_code=status, media_type="application/json"
    )


def add_routes(api: FastAPI, service: ServingProcess) -> None:
    from ridecast.control import ops

    settings = service.settings

    def denied(request: Request) -> Response | None:
        if service.admin_token is None:
            return _json(
                404,
                {
                    "detail": "the admin API is off; set RIDECAST_ADMIN_TOKEN (or "
                    "RIDECAST_ADMIN_TOKEN_FILE) to turn it on"
                },
            )
        problem = check_token(request, service.admin_token, "the admin API")
        return None if problem is None else _json(*problem)

    async def call(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Response:
        refused = denied(request)
        if refused is not None:
            return refused
        accepted = inspect.signature(fn).parameters
        for name, value in (("registry", service.registry), ("store", service.store)):
            if name in accepted:
                kwargs[name] = value
        if "actor" in accepted:
            kwargs.setdefault("actor", "admin-api")
        try:
            result = await asyncio.to_thread(fn, settings, *args, **kwargs)
        except RidecastError as exc:
            status = 409 if "already has an active rollout" in str(exc) else 422
            if "no rollout" in str(exc).lower():
                status = 404
            return _json(status, {"detail": str(exc)})
        if hasattr(result, "to_dict"):
            result = ops.describe(result, service.store)
        return _json(200, result)

    @api.get("/admin/rollouts", tags=[TAG], summary="Status of the current rollout")
    async def rollout_status(request: Request, model: str | None = None) -> Response:
        return await call(request, ops.status, model)

    @api.post("/admin/rollouts", tags=[TAG], summary="Start a rollout from its YAML file")
    async def rollout_start(request: Request) -> Response:
        """Body: the rollout file (YAML or JSON), as `ridecast rollout start FILE` reads it."""
        body = (await request.body()).decode("utf-8", "replace")
        return await call(request, ops.start, body)

    @api.get(
        "/admin/rollouts/{model}/history", tags=[TAG], summary="Transitions with their reasons"
    )
    async def rollout_history(request: Request, model: str) -> Response:
        return await call(request, ops.history, model)

    def acting(action: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def act(request: Request, model: str) -> Response:
            kwargs: dict[str, Any] = {"model_or_id": model}
            if action == "abort":
                kwargs["reason"] = request.query_params.get("reason") or "aborted by the admin API"
            return await call(request, getattr(ops, action), **kwargs)

        return act

    for action in ("promote", "abort", "pause", "resume"):
        api.add_api_route(
            f"/admin/rollouts/{{model}}/{action}",
            acting(action),
            methods=["POST"],
            tags=[TAG],
            summary=f"{action.capitalize()} the model's rollout",
        )
