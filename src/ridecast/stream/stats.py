"""What a stream consumer counts: its own tallies (for status lines) and its Prometheus
metrics, registered once per process and labelled by service and group."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics


@dataclass
class ConsumerStats:
    read: int = 0
    predicted: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    batches: int = 0
    reconnects: int = 0
    failed_batches: int = 0
    shadowed: int = 0
    shadow_failures: int = 0
    fallbacks: int = 0  # events a failing candidate left to the stable version
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        uptime = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.predicted:,} predicted ({self.predicted / uptime:,.0f}/s over {uptime:,.0f}s), "
            f"{self.dead_lettered:,} dead-lettered, "
            + (f"{self.shadowed:,} shadowed, " if self.shadowed else "")
            + (f"{self.shadow_failures:,} shadow failures, " if self.shadow_failures else "")
            + (
                f"{self.fallbacks:,} answered by stable for a failing candidate, "
                if self.fallbacks
                else ""
            )
            + f"{self.claimed:,} claimed from other consumers, {self.reconnects} reconnects"
        )


@dataclass(frozen=True)
class ConsumerMetrics:
    """A consumer's Prometheus metrics; every series is labelled by service and group."""

    events: Counter  # + outcome: predicted or dead_lettered
    claimed: Counter
    batch_seconds: Histogram
    age: Histogram
    in_flight: Gauge
    reconnects: Counter
    version: Gauge
    answers: Counter  # + version and arm
    fallbacks: Counter  # + version
    shadow_failures: Counter


@lru_cache(maxsize=1)
def consumer_metrics() -> ConsumerMetrics:
    """The consumers' metrics, registered once per process on prometheus_client's default
    registry (the one ``--metrics-port`` serves), next to the prediction log's and the
    rollouts' (:mod:`ridecast.monitoring.metrics`)."""
    disable_created_metrics()  # as every ridecast metric: no <name>_created series

    labels = ["service", "group"]
    return ConsumerMetrics(
        events=Counter(
            "ridecast_stream_events",
            "Events handled, by outcome (predicted or dead_lettered).",
            [*labels, "outcome"],
        ),
        claimed=Counter(
            "ridecast_stream_claimed_events",
            "Pending events claimed after their consumer stayed idle too long.",
            labels,
        ),
        batch_seconds=Histogram(
            "ridecast_stream_batch_seconds",
            "Time to decode, predict, write and acknowledge one micro-batch.",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        ),
        age=Histogram(
            "ridecast_stream_event_age_seconds",
            "Age of each batch's oldest event (time since it was produced) when acknowledged.",
            labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ),
        in_flight=Gauge(
            "ridecast_stream_in_flight_events",
            "Events read and not yet acknowledged.",
            labels,
            multiprocess_mode="livesum",
        ),
        reconnects=Counter(
            "ridecast_stream_reconnects", "Broker outages waited out with backoff.", labels
        ),
        version=Gauge(
            "ridecast_stream_model_version",
            "Stable model version the consumer predicts with.",
            labels,
            multiprocess_mode="livemax",
        ),
        answers=Counter(
            "ridecast_stream_predictions",
            "Events answered, by the version that answered and its arm (shadow copies have "
            "arm shadow).",
            [*labels, "version", "arm"],
        ),
        fallbacks=Counter(
            "ridecast_stream_candidate_fallbacks",
            "Events a live candidate failed on, answered by the stable version instead.",
            [*labels, "version"],
        ),
        shadow_failures=Counter(
            "ridecast_stream_shadow_failures",
            "Shadow copies that could not be predicted (the live answers were written).",
            labels,
        ),
    )
