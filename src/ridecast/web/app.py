"""The web service: one ASGI app that speaks the course's API, MLflow's and OIP v2.

Read top to bottom, a request goes: body → protocol adapter (validated rides) → model slot
(micro-batched for single rides) → protocol adapter (response body). Metrics are a dict update
per request (added to prometheus_client every second); the prediction log is a queue append per
model call.

``POST /predict`` is the hot path: :class:`RidecastApp` answers it in plain ASGI, in front of the
FastAPI app that serves every other route and the OpenAPI page (where ``/predict`` is documented
by a route that runs the same code).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ridecast import __version__
from ridecast.control.store import store_for
from ridecast.dashboard.app import create_dashboard
from ridecast.errors import ModelError
from ridecast.monitoring import PredictionLog
from ridecast.monitoring.metrics import RequestTally, exposition, web_metrics
from ridecast.registry import ModelRef, Registry, parse_model_uri
from ridecast.settings import Settings, get_settings
from ridecast.web import admin, lifecycle, validation
from ridecast.web.protocols import mlflow as mlflow_protocol
from ridecast.web.protocols import oip, seed
from ridecast.web.shadow import ShadowRunner
from ridecast.web.slots import ModelSlot, NotLoaded
from ridecast.web.validation import InvalidInput, RideBatch

if TYPE_CHECKING:
    from ridecast.control.controller import Controller
    from ridecast.control.follower import Deployment

log = logging.getLogger("ridecast.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"
PREVIEW_HEADER = b"x-ridecast-preview"
FEEDBACK_TARGETS = {"actual_duration": "duration", "actual_tip": "tip", "actual_cost": "cost"}


class ServingProcess:
    """Everything a serving process holds: the model slots (each following its alias and its
    rollout), the shadow runner, metrics, the prediction log and the rollout controller."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        worker: int | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.registry = registry or Registry(settings)
        self.refs = parse_model_refs(settings.serve_models)
        self.max_rides = settings.serve_max_rides
        self.max_body = settings.serve_max_body_bytes
        self.tally = RequestTally()
        # Set (by `ridecast serve --workers N`) when the workers share their metrics.
        self.metrics_dir = settings.metrics_multiprocess_dir
        self.prediction_log: PredictionLog | None = None
        self.store = store_for(settings)
        self.shadow = ShadowRunner(web_metrics(), None, maxsize=settings.shadow_queue_size)
        # Every process follows its models' rollouts; the watch interval paces only the alias
        # checks between rollout changes, and 0 turns those off (no hot reload of a moved alias).
        watch, follow = settings.serve_watch_interval, settings.rollout_follow_interval
        interval = min(watch, follow) if watch > 0 else follow
        self.slots: dict[str, ModelSlot] = {}
        for ref in self.refs:
            self.slots[ref.name] = ModelSlot(
                ref,
                self.registry,
                tally=self.tally,
                prediction_log=None,
                store=self.store,
                shadow=self.shadow,
                batching=settings.serve_batching,
                max_batch_size=settings.serve_max_batch_size,
                max_batch_time=settings.serve_max_batch_time_ms / 1000.0,
                follow_interval=interval,
                alias_interval=watch if watch > 0 else math.inf,
                worker=worker,
            )
        self.default = self.slots[self.refs[0].name]
        self.controller: Controller | None = None
        self.admin_token = settings.resolved_admin_token
        self.feedback_token = settings.resolved_feedback_token
        self.started = False
        self.draining = False

    # --- lifecycle ---

    def start(self) -> None:
        """Load and warm every model (raises ModelError), then start the background threads."""
        for slot in self.slots.values():
            if not slot.ready:
                slot.load()
        self.prediction_log = PredictionLog(self.settings.resolved_prediction_log_url).start()
        if self.settings.serve_log_predictions:
            for slot in self.slots.values():
                slot.prediction_log = self.prediction_log
            self.shadow.prediction_log = self.prediction_log
        self.shadow.start()
        for slot in self.slots.values():
            slot.start_following()
        if self.settings.rollout_controller:
            from ridecast.control.controller import Controller

            self.controller = Controller(self.settings, self.registry, self.store)
            self.controller.start()
        self.tally.start()
        lifecycle.DRAIN_HOOKS.append(self.begin_drain)
        self.started = True
        # What start-up built (MLflow, numpy, the models) lives as long as the process: moved out
        # of the collector's reach, a full collection no longer walks it and stalls every request
        # in flight (tens of ms, seen as p99).
        gc.collect()
        gc.freeze()
        versions = ", ".join(f"{s.name} v{s.version}" for s in self.slots.values())
        log.info("serving %s (pid %d)", versions, os.getpid())

    def begin_drain(self) -> None:
        self.draining = True

    def stop(self) -> None:
        self.draining = True
        if self.controller is not None:
            self.controller.stop()
        for slot in self.slots.values():
            slot.stop_following()
            slot.flush_answers()  # before the shadow runner and the log close
        if self.begin_drain in lifecycle.DRAIN_HOOKS:
            lifecycle.DRAIN_HOOKS.remove(self.begin_drain)
        self.shadow.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.tally.stop()

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and all(s.ready for s in self.slots.values())

    def not_ready_reason(self) -> str:
        if self.draining:
            return "shutting down"
        if not self.started:
            return "models are loading"
        return "a model is not loaded"

    # --- the protocols' data plane ---

    async def predict_seed(
        self, slot: ModelSlot, body: bytes, started: float, preview: bool = False
    ) -> tuple[int, bytes, str]:
        try:
            parsed = seed.parse(body, self.max_rides)
            if type(parsed) is tuple:
                pu, do, distance, ride_id, user_id = parsed
                value, version = await slot.predict_one(
                    pu, do, distance, ride_id, user_id, started, preview=preview
                )
                return 200, seed.encode_one(slot.target, value, version, ride_id, user_id), version
            assert isinstance(parsed, RideBatch)
            values, versions = self.predict_batch(
                slot, parsed, "web:/predict", started, preview=preview
            )
            content = seed.encode_many(slot.target, values, versions, parsed)
            return 200, content, versions if isinstance(versions, str) else "mixed"
        except InvalidInput as exc:
            return exc.status, orjson.dumps(exc.body()), ""
        except NotLoaded as exc:
            return 503, orjson.dumps({"detail": f"{exc}; retry shortly"}), ""

    def predict_batch(
        self,
        slot: ModelSlot,
        batch: RideBatch,
        source: str,
        started: float,
        *,
        version: str | None = None,
        preview: bool = False,
    ) -> tuple[list[float], list[str] | str]:
        predictions, versions = slot.predict(
            batch.arrays(),
            source=source,
            started=started,
            ride_ids=batch.ride_ids if batch.has_ids else None,
            user_ids=batch.user_ids if batch.has_ids else None,
            version=version,
            preview=preview,
        )
        return predictions.tolist(), versions

    def slot_named(self, name: str) -> ModelSlot | None:
        return self.slots.get(name)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not ready",
            **({} if self.ready else {"reason": self.not_ready_reason()}),
            "pid": os.getpid(),
            "worker": self.worker,
            "models": {s.name: self._slot_health(s) for s in self.slots.values()},
            "shadow": {
                "answered": self.shadow.answered,
                "dropped": self.shadow.dropped,
                "failed": self.shadow.failed,
                "pending": self.shadow.pending,
            },
            "rollout_state": self.store.safe_url,
            "prediction_log": None
            if self.prediction_log is None
            else {
                "url": self.prediction_log.safe_url,
                "logging_predictions": self.settings.serve_log_predictions,
                "written": self.prediction_log.written,
                "pending": self.prediction_log.pending,
                "dropped": self.prediction_log.dropped,
                "last_error": self.prediction_log.last_error,
                "feedback": dict(self.prediction_log.feedback_counts),
            },
        }

    @staticmethod
    def _slot_health(slot: ModelSlot) -> dict[str, Any]:
        follower = slot.follower
        deployment = follower.current if follower.ready else None
        state = deployment.state if deployment is not None else None
        return {
            "uri": slot.ref.uri,
            "version": slot.version or None,
            "target": slot.target or None,
            "loaded_versions": sorted(deployment.predictors) if deployment else [],
            "answering": _answering(deployment),
            "rollout": None
            if state is None
            else {
                "id": state.id,
                "strategy": state.strategy,
                "phase": state.phase,
                "step": state.step,
                "weights": state.weights,
                "shadow_percent": state.shadow_percent,
                "preview": state.preview,
            },
            "loaded_at": follower.loaded_at,
            "last_check": follower.last_check,
            "last_error": follower.last_error,
            "batches": slot.batches,
        }


def _answering(deployment: Deployment | None) -> str | None:
    """The version this process answers with when that does not depend on the rider: no
    rollout, or a rolling one (which moves whole workers)."""
    if deployment is None:
        return None
    if deployment.state is None:
        return deployment.router.stable.version
    if deployment.state.strategy == "rolling":
        return deployment.router.route("").version
    return None


def parse_model_refs(text: str) -> list[ModelRef]:
    refs = [parse_model_uri(part) for part in text.split(",") if part.strip()]
    if not refs:
        raise ModelError("no model to serve; pass --model models:/ride-duration@champion")
    names = [r.name for r in refs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(
            f"model {duplicates[0]} is given twice; a server serves one version of each model "
            "(use the rollout commands to serve two versions)"
        )
    return refs


# A request over the size limit is read to its end, up to this many bytes, before the 413 goes
# out: a client that writes its whole body before reading (urllib, curl without Expect) then
# reads the answer instead of a connection reset. Beyond this the connection is simply closed.
DRAIN_BYTES = 32 * 1024 * 1024


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or InvalidInput(413) once it passes ``limit`` bytes (after
    draining the rest of the body, up to :data:`DRAIN_BYTES`)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _drain(receive, message, size)
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(receive: Receive, message: MutableMapping[str, Any], size: int) -> None:
    """Read and drop the rest of a refused body, up to DRAIN_BYTES in all."""
    while message.get("more_body", False) and size <= DRAIN_BYTES:
        message = await receive()
        size += len(message.get("body", b""))


def _replay(first: MutableMapping[str, Any], receive: Receive) -> Receive:
    """``receive`` that hands out an already received message first."""
    pending = [first]

    async def again() -> MutableMapping[str, Any]:
        return pending.pop() if pending else await receive()

    return again


def _too_large(limit: int) -> InvalidInput:
    return InvalidInput.one(
        ("body",),
        f"the body is larger than {limit} bytes; split the request "
        "(or raise RIDECAST_SERVE_MAX_BODY_BYTES)",
        "too_large",
        status=413,
    )


class RidecastApp:
    """The ASGI entry point: ``POST /predict`` in plain ASGI, everything else via FastAPI."""

    def __init__(self, service: ServingProcess, api: FastAPI) -> None:
        self.service = service
        self.api = api
        self.tally = service.tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/predict":
                await self._predict(self.service.default, scope, receive, send)
                return
            if path.startswith("/predict/"):
                slot = self.service.slot_named(path[9:])
                if slot is not None:
                    await self._predict(slot, scope, receive, send)
                    return
            if path.startswith("/preview/predict"):
                name = path[17:]
                slot = self.service.default if not name else self.service.slot_named(name)
                if slot is not None:
                    await self._predict(slot, scope, receive, send, preview=True)
                    return
        await self.api(scope, receive, send)

    async def _predict(
        self, slot: ModelSlot, scope: Scope, receive: Receive, send: Send, preview: bool = False
    ) -> None:
        started = time.perf_counter()
        if not preview:
            for key, value in scope["headers"]:
                if key == PREVIEW_HEADER:
                    preview = value.strip().lower() in (b"1", b"true", b"yes", b"candidate")
        try:
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False) or len(body) > self.service.max_body:
                body = await read_body(_replay(message, receive), self.service.max_body)
            status, content, version = await self.service.predict_seed(slot, body, started, preview)
        except InvalidInput as exc:
            status, content, version = exc.status, orjson.dumps(exc.body()), ""
        except Exception:
            log.exception("POST /predict failed")
            status, content, version = 500, b'{"detail":"internal error; see the server log"}', ""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", JSON),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        self.tally.record_request("/predict", status, version, time.perf_counter() - started)


def _with_path_parameters(path: str, extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` plus the OpenAPI declaration of ``path``'s ``{parameters}``. The handlers read
    them from the request (one handler serves several paths), so FastAPI cannot infer them."""
    names = re.findall(r"{(\w+)}", path)
    if not names:
        return extra
    described = {"name": "The served model's name", "version": "A version this server has loaded"}
    parameters = [
        {
            "name": n,
            "in": "path",
            "required": True,
            "description": described.get(n, n),
            "schema": {"type": "string"},
        }
        for n in names
    ]
    return {**extra, "parameters": parameters}


def _json(status: int, content: bytes | dict[str, Any]) -> Response:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, media_type="application/json")


def build_api(service: ServingProcess) -> FastAPI:
    """The FastAPI app: every route, the OpenAPI page, and the lifespan that loads models."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not service.started:
            await asyncio.to_thread(service.start)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    api = FastAPI(
        title="ridecast",
        version=__version__,
        description="NYC taxi ride models (duration, tip, cost) over HTTP, in three protocols: "
        "the course's `POST /predict`, MLflow's `POST /invocations`, and the Open Inference "
        "Protocol v2 (`/v2/...`). Bad input gets 422/413 naming the row and field.",
        lifespan=lifespan,
    )
    tally = service.tally

    def done(
        endpoint: str,
        started: float,
        status: int,
        content: bytes | dict[str, Any],
        version: str = "",
    ) -> Response:
        tally.record_request(endpoint, status, version, time.perf_counter() - started)
        return _json(status, content)

    def unknown_model(name: str) -> str:
        return f"model {name!r} is not served here; served: {', '.join(service.slots)}"

    # --- the course's API ---

    async def predict_route(request: Request) -> Response:
        name = request.path_params.get("name")
        slot = service.default if name is None else service.slot_named(name)
        started = time.perf_counter()
        if slot is None:
            return done("/predict", started, 404, {"detail": unknown_model(str(name))})
        try:
            body = await read_body(request.receive, service.max_body)
        except InvalidInput as exc:
            return done("/predict", started, exc.status, exc.body())
        status, content, version = await service.predict_seed(slot, body, started)
        return done("/predict", started, status, content, version)

    for path in ("/predict", "/predict/{name}"):
        api.add_api_route(
            path,
            predict_route,
            methods=["POST"],
            tags=["course API"],
            summary="Predict one ride or a list of rides"
            + (" with the first served model" if path == "/predict" else " with a named model"),
            openapi_extra=_with_path_parameters(path, seed.OPENAPI),
        )

    @api.post("/feedback", tags=["course API"], summary="Record the actual value when a ride ends")
    async def feedback(request: Request) -> Response:
        """Body: `{"ride_id": ..., "actual_duration": 23.5}` (or `actual_tip` / `actual_cost`),
        or a list of such objects. Stored in the prediction log's `feedback` table."""
        started = time.perf_counter()
        denied = admin.check_token(request, service.feedback_token, "feedback")
        if denied is not None:
            return done("/feedback", started, denied[0], denied[1])
        try:
            body = await read_body(request.receive, service.max_body)
            items = seed.loads(body)
            rows = _feedback_rows(items, service.max_rides)
        except InvalidInput as exc:
            return done("/feedback", started, exc.status, exc.body())
        assert service.prediction_log is not None
        for ride_id, target, actual in rows:
            service.prediction_log.log_feedback(ride_id, target, actual)
        # Accepted now; the writer then counts each as recorded, duplicate or unknown_ride.
        return done("/feedback", started, 200, {"accepted": len(rows)})

    # --- MLflow's scoring protocol ---

    @api.post(
        "/invocations",
        tags=["MLflow scoring protocol"],
        summary="Predict rows in MLflow's formats (first served model)",
        openapi_extra=mlflow_protocol.OPENAPI,
    )
    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        slot = service.default
        try:
            body = await read_body(request.receive, service.max_body)
            batch = mlflow_protocol.parse(
                body, request.headers.get("content-type", ""), service.max_rides
            )
        except InvalidInput as exc:
            return done("/invocations", started, exc.status, mlflow_protocol.error_body(exc))
        try:
            values, versions = service.predict_batch(slot, batch, "web:/invocations", started)
        except NotLoaded as exc:
            return done("/invocations", started, 503, {"detail": f"{exc}; retry shortly"})
        version = versions if isinstance(versions, str) else "mixed"
        return done("/invocations", started, 200, mlflow_protocol.encode(values), version)

    def health_response(endpoint: str) -> Response:
        started = time.perf_counter()
        return done(endpoint, started, 200 if service.ready else 503, service.health())

    @api.get("/ping", tags=["MLflow scoring protocol"], summary="200 when ready, else 503")
    async def ping() -> Response:
        return health_response("/ping")

    @api.get("/health", tags=["health"], summary="Readiness with per-model detail")
    async def health() -> Response:
        """200 when every model is loaded and warmed and the server is not shutting down,
        else 503. The body tells which version each model serves and the last reload error."""
        return health_response("/health")

    @api.get("/version", tags=["MLflow scoring protocol"], summary="Software and model versions")
    async def version() -> Response:
        import mlflow

        return _json(
            200,
            {
                "ridecast": __version__,
                "mlflow": mlflow.__version__,
                "models": {s.name: s.version for s in service.slots.values()},
            },
        )

    @api.get("/health/live", tags=["health"], summary="200 while the process runs")
    async def live() -> Response:
        return _json(200, {"status": "alive"})

    @api.get("/health/ready", tags=["health"], summary="200 when loaded, warmed, not draining")
    async def ready() -> Response:
        if service.ready:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "not ready", "reason": service.not_ready_reason()})

    @api.get("/metrics", tags=["health"], summary="Prometheus metrics of all workers")
    async def metrics_route() -> Response:
        def render() -> bytes:
            tally.flush()  # this worker's latest requests; the others' are at most 1 s old
            return exposition(service.metrics_dir)

        content = await asyncio.to_thread(render)
        return Response(content, media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/", include_in_schema=False)
    async def index() -> Response:
        return _json(
            200,
            {
                "service": "ridecast",
                "models": {s.name: s.version for s in service.slots.values()},
                "docs": "/docs",
            },
        )

    # --- Open Inference Protocol v2 ---

    @api.get("/v2", tags=["Open Inference Protocol v2"], summary="Server metadata")
    async def v2_server() -> Response:
        return _json(200, oip.server_metadata())

    @api.get("/v2/health/live", tags=["Open Inference Protocol v2"], summary="Server live")
    async def v2_live() -> Response:
        return _json(200, {"live": True})

    @api.get("/v2/health/ready", tags=["Open Inference Protocol v2"], summary="Server ready")
    async def v2_ready() -> Response:
        return _json(200 if service.ready else 503, {"ready": service.ready})

    def v2_slot(name: str, version: str | None) -> tuple[ModelSlot | None, Response | None]:
        slot = service.slot_named(name)
        if slot is None:
            return None, _json(404, oip.error_body(unknown_model(name)))
        if version is not None:
            loaded = sorted(slot.follower.current.predictors) if slot.ready else []
            if version not in loaded:
                return None, _json(
                    404,
                    oip.error_body(
                        f"{name} version {version} is not loaded here; loaded: "
                        f"{', '.join(loaded) or 'none yet'} (it follows {slot.ref.uri} and "
                        "its rollout)"
                    ),
                )
        return slot, None

    async def v2_model(request: Request) -> Response:
        slot, error = v2_slot(request.path_params["name"], request.path_params.get("version"))
        if slot is None:
            assert error is not None
            return error
        version = request.path_params.get("version") or slot.version
        return _json(200, oip.model_metadata(slot.name, version, slot.target))

    async def v2_model_ready(request: Request) -> Response:
        slot, error = v2_slot(request.path_params["name"], request.path_params.get("version"))
        if slot is None:
            assert error is not None
            return error
        is_ready = slot.ready and not service.draining
        return _json(200 if is_ready else 503, {"name": slot.name, "ready": is_ready})

    async def v2_infer(request: Request) -> Response:
        started = time.perf_counter()
        slot, error = v2_slot(request.path_params["name"], request.path_params.get("version"))
        if slot is None:
            assert error is not None
            tally.record_request("/v2/infer", 404, "", time.perf_counter() - started)
            return error
        header = request.headers.get("inference-header-content-length")
        try:
            body = await read_body(request.receive, service.max_body)
            if header is not None and not header.strip().isdigit():
                raise InvalidInput.one(
                    ("header", "inference-header-content-length"),
                    "Inference-Header-Content-Length must be a byte count",
                    "binary",
                )
            batch, request_id = oip.parse_infer(
                body, int(header) if header is not None else None, service.max_rides
            )
        except InvalidInput as exc:
            return done("/v2/infer", started, exc.status, oip.error_body(str(exc), exc.problems))
        try:
            values, versions = service.predict_batch(
                slot, batch, "web:/v2/infer", started, version=request.path_params.get("version")
            )
        except NotLoaded as exc:
            return done("/v2/infer", started, 503, oip.error_body(f"{exc}; retry shortly"))
        version = versions if isinstance(versions, str) else "mixed"
        content = oip.encode_infer(slot.name, version, slot.target, values, request_id)
        return done("/v2/infer", started, 200, content, version)

    admin.add_routes(api, service)
    # The dashboard's pages and JSON over this service's log and rollout state (its queries run
    # on the thread pool, off the event loop that answers predictions).
    api.mount("/dashboard", create_dashboard(service.settings, registry=service.registry))

    tag: list[str | Enum] = ["Open Inference Protocol v2"]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        params = _with_path_parameters(base, {})
        api.add_api_route(
            base,
            v2_model,
            methods=["GET"],
            tags=tag,
            summary="Model metadata",
            openapi_extra=params,
        )
        api.add_api_route(
            f"{base}/ready",
            v2_model_ready,
            methods=["GET"],
            tags=tag,
            summary="Model ready",
            openapi_extra=params,
        )
        api.add_api_route(
            f"{base}/infer",
            v2_infer,
            methods=["POST"],
            tags=tag,
            summary="Infer (tabular: one input per column)",
            openapi_extra=_with_path_parameters(base, oip.OPENAPI),
        )
    return api


def _feedback_rows(items: Any, max_rides: int) -> list[tuple[Any, str, float]]:
    many = type(items) is list
    if not many:
        items = [items]
    validation.check_count(len(items), max_rides)
    rows: list[tuple[Any, str, float]] = []
    for i, item in enumerate(items):
        prefix: tuple[Any, ...] = ("body", i) if many else ("body",)
        if type(item) is not dict:
            raise InvalidInput.one(
                prefix, "feedback must be a JSON object", "model_attributes_type"
            )
        if item.get("ride_id") is None:
            raise InvalidInput.one((*prefix, "ride_id"), "ride_id is required", "missing")
        ride_id = validation.optional_id(item["ride_id"], (*prefix, "ride_id"))
        given = [k for k in FEEDBACK_TARGETS if k in item]
        if not given:
            raise InvalidInput.one(
                (*prefix, "actual_duration"),
                "one of actual_duration (minutes), actual_tip or actual_cost (dollars) is required",
                "missing",
            )
        for key in given:
            actual = validation.finite_number(item[key], (*prefix, key), low=0.0, high=100_000.0)
            rows.append((ride_id, FEEDBACK_TARGETS[key], actual))
    return rows


def create_app(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    worker: int | None = None,
) -> RidecastApp:
    """The ASGI app for ``settings.serve_models``. Models load at startup (ASGI lifespan), or
    earlier if the caller runs ``app.service.start()`` itself. ``worker`` is this process's
    index among the server's workers (the rolling strategy moves workers by index)."""
    service = ServingProcess(
        settings or get_settings(),
        registry=registry,
        worker=worker,
    )
    return RidecastApp(service, build_api(service))


def worker_app() -> RidecastApp:
    """The app factory each ``--workers N`` process runs. Workers of one server share metrics
    through prometheus_client's multiprocess folder, which the supervisor set
    (``PROMETHEUS_MULTIPROC_DIR``, read by the settings)."""
    settings = get_settings()
    index = os.environ.get(lifecycle.WORKER_INDEX_ENV)
    return create_app(settings, worker=int(index) if index is not None else None)
