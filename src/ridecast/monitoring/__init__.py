"""What a deployment tells its operators: Prometheus metrics and the prediction log.

Both cost almost nothing on the hot path. :mod:`.metrics` holds every mode's metrics in
prometheus_client (the web requests are tallied in plain dicts and added every second);
:class:`PredictionLog` (:mod:`.prediction_log`) only appends to a queue that a writer thread
empties into SQLite or PostgreSQL, with the ground truth arriving later as feedback. The web
service, the batch job and the stream consumers share both. :mod:`.drift` compares what a model
sees with its training data.

The names below load on first use, so that ``ridecast --help`` (which imports
:mod:`.cli`, and so this package) does not pay for SQLAlchemy and Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ridecast.monitoring.database import mask_url
    from ridecast.monitoring.metrics import (
        LATENCY_BUCKETS,
        MODEL_CALL_BUCKETS,
        PREDICTION_BUCKETS,
        RequestTally,
        log_metrics,
        rollout_metrics,
        web_metrics,
    )
    from ridecast.monitoring.prediction_log import PredictionLog
    from ridecast.monitoring.records import PredictionBatch

_HOME = {
    "mask_url": "database",
    "LATENCY_BUCKETS": "metrics",
    "MODEL_CALL_BUCKETS": "metrics",
    "PREDICTION_BUCKETS": "metrics",
    "RequestTally": "metrics",
    "log_metrics": "metrics",
    "rollout_metrics": "metrics",
    "web_metrics": "metrics",
    "PredictionLog": "prediction_log",
    "PredictionBatch": "records",
}

__all__ = [
    "LATENCY_BUCKETS",
    "MODEL_CALL_BUCKETS",
    "PREDICTION_BUCKETS",
    "PredictionBatch",
    "PredictionLog",
    "RequestTally",
    "log_metrics",
    "mask_url",
    "rollout_metrics",
    "web_metrics",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
