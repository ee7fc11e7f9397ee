"""What a deployment tells its operators: Prometheus metrics and the prediction log.

Both cost almost nothing on the hot path. :class:`MetricSet` (:mod:`.metrics`) keeps its numbers
in plain dicts and renders them when scraped; :class:`PredictionLog` (:mod:`.prediction_log`)
only appends to a queue that a writer thread empties into SQLite or PostgreSQL, with the ground
truth arriving later as feedback. The web service, the batch job and the stream consumers share
both.
"""

from __future__ import annotations

from ridecast.monitoring.database import mask_url
from ridecast.monitoring.metrics import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    PREDICTION_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    Labels,
    Metric,
    MetricSet,
)
from ridecast.monitoring.prediction_log import PredictionLog
from ridecast.monitoring.records import PredictionBatch

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "LATENCY_BUCKETS",
    "PREDICTION_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Labels",
    "Metric",
    "MetricSet",
    "PredictionBatch",
    "PredictionLog",
    "mask_url",
]
