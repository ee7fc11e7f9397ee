"""What every serving process follows: the model's alias and its active rollout.

A :class:`Follower` checks the registry alias and the rollout store every
``rollout_follow_interval`` seconds (0.5 s by default), loads and warms whatever versions the
state needs through :meth:`ridecast.registry.Registry.predictor`, and only then publishes a new
:class:`Deployment`: one immutable snapshot (predictors + router) swapped in by one reference
assignment. Web workers, stream consumers and batch jobs read ``follower.current`` once per
request or batch, so every answer comes from one consistent snapshot and none fails during a
switch. When the registry or the store cannot be reached, the current snapshot keeps serving and
``last_error`` says why; nothing flips half-way. A worker with an index (``ridecast serve
--workers N``) tells the store which version it answers with while it follows a rolling rollout,
so the controller moves the next worker only once this one is ready.

Every follower reports the rollout it follows to Prometheus (phase, step, weights, shadow share:
:class:`~ridecast.monitoring.metrics.RolloutStates`) and counts the versions it loads after the
first (``ridecast_model_reloads_total``), in whichever mode it runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ridecast.errors import ModelError
from ridecast.modelref import ModelRef
from ridecast.monitoring.metrics import rollout_metrics
from ridecast.rollout.router import Route, Router, routing_key
from ridecast.rollout.state import RolloutState

if TYPE_CHECKING:
    from ridecast.control.store import RolloutStore
    from ridecast.predictor import Predictor
    from ridecast.registry import Registry

log = logging.getLogger("ridecast.control")

# How often a worker following a rolling rollout re-says what it answers with (its heartbeat).
REPORT_EVERY_S = 2.0
_HOST = socket.gethostname()


@dataclass(frozen=True)
class Deployment:
    """One consistent view of a model: the predictors loaded and the router over them.

    ``predictors`` holds every version the router sends traffic to, and for a while the ones it
    no longer does (blue/green's old version for ``scale_down_delay``, else ``keep_old_seconds``):
    they answer by name, and a switch back to one loads nothing."""

    model: str
    alias_version: str  # what the followed reference (e.g. @champion) resolves to
    predictors: dict[str, Predictor]
    router: Router
    state: RolloutState | None  # the active rollout, if any

    @property
    def stable(self) -> Predictor:
        return self.predictors[self.router.stable.version]

    @property
    def candidate(self) -> Predictor | None:
        if self.state is None:
            return None
        return self.predictors.get(self.state.candidate_version)

    @property
    def preview(self) -> Predictor | None:
        """The candidate, when the rollout lets the preview route reach it."""
        return self.candidate if self.state is not None and self.state.preview else None

    @property
    def rollout_id(self) -> str | None:
        return self.state.id if self.state is not None else None

    @property
    def target(self) -> str:
        return self.stable.target

    def predictor(self, version: str) -> Predictor | None:
        return self.predictors.get(version)

    def route(self, user_id: Any, ride_id: Any) -> Route:
        return self.router.route(routing_key(user_id, ride_id))


def _live_state(state: RolloutState | None) -> RolloutState | None:
    """The rollout state the router should follow (None = all traffic to the alias)."""
    if state is None or not state.active:
        return None
    return state


class Follower:
    """Follows ``ref`` (e.g. ``models:/ride-duration@champion``) and its model's rollout."""

    def __init__(
        self,
        ref: ModelRef,
        registry: Registry,
        store: RolloutStore | None = None,
        *,
        interval: float = 0.5,
        alias_interval: float | None = None,
        keep_old_seconds: float = 30.0,
        on_change: Callable[[Deployment, Deployment | None], None] | None = None,
        worker: int | None = None,
    ) -> None:
        self.ref = ref
        self.name = ref.name
        self.registry = registry
        self.store = store
        self.interval = interval
        # The registry is asked for the alias this often (and whenever the rollout changed);
        # the rollout state, a cheap indexed read, every ``interval``.
        self.alias_interval = interval if alias_interval is None else max(alias_interval, interval)
        self._alias: tuple[float, str] | None = None  # (checked at, version)
        self.keep_old_seconds = keep_old_seconds
        self.on_change = on_change
        self.worker = worker  # this process's index among a server's workers (rolling)
        self._current: Deployment | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._failed: tuple[str, ...] | None = None
        self._retired: dict[str, float] = {}  # version -> unload after (blue/green delay)
        self._wanted: RolloutState | None = None  # the active rollout, as last read
        self._reported: tuple[Any, float] = (None, 0.0)  # (what, when) this worker last said
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics = rollout_metrics()
        self._metrics.states.follow(self)

    # --- reading (any thread, the event loop included) ---

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Deployment:
        current = self._current
        if current is None:
            raise ModelError(f"{self.name} is not loaded yet")
        return current

    @property
    def version(self) -> str:
        return self._current.stable.version if self._current is not None else ""

    @property
    def rollout_state(self) -> RolloutState | None:
        """The active rollout being followed, if any."""
        current = self._current
        return current.state if current is not None else None

    # --- following (a background thread; never the event loop) ---

    def _desired(self) -> tuple[str, RolloutState | None]:
        state = None
        if self.store is not None and self.ref.version is None:
            state = self.store.active(self.name)
        now = time.monotonic()
        current = self._current
        alias = self._alias
        if (
            alias is None
            or now - alias[0] >= self.alias_interval
            or current is None
            or _live_state(state) != current.state
        ):
            alias = self._alias = (now, self.registry.resolve(self.ref))
        return alias[1], _live_state(state)

    def refresh(self, *, first: bool = False) -> bool:
        """Check the alias and the rollout once; swap a new snapshot in if either changed.

        Returns True when a new snapshot was published. On the first call errors raise
        (ModelError); later, they are recorded in ``last_error`` and the old snapshot serves.
        A worker with an index reports what it answers with while it follows a rolling rollout.
        """
        changed = self._refresh(first)
        self._report()
        return changed

    def _refresh(self, first: bool) -> bool:
        with self._lock:
            self.last_check = time.time()
            try:
                alias_version, state = self._desired()
            except Exception as exc:
                if first or self._current is None:
                    raise
                self._fail(f"cannot check {self.ref.uri} or its rollout: {exc}")
                return False
            self._wanted = state
            current = self._current
            if (
                current is not None
                and current.alias_version == alias_version
                and current.state == state
            ):
                deployment = self._without_expired(current)
                if deployment is current:
                    self._unload_retired()
                    return False
            else:
                loaded = self._load(alias_version, state, current, first)
                if loaded is None:
                    return False
                deployment = loaded
            self._current = deployment  # the switch: one reference assignment
            self._unload_retired()
            if current is not None and current.router.versions != deployment.router.versions:
                log.info(
                    "%s: now serving %s (was %s)",
                    self.name,
                    "/".join(f"v{v}" for v in deployment.router.versions),
                    "/".join(f"v{v}" for v in current.router.versions),
                )
        if self.on_change is not None:
            try:
                self.on_change(deployment, current)
            except Exception:  # a listener's bug must not stop following
                log.exception("%s: on_change listener failed", self.name)
        return True

    def _load(
        self,
        alias_version: str,
        state: RolloutState | None,
        current: Deployment | None,
        first: bool,
    ) -> Deployment | None:
        """The snapshot the alias and the state ask for, its versions loaded and warmed (None
        when one failed to load: the error is recorded and the current snapshot serves on)."""
        router = Router(alias_version, state, self.worker)
        wanted = router.versions
        if self._failed == wanted:
            return None  # already reported; wait for the state or alias to move
        try:
            predictors = {v: self.registry.predictor(self.ref, version=v) for v in wanted}
        except Exception as exc:
            if first or current is None:
                raise
            self._failed = wanted
            self._metrics.reloads.labels(self.name, "failed").inc()
            missing = [v for v in wanted if v not in current.predictors]
            self._fail(f"{self.name} v{'/v'.join(missing or wanted)} failed to load: {exc}")
            return None
        self.loaded_at = time.time()
        self.last_error = None
        self._failed = None
        if current is not None:
            if set(predictors) - set(current.predictors):
                self._metrics.reloads.labels(self.name, "ok").inc()
            # What the new snapshot no longer routes to stays in it (answering by name, and a
            # switch back is instant) until its delay ends: blue/green's scale_down_delay.
            now = time.time()
            for version in predictors:
                self._retired.pop(version, None)
            for version in current.predictors:
                if version not in predictors and version not in self._retired:
                    self._retired[version] = now + self._keep_for(current)
            for version, until in self._retired.items():
                if until > now and version in current.predictors:
                    predictors.setdefault(version, current.predictors[version])
        return Deployment(self.name, alias_version, predictors, router, state)

    def _without_expired(self, current: Deployment) -> Deployment:
        """``current`` without the retired versions whose delay has ended (itself if none)."""
        now = time.time()
        gone = [v for v, until in self._retired.items() if until <= now]
        for version in gone:
            del self._retired[version]
        if not any(v in current.predictors for v in gone):
            return current
        routed = set(current.router.versions)
        keep = {v: p for v, p in current.predictors.items() if v in routed or v in self._retired}
        return Deployment(current.model, current.alias_version, keep, current.router, current.state)

    def _keep_for(self, previous: Deployment) -> float:
        spec = previous.state.spec if previous.state is not None else {}
        delay = (spec.get("blue_green") or {}).get("scale_down_delay") if spec else None
        try:
            return float(delay) if delay is not None else self.keep_old_seconds
        except (TypeError, ValueError):
            return self.keep_old_seconds

    def _unload_retired(self) -> None:
        """Let the registry forget every version the snapshot no longer holds."""
        if self._current is not None:
            self.registry.retain(self.name, set(self._current.predictors))

    def _report(self) -> None:
        """Tell the state store which version this worker answers with, while the rollout to
        follow is a rolling one: the controller moves the next worker only once every moved
        worker says it serves the candidate. Sent on a change, else every REPORT_EVERY_S."""
        wanted, current = self._wanted, self._current
        if self.worker is None or self.store is None or current is None:
            return
        if wanted is None or wanted.strategy != "rolling":
            return
        answering = current.router.route(None).version  # a rolling worker answers one way
        said = (current.rollout_id, answering, tuple(sorted(current.predictors)), self.last_error)
        now = time.monotonic()
        if said == self._reported[0] and now - self._reported[1] < REPORT_EVERY_S:
            return
        try:
            self.store.report_worker(
                self.name,
                host=_HOST,
                worker=self.worker,
                pid=os.getpid(),
                rollout_id=current.rollout_id,
                answering=answering,
                versions=sorted(current.predictors),
                error=self.last_error,
            )
        except Exception as exc:  # the store away: following goes on, the report waits
            self._fail(f"cannot report worker {self.worker} to the rollout state store: {exc}")
            return
        self._reported = (said, now)

    def _fail(self, message: str) -> None:
        first_line = message.splitlines()[0] if message else message
        if first_line != self.last_error:
            log.error("%s; still serving %s", first_line, self.version or "nothing")
        self.last_error = first_line

    def start(self) -> Follower:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"ridecast-follow-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # pragma: no cover - refresh records its own errors
                log.exception("%s: follower check failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
