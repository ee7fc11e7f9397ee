"""The stream consumer: read a micro-batch, validate, predict, write outputs and acknowledge.

One loop, top to bottom::

    messages = broker.read(...)                      # up to batch_size events
    batch, poison = decode_batch(messages)           # valid rides as arrays; poison with reasons
    outputs = service.outputs(predictor, batch)      # one vectorized predict call
    broker.complete(ack=messages, outputs + dead letters)   # one transaction

Guarantees a caller may rely on:

* at-least-once: an event is acknowledged only in the same transaction that writes its output
  (or its dead letter); a consumer killed at any moment leaves its events pending, and a live
  consumer of the group claims them once they are ``claim_idle_ms`` idle;
* poison never blocks the stream: invalid events, and events delivered more than
  ``max_deliveries`` times (e.g. ones that crash the model), go to the dead-letter stream with the
  error and the original payload, and the loop goes on;
* bounded memory: at most ``batch_size`` events are read and not yet acknowledged at any time;
* broker outages are waited out with exponential backoff (0.1 s doubling to 5 s, jittered),
  never by crashing; nothing is acknowledged that was not written.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ridecast.settings import Settings
from ridecast.stream.broker import Broker, BrokerUnavailable, GroupMissing, Message, Output
from ridecast.stream.events import dead_letter, decode_batch
from ridecast.stream.services import Service, dead_letter_stream

if TYPE_CHECKING:
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
        )


@dataclass
class ConsumerStats:
    read: int = 0
    predicted: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    batches: int = 0
    reconnects: int = 0
    failed_batches: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        uptime = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.predicted:,} predicted ({self.predicted / uptime:,.0f}/s over {uptime:,.0f}s), "
            f"{self.dead_lettered:,} dead-lettered, "
            f"{self.claimed:,} claimed from other consumers, {self.reconnects} reconnects"
        )


@lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    """Prometheus metrics, registered once per process (labels tell consumers apart)."""
    from prometheus_client import Counter, Gauge, Histogram

    labels = ["service", "group"]
    return {
        "events": Counter(
            "ridecast_stream_events",
            "Events handled, by outcome (predicted or dead_lettered).",
            [*labels, "outcome"],
        ),
        "claimed": Counter(
            "ridecast_stream_claimed_events",
            "Pending events claimed after their consumer stayed idle too long.",
            labels,
        ),
        "batch_seconds": Histogram(
            "ridecast_stream_batch_seconds",
            "Time to decode, predict, write and acknowledge one micro-batch.",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        ),
        "age": Histogram(
            "ridecast_stream_event_age_seconds",
            "Age of each batch's oldest event (time since it was produced) when acknowledged.",
            labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ),
        "in_flight": Gauge(
            "ridecast_stream_in_flight_events", "Events read and not yet acknowledged.", labels
        ),
        "reconnects": Counter(
            "ridecast_stream_reconnects", "Broker outages waited out with backoff.", labels
        ),
        "version": Gauge(
            "ridecast_stream_model_version", "Model version the consumer predicts with.", labels
        ),
    }


class StreamConsumer:
    """Runs one :class:`Service` against one broker. ``predictor`` can be swapped at any time
    (one reference assignment) by ``reload``, which is polled every ``reload_every_s``."""

    def __init__(
        self,
        broker: Broker,
        service: Service,
        predictor: Predictor,
        config: ConsumerConfig,
        *,
        reload: Callable[[Predictor], Predictor | None] | None = None,
        reload_every_s: float = 30.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.broker = broker
        self.service = service
        self.predictor = predictor
        self.config = config
        self.reload = reload
        self.reload_every_s = reload_every_s
        self.log = log or (lambda message: None)
        self.stats = ConsumerStats()
        m = _metrics()
        key = (service.name, config.group)
        self._predicted = m["events"].labels(*key, "predicted")
        self._dead = m["events"].labels(*key, "dead_lettered")
        self._claimed = m["claimed"].labels(*key)
        self._batch_seconds = m["batch_seconds"].labels(*key)
        self._age = m["age"].labels(*key)
        self._in_flight = m["in_flight"].labels(*key)
        self._reconnects = m["reconnects"].labels(*key)
        self._version = m["version"].labels(*key)
        self._set_version_metric()

    def _set_version_metric(self) -> None:
        with contextlib.suppress(ValueError):  # non-numeric versions have no gauge value
            self._version.set(float(self.predictor.version))

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
        # A model failure leaves the batch unacknowledged: it is redelivered after the idle
        # timeout and dead-lettered once it exceeds max_deliveries.
        payloads = self.service.outputs(self.predictor, batch)
        outputs = [Output(p, m.id) for p, m in zip(payloads, batch.messages, strict=True)]
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
        self.stats.batches += 1
        self.stats.predicted += len(outputs)
        self.stats.dead_lettered += len(dead)
        self._predicted.inc(len(outputs))
        if dead:
            self._dead.inc(len(dead))
        self._batch_seconds.observe(time.perf_counter() - started)
        oldest = messages[0].produced_ms  # brokers deliver in id order
        self._age.observe(max(time.time() * 1000 - oldest, 0.0) / 1000)

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
        next_reload = time.monotonic() + self.reload_every_s
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
            now = time.monotonic()
            if self.reload is not None and now >= next_reload:
                next_reload = now + self.reload_every_s
                self._maybe_reload()
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

    def _maybe_reload(self) -> None:
        assert self.reload is not None
        try:
            fresh = self.reload(self.predictor)
        except Exception as exc:  # the registry being away must not stop predictions
            self.log(f"model reload check failed: {exc}")
            return
        if fresh is not None and fresh.version != self.predictor.version:
            self.log(f"{self.service.name}: model v{self.predictor.version} → v{fresh.version}")
            self.predictor = fresh
            self._set_version_metric()
