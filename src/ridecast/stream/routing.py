"""Which version answers each event of a micro-batch, and which version shadows it.

A consumer reads its :class:`~ridecast.control.follower.Deployment` once per batch and hands it
here with the batch's valid events. Without an active rollout (or with one that sends every
event to one version and shadows none) the whole batch is one vectorized call, as before
rollouts existed. Otherwise each event is routed by its ``ride_id`` (stream events carry no
user), the events are grouped by version, and each group is predicted in one call by its
version's predictor. Live records come back in input order. Shadow copies are predicted the same
way, but a failing shadow only yields a :class:`Failure`: it never costs a live answer. Nor does a
candidate that fails live: its events are answered by the stable version (and say so in their
``version``), and the failure is counted against the candidate's arm, where analysis sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ridecast.control.follower import Deployment
from ridecast.monitoring import PredictionBatch
from ridecast.rollout.router import Route, Router, ride_keys
from ridecast.rollout.state import SHADOW_ARM
from ridecast.stream.events import EventBatch
from ridecast.stream.services import Answer, Service

if TYPE_CHECKING:
    from ridecast.predictor import Predictor


class DeploymentSource(Protocol):
    """Anything that hands out the current deployment: a Follower, or a :class:`Pinned`."""

    @property
    def current(self) -> Deployment: ...


class Pinned:
    """One already-loaded predictor as a deployment that never changes (no rollout): for the
    demo, one-off runs and tests. Serving processes use a Follower instead."""

    last_error: str | None = None

    def __init__(self, predictor: Predictor) -> None:
        version = predictor.version
        self.current = Deployment(
            predictor.name, version, {version: predictor}, Router(version), None
        )


@dataclass
class Group:
    """The events one version answered (or shadowed) in a batch, for metrics and the log."""

    version: str
    arm: str
    events: int


class NotLoaded(Exception):
    """The deployment has no predictor for a version its router names."""


@dataclass(frozen=True)
class Failure:
    """A version that could not answer some events: a shadow (its copies are dropped) or a live
    candidate (the stable version answered instead)."""

    version: str
    arm: str
    message: str
    events: int

    @property
    def shadow(self) -> bool:
        return self.arm == SHADOW_ARM


@dataclass
class Routed:
    """What a batch became: live records in input order, shadow records with the index of the
    event each answers, the prediction-log batches, and the versions that failed."""

    outputs: list[bytes]
    shadow: list[tuple[int, bytes]] = field(default_factory=list)
    logs: list[PredictionBatch] = field(default_factory=list)
    live_groups: list[Group] = field(default_factory=list)
    shadow_groups: list[Group] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _whole_batch_route(deployment: Deployment) -> Route | None:
    """The one route every event takes, when the state leaves nothing to decide per event."""
    state, router = deployment.state, deployment.router
    if state is None:
        return router.stable
    if state.shadow_percent <= 0 and state.weight <= 0:
        return router.stable
    if state.shadow_percent <= 0 and state.weight >= 100:
        return router.candidate
    return None


def assign(
    deployment: Deployment, ride_ids: list[Any]
) -> tuple[dict[tuple[str, str], list[int]], dict[str, list[int]]]:
    """Each ride's live (version, arm) and shadow version, as ``deployment.route(None, ride_id)``
    decides them, for a whole batch at once (:meth:`Router.route_many`): event positions by live
    route and by shadow version, each in input order."""
    router = deployment.router
    split = router.route_many(ride_keys(ride_ids))
    live: dict[tuple[str, str], list[int]] = {}
    for route, index in ((router.candidate, split.candidate), (router.stable, split.stable)):
        if len(index):
            live[(route.version, route.arm)] = index.tolist()
    shadow: dict[str, list[int]] = {}
    if len(split.shadowed):
        shadow[router.candidate.version] = split.shadowed.tolist()
    return live, shadow


def route_batch(
    service: Service,
    deployment: Deployment,
    batch: EventBatch,
    *,
    started: float,
    source: str,
    log: bool,
) -> Routed:
    """Predict ``batch`` as ``deployment`` says. ``started`` (a ``perf_counter`` reading) is
    when the consumer began the batch: each logged row's latency is the time from there to its
    version's answer. Only a failure of the stable version raises (the batch stays pending)."""
    n = len(batch)
    routed = Routed([b""] * n)
    if n == 0:
        return routed
    rollout_id = deployment.rollout_id
    live: dict[tuple[str, str], list[int]] = {}
    shadow: dict[str, list[int]] = {}
    whole = _whole_batch_route(deployment)
    if whole is not None:
        everything = list(range(n))
        live[(whole.version, whole.arm)] = everything
    else:
        live, shadow = assign(deployment, batch.ride_ids)
    tagged = deployment.state is not None
    stable = deployment.router.stable
    for (version, arm), index in live.items():
        part = batch if len(index) == n else batch.take(np.asarray(index, dtype=np.int64))
        predictor = deployment.predictor(version)
        try:
            if predictor is None:  # a Follower never publishes this; say it all the same
                raise NotLoaded(f"v{version} is not loaded")
            answer = service.predict(predictor, part)
        except Exception as exc:
            if version == stable.version:
                raise
            routed.failures.append(
                Failure(version, arm, f"v{version} failed: {_why(exc)}", len(index))
            )
            arm = stable.arm
            answer = service.predict(deployment.stable, part)
        records = service.encode(part, answer, arm=arm if tagged else None, rollout_id=rollout_id)
        for i, record in zip(index, records, strict=True):
            routed.outputs[i] = record
        routed.live_groups.append(Group(answer.version, arm, len(index)))
        if log:
            routed.logs.append(_log_batch(deployment, part, answer, arm, source, started))
    for version, index in shadow.items():
        part = batch.take(np.asarray(index, dtype=np.int64))
        shadow_predictor = deployment.predictor(version)
        try:
            if shadow_predictor is None:
                raise NotLoaded(f"v{version} is not loaded")
            answer = service.predict(shadow_predictor, part)
            records = service.encode(part, answer, arm=SHADOW_ARM, rollout_id=rollout_id)
        except Exception as exc:  # the candidate's failure must not cost a live answer
            routed.failures.append(
                Failure(version, SHADOW_ARM, f"shadow v{version} failed: {_why(exc)}", len(index))
            )
            continue
        routed.shadow.extend(zip(index, records, strict=True))
        routed.shadow_groups.append(Group(version, SHADOW_ARM, len(index)))
        if log:
            routed.logs.append(_log_batch(deployment, part, answer, SHADOW_ARM, source, started))
    return routed


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, NotLoaded) else f"{type(exc).__name__}: {exc}"


def _log_batch(
    deployment: Deployment,
    part: EventBatch,
    answer: Answer,
    arm: str,
    source: str,
    started: float,
) -> PredictionBatch:
    """One version's answers as the prediction log takes them; request ids are the ride ids,
    so a shadow row pairs with the live row of the same ride."""
    return PredictionBatch(
        model=deployment.model,
        version=answer.version,
        source=source,
        pu=part.arrays.pu,
        do=part.arrays.do,
        distance=part.arrays.distance,
        predictions=answer.values,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        ride_ids=part.ride_ids,
        arm=arm,
        rollout_id=deployment.rollout_id,
        request_ids=part.ride_ids,
    )
