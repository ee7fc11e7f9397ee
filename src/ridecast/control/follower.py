"""What every serving process follows: the model's alias and its active rollout.

A :class:`Follower` checks the registry alias and the rollout store every
``rollout_follow_interval`` seconds (0.5 s by default), loads and warms whatever versions the
state needs through :meth:`ridecast.registry.Registry.predictor`, and only then publishes a new
:class:`Deployment`: one immutable snapshot (predictors + router) swapped in by one reference
assignment. Web workers, stream consumers and batch jobs read ``follower.current`` once per
request or batch, so every answer comes from one consistent snapshot and none fails during a
switch. When the registry or the store cannot be reached, the current snapshot keeps serving and
``last_error`` says why; nothing flips half-way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ridecast.errors import ModelError
from ridecast.modelref import ModelRef
from ridecast.rollout.router import Route, Router, routing_key
from ridecast.rollout.state import RolloutState

if TYPE_CHECKING:
    from ridecast.control.store import RolloutStore
    from ridecast.predictor import Predictor
    from ridecast.registry import Registry

log = logging.getLogger("ridecast.control")


@dataclass(frozen=True)
class Deployment:
    """One consistent view of a model: the predictors loaded and the router over them."""

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
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        """
        with self._lock:
            self.last_check = time.time()
            try:
                alias_version, state = self._desired()
            except Exception as exc:
                if first or self._current is None:
                    raise
                self._fail(f"cannot check {self.ref.uri} or its rollout: {exc}")
                return False
            current = self._current
            if (
                current is not None
                and current.alias_version == alias_version
                and current.state == state
            ):
                self._unload_retired()
                return False
            router = Router(alias_version, state, self.worker)
            wanted = router.versions
            if self._failed == wanted:
                return False  # already reported; wait for the state or alias to move
            try:
                predictors = {v: self.registry.predictor(self.ref, version=v) for v in wanted}
            except Exception as exc:
                if first or current is None:
                    raise
                self._failed = wanted
                missing = [v for v in wanted if current is None or v not in current.predictors]
                self._fail(f"{self.name} v{'/v'.join(missing or wanted)} failed to load: {exc}")
                return False
            deployment = Deployment(self.name, alias_version, predictors, router, state)
            self._current = deployment  # the switch: one reference assignment
            self.loaded_at = time.time()
            self.last_error = None
            self._failed = None
            if current is not None:
                for version in current.predictors:
                    if version not in predictors:
                        self._retired[version] = time.time() + self._keep_for(current)
            self._unload_retired()
            if current is not None and current.router.versions != router.versions:
                log.info(
                    "%s: now serving %s (was %s)",
                    self.name,
                    "/".join(f"v{v}" for v in router.versions),
                    "/".join(f"v{v}" for v in current.router.versions),
                )
        if self.on_change is not None:
            try:
                self.on_change(deployment, current)
            except Exception:  # a listener's bug must not stop following
                log.exception("%s: on_change listener failed", self.name)
        return True

    def _keep_for(self, previous: Deployment) -> float:
        spec = previous.state.spec if previous.state is not None else {}
        delay = (spec.get("blue_green") or {}).get("scale_down_delay") if spec else None
        try:
            return float(delay) if delay is not None else self.keep_old_seconds
        except (TypeError, ValueError):
            return self.keep_old_seconds

    def _unload_retired(self) -> None:
        now = time.time()
        for version, until in list(self._retired.items()):
            if until <= now:
                del self._retired[version]
        keep = set(self._retired)
        if self._current is not None:
            keep |= set(self._current.predictors)
        self.registry.retain(self.name, keep)

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
