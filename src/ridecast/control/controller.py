"""The one process that advances rollouts: it holds a lease in the state store, and on every tick
measures each active rollout's window of the prediction log and applies its strategy's decision.

Any number of processes may run a :class:`Controller` (every ``ridecast serve``, ``ridecast
rollout run``); the lease ``rollout-controller`` lets exactly one of them act. It renews the
lease every tick; when it dies, the lease expires after ``rollout_lease_seconds`` and another
takes over. Everything the controller knows is in the store, so a new holder (or a restarted
server) goes on where the state says.

Saves are conditional on the state not having changed since it was read, so a person's
``promote``/``abort``/``pause`` between the read and the write wins; the controller simply reads
again next tick. A promotion moves the registry alias first; if the registry cannot be reached,
the step waits and is tried again next tick.

The lease holder exports each analysis window's figures per version and arm, and counts the
verdicts it acted on (:class:`~ridecast.monitoring.metrics.RolloutMetrics`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ridecast.control.ops import LEASE, apply_promotion, decision_figures
from ridecast.errors import RolloutError
from ridecast.monitoring.metrics import rollout_metrics
from ridecast.rollout.state import RolloutState

if TYPE_CHECKING:
    from ridecast.control.store import RolloutStore
    from ridecast.registry import Registry
    from ridecast.rollout.strategies import Decision
    from ridecast.settings import Settings

log = logging.getLogger("ridecast.control")


def holder_id() -> str:
    """Who holds the lease: host, process and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Controller:
    """Advances every active rollout while it holds the lease ``rollout-controller``.

    ``on_change(before, after, decision)`` is called after each saved transition (the CLI's
    ``rollout run`` prints them).
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: RolloutStore,
        *,
        holder: str | None = None,
        interval: float = 1.0,
        on_change: Callable[[RolloutState, RolloutState, Decision], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.holder = holder or holder_id()
        self.interval = interval
        self.ttl = float(settings.rollout_lease_seconds)
        self.on_change = on_change
        self.holding = False
        self.ticks = 0
        self.last_error: str | None = None
        self._engine: Any = None
        self._metrics = rollout_metrics()
        self._measured: dict[str, RolloutState] = {}  # rollouts whose figures are exported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ---

    def tick(self, now: float | None = None) -> bool:
        """Take or renew the lease and, if held, advance each active rollout once.
        Returns whether this controller holds the lease. Never raises."""
        try:
            held = self.store.try_lease(LEASE, self.holder, self.ttl)
        except Exception as exc:
            self._error(f"cannot take the lease {LEASE}: {exc}")
            held = False
        if held != self.holding:
            log.info("rollout controller %s %s the lease", self.holder, "took" if held else "lost")
        self.holding = held
        self.ticks += 1
        if not held:
            self._retire(set())  # the new holder exports the figures now
            return False
        try:
            states = self.store.all_active()
        except Exception as exc:
            self._error(f"cannot read the rollout state store: {exc}")
            return True
        self._retire({s.id for s in states})
        for state in states:
            try:
                self.advance(state, time.time() if now is None else now)
            except Exception as exc:  # one rollout's trouble must not stop the others
                message = f"rollout {state.id}: {type(exc).__name__}: {exc}".splitlines()[0]
                if message != self.last_error:  # the traceback once, not every tick
                    log.exception("rollout %s: tick failed", state.id)
                self.last_error = message
        return True

    def advance(self, state: RolloutState, now: float) -> RolloutState | None:
        """Measure, decide and apply for one rollout; the saved state, or None if unchanged."""
        from ridecast.rollout import strategies

        window = strategies.window(state, now)
        measurements = None
        if window is not None:
            from ridecast.control.measure import measure

            measurements = measure(self._log_engine(), state, *window, self._target(state))
            if state.strategy == "rolling":  # which version each indexed worker serves now
                reports = tuple(self.store.worker_reports(state.model, now))
                measurements = replace(measurements, workers=reports)
            self._metrics.measured(state, measurements)
            self._measured[state.id] = state
        decision = strategies.advance(state, measurements, now)
        if not decision.changed and not decision.promote:
            return None
        actor = f"controller {self.holder}"
        try:
            if decision.promote:
                saved = apply_promotion(self.registry, self.store, state, decision, actor=actor)
            else:
                saved = self.store.save(
                    decision.state,
                    reason=decision.reason,
                    figures=decision_figures(decision),
                    actor=actor,
                    expected_updated_at=state.updated_at,
                )
        except RolloutError as exc:
            # A person changed the rollout meanwhile (their change wins), or the registry
            # refused the alias move (the step waits). Either way: read again next tick.
            self._error(str(exc))
            return None
        if decision.verdict is not None:
            self._metrics.analyses.labels(
                state.model, state.id, state.strategy, decision.verdict
            ).inc()
        log.info(
            "rollout %s: %s, step %d, weight %d%%: %s",
            state.id,
            saved.phase,
            saved.step,
            saved.weight,
            decision.reason,
        )
        self.last_error = None
        if self.on_change is not None:
            try:
                self.on_change(state, saved, decision)
            except Exception:
                log.exception("rollout controller: on_change listener failed")
        return saved

    def _retire(self, active: set[str]) -> None:
        """Stop exporting the figures of rollouts that are no longer active."""
        for rollout_id in [i for i in self._measured if i not in active]:
            self._metrics.retire(self._measured.pop(rollout_id))

    def _target(self, state: RolloutState) -> str:
        from ridecast.model import TARGETS
        from ridecast.modelref import ModelRef

        target = TARGETS.get(state.model)
        if target is None:  # a model ridecast does not know by name: ask the version itself
            ref = ModelRef(state.model, version=state.stable_version)
            target = self.registry.predictor(ref).target
        return target

    def _log_engine(self) -> Any:
        if self._engine is None:
            from ridecast.control.measure import engine_for

            self._engine = engine_for(self.settings.resolved_prediction_log_url)
        return self._engine

    def _error(self, message: str) -> None:
        first = message.splitlines()[0] if message else message
        if first != self.last_error:
            log.warning("rollout controller: %s", first)
        self.last_error = first

    # --- the background thread ---

    def start(self) -> Controller:
        """Tick every ``interval`` seconds on a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="ridecast-rollout-controller", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def run_forever(self) -> None:
        """Tick in the calling thread until interrupted (``ridecast rollout run``)."""
        try:
            while not self._stop.is_set():
                self.tick()
                self._stop.wait(self.interval)
        finally:
            self.stop()

    def stop(self, *, release: bool = True) -> None:
        """Stop ticking; with ``release`` the lease is handed back at once (else it expires)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval * 2))
            self._thread = None
        if release and self.holding:
            self.store.release(LEASE, self.holder)
        self.holding = False
