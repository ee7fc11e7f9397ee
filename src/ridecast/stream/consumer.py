"""The stream consumer: read a micro-batch, validate, predict, write outputs and acknowledge.

One loop, top to bottom::

    messages = broker.read(...)                      # up to batch_size events
    batch, poison = decode_batch(messages)           # valid rides as arrays; poison with reasons
    deployment = source.current                      # once per batch: versions + router
    routed = route_batch(service, deployment, batch) # one vectorized call per version
    broker.complete(ack=messages, outputs + shadow copies + dead letters)   # one transaction
    prediction_log.log(...)                          # enqueue only

Guarantees a caller may rely on:

* at-least-once: an event is acknowledged only in the same transaction that writes its output
  (or its dead letter); a consumer killed at any moment leaves its events pending, and a live
  consumer of the group claims them once they are ``claim_idle_ms`` idle;
* poison never blocks the stream: invalid events, and events delivered more than
  ``max_deliveries`` times (e.g. ones that crash the model), go to the dead-letter stream with the
  error and the original payload, and the loop goes on;
* bounded memory: at most ``batch_size`` events are read and not yet acknowledged at any time;
* a failing shadow never fails a good event: its copies are dropped, counted
  (``ridecast_stream_shadow_failures_total``) and logged once per distinct error, and the live
  outputs are written and acknowledged;
* the model follows the registry and the rollout state through the deployment source (a
  :class:`~ridecast.control.follower.Follower`); when the registry or the state store is away the
  current deployment keeps serving and the consumer says so once;
* broker outages are waited out with exponential backoff (0.1 s doubling to 5 s, jittered),
  never by crashing; nothing is acknowledged that was not written.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ridecast.settings import Settings
from ridecast.stream.broker import Broker, BrokerUnavailable, GroupMissing, Message, Output
from ridecast.stream.events import dead_letter, decode_batch
from ridecast.stream.routing import DeploymentSource, Failure, Pinned, Routed, route_batch
from ridecast.stream.services import Service, dead_letter_stream
from ridecast.stream.stats import ConsumerStats, consumer_metrics

if TYPE_CHECKING:
    from ridecast.control.follower import Deployment
    from ridecast.monitoring import PredictionLog
    from ridecast.predictor import Predictor  # imports MLflow: only for type hints

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True)
class ConsumerConfig:
    group: str
    consumer: str
    input_stream: str
    output_stream: str
    dead_letter_stream: str
    batch_size: int = 500
    block_ms: int = 500
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    retention: int | None = 1_000_000
    start: str = "0"  # where a new group starts: "0" = the whole stream, "$" = only new events
    shadow_stream: str | None = None  # default: <output_stream>_shadow

    @property
    def shadow_output(self) -> str:
        """Where shadow copies go: their own stream, so nobody mistakes them for answers."""
        return self.shadow_stream or f"{self.output_stream}_shadow"

    @classmethod
    def for_service(
        cls,
        service: Service,
        settings: Settings,
        *,
        group: str | None = None,
        consumer: str | None = None,
        input_stream: str | None = None,
        output_stream: str | None = None,
        shadow_stream: str | None = None,
        start: str = "0",
    ) -> ConsumerConfig:
        import os
        import socket

        source = input_stream or service.input_stream
        return cls(
            group=group or service.name,
            consumer=consumer or f"{socket.gethostname()}-{os.getpid()}",
            input_stream=source,
            output_stream=output_stream or service.output_stream,
            dead_letter_stream=dead_letter_stream(source),
            batch_size=settings.stream_batch_size,
            block_ms=settings.stream_block_ms,
            claim_idle_ms=settings.stream_claim_idle_ms,
            max_deliveries=settings.stream_max_deliveries,
            retention=settings.stream_retention,
            start=start,
            shadow_stream=shadow_stream,
        )


class StreamConsumer:
    """Runs one :class:`Service` against one broker, answering with whatever deployment
    ``model`` hands out now (a Follower follows the alias and the rollout; a bare Predictor is
    pinned). ``prediction_log`` receives every live and shadow answer, tagged ``source``."""

    def __init__(
        self,
        broker: Broker,
        service: Service,
        model: DeploymentSource | Predictor,
        config: ConsumerConfig,
        *,
        prediction_log: PredictionLog | None = None,
        source: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.broker = broker
        self.service = service
        self.deployments: DeploymentSource = (
            Pinned(model) if hasattr(model, "predict_arrays") else model  # type: ignore[arg-type]
        )
        self.config = config
        self.prediction_log = prediction_log
        self.source = source or f"stream:{service.name}"
        self.log = log or (lambda message: None)
        self.stats = ConsumerStats()
        m = consumer_metrics()
        key = (service.name, config.group)
        self._key = key
        self._predicted = m.events.labels(*key, "predicted")
        self._dead = m.events.labels(*key, "dead_lettered")
        self._claimed = m.claimed.labels(*key)
        self._batch_seconds = m.batch_seconds.labels(*key)
        self._age = m.age.labels(*key)
        self._in_flight = m.in_flight.labels(*key)
        self._reconnects = m.reconnects.labels(*key)
        self._version = m.version.labels(*key)
        self._answers = m.answers
        self._shadow_failures = m.shadow_failures.labels(*key)
        self._fallbacks = m.fallbacks
        self._seen: Deployment | None = None
        self._errors_said: set[str] = set()
        self._follow_error: str | None = None

    def _deployment(self) -> Deployment:
        """The deployment for this batch; says so (once) when it is a new one."""
        deployment = self.deployments.current
        if deployment is not self._seen:
            previous, self._seen = self._seen, deployment
            with contextlib.suppress(ValueError):  # non-numeric versions have no gauge value
                self._version.set(float(deployment.stable.version))
            if previous is not None or deployment.state is not None:
                self.log(f"{self.service.name}: now {_describe(deployment)}")
        return deployment

    # -- one micro-batch --------------------------------------------------------------------
    def handle(self, messages: list[Message]) -> None:
        """Predict, write and acknowledge one micro-batch (see the module docstring)."""
        if not messages:
            return
        cfg = self.config
        started = time.perf_counter()
        self._in_flight.set(len(messages))
        fresh: list[Message] = []
        poison: list[tuple[Message, str]] = []
        for message in messages:
            if message.deliveries > cfg.max_deliveries:
                poison.append(
                    (
                        message,
                        f"delivered {message.deliveries} times without being acknowledged "
                        f"(limit {cfg.max_deliveries}); its consumers kept failing on it",
                    )
                )
            else:
                fresh.append(message)
        batch, invalid = decode_batch(fresh, progress=self.service.progress)
        poison.extend(invalid)
        # A live model failure raises here and leaves the batch unacknowledged: it is
        # redelivered after the idle timeout and dead-lettered once it exceeds max_deliveries.
        routed = route_batch(
            self.service,
            self._deployment(),
            batch,
            started=started,
            source=self.source,
            log=self.prediction_log is not None,
        )
        ids = [m.id for m in batch.messages]
        outputs = [Output(p, i) for p, i in zip(routed.outputs, ids, strict=True)]
        dead = [
            Output(
                dead_letter(
                    m,
                    reason,
                    stream=cfg.input_stream,
                    group=cfg.group,
                    consumer=cfg.consumer,
                    service=self.service.name,
                ),
                m.id,
            )
            for m, reason in poison
        ]
        groups: dict[str, list[Output]] = {cfg.output_stream: outputs}
        if routed.shadow:
            groups[cfg.shadow_output] = [Output(p, ids[i]) for i, p in routed.shadow]
        if dead:
            groups[cfg.dead_letter_stream] = dead
        self.broker.complete(
            cfg.input_stream,
            cfg.group,
            [m.id for m in messages],
            groups,
            maxlen=cfg.retention,
        )
        self._in_flight.set(0)
        if self.prediction_log is not None:  # only what was written and acknowledged
            for entry in routed.logs:
                self.prediction_log.log(entry)
        self._count(routed, len(outputs), len(dead))
        self._batch_seconds.observe(time.perf_counter() - started)
        oldest = messages[0].produced_ms  # brokers deliver in id order
        self._age.observe(max(time.time() * 1000 - oldest, 0.0) / 1000)

    def _count(self, routed: Routed, predicted: int, dead: int) -> None:
        self.stats.batches += 1
        self.stats.predicted += predicted
        self.stats.dead_lettered += dead
        self._predicted.inc(predicted)
        if dead:
            self._dead.inc(dead)
        for group in (*routed.live_groups, *routed.shadow_groups):
            self._answers.labels(*self._key, group.version, group.arm).inc(group.events)
        self.stats.shadowed += sum(g.events for g in routed.shadow_groups)
        for failure in routed.failures:
            self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        """Count a version's failure (metrics, stats, the log's error rows); say it once."""
        deployment = self._seen
        if failure.shadow:
            self.stats.shadow_failures += failure.events
            self._shadow_failures.inc(failure.events)
            outcome = "its shadow copies are dropped and counted; the live answers are written"
        else:
            self.stats.fallbacks += failure.events
            self._fallbacks.labels(*self._key, failure.version).inc(failure.events)
            outcome = "the stable version answered its events instead"
        if self.prediction_log is not None and deployment is not None:
            self.prediction_log.log_errors(
                deployment.model,
                failure.version,
                failure.arm,
                deployment.rollout_id,
                self.source,
                failure.events,
            )
        if failure.message not in self._errors_said and len(self._errors_said) < 100:
            self._errors_said.add(failure.message)
            self.log(f"{self.service.name}: {failure.message}; {outcome}")

    def _check_follower(self) -> None:
        """Say once when the deployment source cannot follow the registry or the rollout state
        (it keeps serving what it has), and once when it can again."""
        error = getattr(self.deployments, "last_error", None)
        if error == self._follow_error:
            return
        self._follow_error = error
        if error is not None:
            self.log(f"{self.service.name}: {error}; still serving {_describe(self._seen)}")
        else:
            self.log(f"{self.service.name}: following the registry and rollout state again")

    # -- the loop ---------------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        *,
        until_idle: bool = False,
        status_every_s: float = 0.0,
    ) -> ConsumerStats:
        """Consume until ``stop`` is set (or, with ``until_idle``, until a read finds nothing
        new and no pending event is left to claim). Returns the counters."""
        cfg = self.config
        stop = stop or threading.Event()
        claim_every_s = min(max(cfg.claim_idle_ms / 2000, 0.05), 5.0)
        next_claim = 0.0
        next_status = time.monotonic() + status_every_s if status_every_s else float("inf")
        backoff = 0.0
        down_since: float | None = None
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    self.broker.ensure_group(
                        cfg.input_stream, cfg.group, start=cfg.start, consumer=cfg.consumer
                    )
                    group_ready = True
                now = time.monotonic()
                claimed: list[Message] = []
                if now >= next_claim:
                    next_claim = now + claim_every_s
                    claimed = self.broker.claim_idle(
                        cfg.input_stream,
                        cfg.group,
                        cfg.consumer,
                        min_idle_ms=cfg.claim_idle_ms,
                        count=cfg.batch_size,
                    )
                if claimed:
                    self.stats.claimed += len(claimed)
                    self._claimed.inc(len(claimed))
                    messages = claimed
                else:
                    messages = self.broker.read(
                        cfg.input_stream,
                        cfg.group,
                        cfg.consumer,
                        count=cfg.batch_size,
                        block_ms=cfg.block_ms,
                    )
                if down_since is not None:
                    self.log(f"broker is back after {time.monotonic() - down_since:.1f}s")
                    down_since, backoff = None, 0.0
                self.stats.read += len(messages)
                if messages:
                    self._handle_safely(messages)
                elif until_idle and not self._has_pending():
                    break
            except GroupMissing:
                self.log(f"group {cfg.group!r} on {cfg.input_stream!r} is gone; creating it again")
                group_ready = False
            except BrokerUnavailable as exc:
                self._in_flight.set(0)
                if down_since is None:
                    down_since = time.monotonic()
                    self.stats.reconnects += 1
                    self._reconnects.inc()
                backoff = min(max(backoff * 2, BACKOFF_START_S), BACKOFF_MAX_S)
                wait = backoff * random.uniform(0.8, 1.2)
                self.log(f"{exc}; retrying in {wait:.1f}s")
                group_ready = False  # a restarted broker may have lost it
                stop.wait(wait)
                continue
            self._check_follower()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + status_every_s
                self.log(f"{self.service.name}: {self.stats.line()}")
        return self.stats

    def _handle_safely(self, messages: list[Message]) -> None:
        try:
            self.handle(messages)
        except BrokerUnavailable:
            raise
        except Exception as exc:  # a model or output failure: leave the batch pending
            self._in_flight.set(0)
            self.stats.failed_batches += 1
            self.log(
                f"batch of {len(messages)} events failed ({type(exc).__name__}: {exc}); "
                f"left unacknowledged for redelivery after {self.config.claim_idle_ms} ms"
            )

    def _has_pending(self) -> bool:
        for info in self.broker.info([self.config.input_stream]):
            for group in info.groups:
                if group.name == self.config.group:
                    return group.pending > 0
        return False


def _describe(deployment: Deployment | None) -> str:
    """``ride-duration v1`` or ``ride-duration v1, canary to v2 (50% live, 100% shadow; …)``."""
    if deployment is None:
        return "nothing yet"
    state = deployment.state
    text = f"{deployment.model} v{deployment.stable.version}"
    if state is None:
        return text
    return (
        f"{text}, {state.strategy} to v{state.candidate_version} ({state.weight}% live, "
        f"{state.shadow_percent}% shadow; rollout {state.id})"
    )
