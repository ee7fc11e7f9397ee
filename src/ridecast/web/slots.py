"""The models a server serves, one slot per registered model, each following its rollout.

A :class:`ModelSlot` owns a :class:`~ridecast.control.follower.Follower` (the alias, the active
rollout, the loaded versions and the router) and one lane per version and arm. A request reads
``follower.current`` once, asks its router which version answers (and which one shadows), and
goes down that version's lane, so a micro-batch never mixes versions. A linear model answers the
ride at once (a table lookup) and its lane batches only the log, metrics and shadow copy that
follow; any other model's lane is a micro-batcher the request waits on. A list request is split
by ride between versions (:meth:`~ridecast.rollout.router.Router.route_many`) and each answer
says which version gave it. When a candidate fails on live traffic, the stable version answers
those requests instead (and says so); the failures are logged against the candidate's arm, where
the rollout's analysis counts them. Requests that asked for the candidate by name (the preview
route, ``/versions/{v}``) get its error.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ridecast.control.follower import Deployment, Follower
from ridecast.errors import ModelError
from ridecast.features import RideArrays
from ridecast.modelref import ModelRef
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.monitoring.metrics import RequestTally, retire
from ridecast.rollout.router import Route, routing_key
from ridecast.rollout.state import PREVIEW_ARM
from ridecast.web.batching import AdaptiveBatcher, AnswerRecorder
from ridecast.web.shadow import ShadowJob, ShadowRunner
from ridecast.web.validation import InvalidInput

if TYPE_CHECKING:
    from ridecast.compiled import AnswerOne
    from ridecast.control.store import RolloutStore
    from ridecast.predictor import Predictor
    from ridecast.registry import Registry

log = logging.getLogger("ridecast.web")

_request_ids = itertools.count(1)
_PID = os.getpid()
DIRECT_ARM = "direct"  # a request for a version by number (/v2/models/{name}/versions/{v})


def _next_request_id() -> str:
    return f"{_PID}-{next(_request_ids)}"


@dataclass(slots=True)
class RideRequest:
    """One queued single-ride request."""

    pu: int
    do: int
    distance: float
    ride_id: Any
    user_id: Any
    arrived: float  # perf_counter
    route: Route
    rollout_id: str | None
    answered_by: str = ""  # set when another version than the routed one answered
    answered: float = 0.0  # perf_counter of an inline answer (else: when its batch was predicted)


@dataclass(slots=True)
class _Lane:
    """How one (version, arm) answers: inline with ``answer`` and ``recorder`` keeping what
    follows, or through ``batcher``'s model calls."""

    predictor: Predictor
    batcher: AdaptiveBatcher[RideRequest, float]
    answer: AnswerOne | None
    recorder: AnswerRecorder[RideRequest, float]


def _arrays_of(items: Sequence[RideRequest]) -> RideArrays:
    n = len(items)
    return RideArrays(
        pu=np.fromiter((i.pu for i in items), dtype=np.int64, count=n),
        do=np.fromiter((i.do for i in items), dtype=np.int64, count=n),
        distance=np.fromiter((i.distance for i in items), dtype=np.float64, count=n),
    )


class NotLoaded(Exception):
    """The slot has no version loaded yet (answered 503 with the reason)."""


class ModelSlot:
    """One served model: its follower, its per-version batchers, metrics and log."""

    def __init__(
        self,
        ref: ModelRef,
        registry: Registry,
        *,
        tally: RequestTally,
        prediction_log: PredictionLog | None,
        store: RolloutStore | None = None,
        shadow: ShadowRunner | None = None,
        batching: bool = True,
        max_batch_size: int = 256,
        max_batch_time: float = 0.0,
        follow_interval: float = 0.5,
        alias_interval: float | None = None,
        worker: int | None = None,
    ) -> None:
        self.ref = ref
        self.name = ref.name
        self.registry = registry
        self.tally = tally
        self._model_info = tally.metrics.model_info
        self.prediction_log = prediction_log
        self.shadow = shadow
        self.follower = Follower(
            ref,
            registry,
            store,
            interval=follow_interval,
            alias_interval=alias_interval,
            on_change=self._changed,
            worker=worker,
        )
        self._batching = batching
        self._max_batch_size = max_batch_size
        self._max_batch_time = max_batch_time
        # One lane per (version, arm): a batch is one model call (or one run of inline answers)
        # and one log record, so the preview's requests to the candidate never borrow the
        # canary's arm.
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._target = ""
        self._fallback_said: str | None = None

    # --- state ---

    @property
    def ready(self) -> bool:
        return self.follower.ready

    @property
    def version(self) -> str:
        """The stable version (what the alias names, or the rollout's stable)."""
        return self.follower.version

    @property
    def target(self) -> str:
        return self._target

    @property
    def last_error(self) -> str | None:
        return self.follower.last_error

    @property
    def deployment(self) -> Deployment:
        try:
            return self.follower.current
        except ModelError as exc:
            raise NotLoaded(str(exc)) from None

    @property
    def predictor(self) -> Predictor:
        return self.deployment.stable

    @property
    def batches(self) -> int:
        lanes = list(self._lanes.values())
        return sum(lane.batcher.batches + lane.recorder.batches for lane in lanes)

    def flush_answers(self) -> None:
        """Hand the inline answers kept so far to the log (at shutdown, before it closes)."""
        for lane in list(self._lanes.values()):
            lane.recorder.flush()

    def load(self) -> None:
        """First load (raises ModelError); afterwards the follower's thread keeps up."""
        self.follower.refresh(first=True)

    def start_following(self) -> None:
        self.follower.start()

    def stop_following(self) -> None:
        self.follower.stop()

    def _changed(self, new: Deployment, old: Deployment | None) -> None:
        self._target = new.target
        for key in list(self._lanes):
            if key[0] not in new.predictors:
                del self._lanes[key]
        if old is not None:
            for version in old.predictors:
                if version not in new.predictors:
                    retire(self._model_info, (self.name, version), 0)  # 0: no longer loaded
        for version in new.predictors:
            self._model_info.labels(self.name, version).set(1)

    def _lane(self, predictor: Predictor, arm: str) -> _Lane:
        key = (predictor.version, arm)
        lane = self._lanes.get(key)
        if lane is None or lane.predictor is not predictor:
            lane = self._lanes[key] = _Lane(
                predictor,
                AdaptiveBatcher(
                    lambda items: self._predict_items(predictor, items),
                    max_batch_size=self._max_batch_size,
                    max_batch_time=self._max_batch_time,
                    enabled=self._batching,
                ),
                predictor.answer_one(),
                AnswerRecorder(
                    lambda items, answers: self._record_answers(predictor, items, answers),
                    max_batch_size=self._max_batch_size if self._batching else 1,
                ),
            )
        return lane

    def _preview(self, deployment: Deployment) -> tuple[Predictor, Route]:
        candidate = deployment.preview
        if candidate is None or deployment.state is None:
            raise InvalidInput.one(
                ("header", "x-ridecast-preview"),
                f"{self.name} has no candidate in preview (no active rollout with preview)",
                "preview",
                status=404,
            )
        return candidate, Route(candidate.version, PREVIEW_ARM)

    # --- prediction (on the event loop) ---

    async def predict_one(
        self,
        pu: int,
        do: int,
        distance: float,
        ride_id: Any,
        user_id: Any,
        started: float,
        *,
        preview: bool = False,
    ) -> tuple[float, str]:
        deployment = self.deployment
        if preview:
            predictor, route = self._preview(deployment)
        else:
            route = deployment.router.route(routing_key(user_id, ride_id))
            predictor = deployment.predictors[route.version]
        request = RideRequest(
            pu, do, distance, ride_id, user_id, started, route, deployment.rollout_id
        )
        lane = self._lane(predictor, route.arm)
        if lane.answer is not None:
            try:
                value = lane.answer(pu, do, distance)
            except Exception:  # never expected of a lookup; the batcher's path handles failures
                pass
            else:
                request.answered = time.perf_counter()
                lane.recorder.add(request, value)
                return value, predictor.version
        value = await lane.batcher.predict(request)
        return value, request.answered_by or predictor.version

    def _predict_items(self, predictor: Predictor, items: Sequence[RideRequest]) -> list[float]:
        """The micro-batcher's model call: many single-ride requests of one version."""
        n = len(items)
        arrays = _arrays_of(items)
        first = items[0]
        arm = first.route.arm
        try:
            predictions = predictor.predict_arrays(arrays)
        except Exception as exc:
            self._log_errors(predictor.version, arm, first.rollout_id, n)
            predictor, arm = self._instead_of(predictor, arm, exc)
            predictions = predictor.predict_arrays(arrays)
            for item in items:
                item.answered_by = predictor.version
        self._record(predictor.version, arm, items, arrays, predictions)
        return predictions.tolist()  # type: ignore[no-any-return]

    def _record_answers(
        self, predictor: Predictor, items: Sequence[RideRequest], answers: Sequence[float]
    ) -> None:
        """What follows a run of inline answers: the same as after a batch's model call."""
        n = len(items)
        arrays = _arrays_of(items)
        predictions = np.fromiter(answers, dtype=np.float64, count=n)
        self._record(predictor.version, items[0].route.arm, items, arrays, predictions)

    def _record(
        self,
        version: str,
        arm: str,
        items: Sequence[RideRequest],
        arrays: RideArrays,
        predictions: np.ndarray,
    ) -> None:
        """Metrics, the shadow copy and the prediction log of answered single-ride requests."""
        n = len(items)
        first = items[0]
        self.tally.record_batch(self.name, version, predictions)
        shadowed = [k for k, i in enumerate(items) if i.route.shadow_version is not None]
        request_ids: list[Any] | None = None
        if shadowed:
            request_ids = [None] * n
            for k in shadowed:
                request_ids[k] = items[k].ride_id if items[k].ride_id is not None else None
                if request_ids[k] is None:
                    request_ids[k] = _next_request_id()
            self._shadow(arrays, items, shadowed, request_ids, first.rollout_id)
        if self.prediction_log is not None:
            now = time.perf_counter()
            latencies = [((i.answered or now) - i.arrived) * 1000.0 for i in items]
            self.prediction_log.log(
                PredictionBatch(
                    self.name,
                    version,
                    "web:/predict",
                    arrays.pu,
                    arrays.do,
                    arrays.distance,
                    predictions,
                    latencies,
                    [i.ride_id for i in items],
                    [i.user_id for i in items],
                    arm=arm,
                    rollout_id=first.rollout_id,
                    request_ids=request_ids,
                )
            )

    def _shadow(
        self,
        arrays: RideArrays,
        items: Sequence[RideRequest],
        shadowed: list[int],
        request_ids: list[Any],
        rollout_id: str | None,
    ) -> None:
        if self.shadow is None:
            return
        version = items[shadowed[0]].route.shadow_version
        assert version is not None
        predictor = self.follower.current.predictor(version)
        if predictor is None:
            return
        index = np.asarray(shadowed, dtype=np.int64)
        self.shadow.submit(
            ShadowJob(
                self.name,
                predictor,
                arrays.take(index),
                [items[k].ride_id for k in shadowed],
                [items[k].user_id for k in shadowed],
                [request_ids[k] for k in shadowed],
                rollout_id,
                "web:/predict",
            )
        )

    def predict(
        self,
        arrays: RideArrays,
        *,
        source: str,
        started: float,
        ride_ids: Sequence[Any] | None = None,
        user_ids: Sequence[Any] | None = None,
        version: str | None = None,
        preview: bool = False,
    ) -> tuple[np.ndarray, list[str] | str]:
        """Predict a list request. Rides are routed one by one (by user, else ride), so the
        answer may come from two versions: the second value is then one version per ride.
        ``version`` asks for a loaded version by number; ``preview`` for the candidate."""
        deployment = self.deployment
        n = len(arrays)
        if version is not None or preview:
            if preview:
                predictor, route = self._preview(deployment)
            else:
                found = deployment.predictor(str(version))
                if found is None:
                    loaded = ", ".join(sorted(deployment.predictors))
                    raise InvalidInput.one(
                        ("path", "version"),
                        f"{self.name} version {version} is not loaded here; loaded: {loaded}",
                        "not_found",
                        status=404,
                    )
                predictor = found
                route = Route(predictor.version, DIRECT_ARM)
            return self._predict_group(
                predictor, route, arrays, source, started, ride_ids, user_ids, deployment
            )
        router = deployment.router
        if router.state is None or (ride_ids is None and user_ids is None):
            # No rollout, or nothing to key rides by: the whole request goes one way.
            route = router.route(None)
            return self._predict_group(
                deployment.predictors[route.version],
                route,
                arrays,
                source,
                started,
                ride_ids,
                user_ids,
                deployment,
                shadow=None if route.shadow_version is None else [True] * n,
            )
        split = router.route_many(
            [
                routing_key(
                    user_ids[i] if user_ids is not None else None,
                    ride_ids[i] if ride_ids is not None else None,
                )
                for i in range(n)
            ]
        )
        out = np.empty(n, dtype=np.float64)
        versions = [""] * n
        for route, index in ((router.stable, split.stable), (router.candidate, split.candidate)):
            if not len(index):
                continue
            picked = index.tolist()
            values, answered = self._predict_group(
                deployment.predictors[route.version],
                route,
                arrays.take(index),
                source,
                started,
                None if ride_ids is None else [ride_ids[i] for i in picked],
                None if user_ids is None else [user_ids[i] for i in picked],
                deployment,
                shadow=np.isin(index, split.shadowed).tolist() if len(split.shadowed) else None,
            )
            out[index] = values
            for i in picked:
                versions[i] = answered
        return out, versions

    def _predict_group(
        self,
        predictor: Predictor,
        route: Route,
        arrays: RideArrays,
        source: str,
        started: float,
        ride_ids: Sequence[Any] | None,
        user_ids: Sequence[Any] | None,
        deployment: Deployment,
        shadow: list[bool] | None = None,
    ) -> tuple[np.ndarray, str]:
        """One version's answers to a group of rides, and the version that gave them."""
        arm = route.arm
        try:
            predictions = predictor.predict_arrays(arrays)
        except Exception as exc:
            self._log_errors(predictor.version, arm, deployment.rollout_id, len(arrays))
            predictor, arm = self._instead_of(predictor, arm, exc)
            predictions = predictor.predict_arrays(arrays)
        self.tally.record_batch(self.name, predictor.version, predictions)
        request_ids: list[Any] | None = None
        if shadow is not None and any(shadow) and self.shadow is not None:
            n = len(arrays)
            request_ids = [
                (ride_ids[i] if ride_ids is not None and ride_ids[i] is not None else None)
                for i in range(n)
            ]
            for i in range(n):
                if shadow[i] and request_ids[i] is None:
                    request_ids[i] = _next_request_id()
            picked = [i for i in range(n) if shadow[i]]
            candidate = deployment.candidate
            if candidate is not None:
                index = np.asarray(picked, dtype=np.int64)
                self.shadow.submit(
                    ShadowJob(
                        self.name,
                        candidate,
                        arrays.take(index),
                        None if ride_ids is None else [ride_ids[i] for i in picked],
                        None if user_ids is None else [user_ids[i] for i in picked],
                        [request_ids[i] for i in picked],
                        deployment.rollout_id,
                        source,
                    )
                )
        if self.prediction_log is not None:
            self.prediction_log.log(
                PredictionBatch(
                    self.name,
                    predictor.version,
                    source,
                    arrays.pu,
                    arrays.do,
                    arrays.distance,
                    predictions,
                    (time.perf_counter() - started) * 1000.0,
                    ride_ids,
                    user_ids,
                    arm=arm,
                    rollout_id=deployment.rollout_id,
                    request_ids=request_ids,
                )
            )
        return predictions, predictor.version

    def _instead_of(self, failed: Predictor, arm: str, exc: Exception) -> tuple[Predictor, str]:
        """The stable version and its arm, to answer live requests the candidate failed on:
        no caller sees a candidate's failure. Re-raises ``exc`` when the stable version itself
        failed, or when the request asked for this version by name (preview, version route)."""
        deployment = self.follower.current
        stable = deployment.stable
        if stable.version == failed.version or arm in (PREVIEW_ARM, DIRECT_ARM):
            raise exc
        said = f"{type(exc).__name__}: {exc}"
        if said != self._fallback_said:  # once per distinct error, not once per batch
            self._fallback_said = said
            log.warning(
                "%s v%s failed on live requests (%s): v%s answered them instead; the failures "
                "count against v%s's %s arm",
                self.name,
                failed.version,
                said,
                stable.version,
                failed.version,
                arm,
            )
        return stable, deployment.router.stable.arm

    def _log_errors(self, version: str, arm: str, rollout_id: str | None, n: int) -> None:
        if self.prediction_log is not None:
            self.prediction_log.log_errors(self.name, version, arm, rollout_id, "web", n)
