"""A batch run's Prometheus metrics, handed over when the run ends.

Prometheus cannot scrape a job that has exited, so ``ridecast batch score`` (and each month of a
backfill) pushes its figures to a Pushgateway (``RIDECAST_METRICS_PUSHGATEWAY``) and/or writes
them for node-exporter's textfile collector (``RIDECAST_METRICS_TEXTFILE_DIR``). The group is
the job, taxi type and month: a rerun of a month replaces its figures, other months stay.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from ridecast.monitoring.metrics import publish

if TYPE_CHECKING:
    from ridecast.batch.job import ScoreSummary
    from ridecast.settings import Settings

JOB = "ridecast-batch"


def run_registry(summary: ScoreSummary) -> CollectorRegistry:
    """The run's figures on a registry of their own (nothing else of the process is pushed)."""
    registry = CollectorRegistry()
    labels = ("taxi_type", "month", "model", "model_version")
    values = (
        summary.taxi_type.value,
        str(summary.month),
        summary.model_name,
        summary.model_version,
    )

    def gauge(name: str, documentation: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, documentation, (*labels, *extra), registry=registry)

    rows = gauge(
        "ridecast_batch_job_rows", "Rows of the run by state: read, scored, rejected.", ("state",)
    )
    for state, n in (
        ("read", summary.rows_read),
        ("scored", summary.rows_scored),
        ("rejected", summary.rows_rejected),
    ):
        rows.labels(*values, state).set(n)
    rejected = gauge(
        "ridecast_batch_job_rejected_rows", "Rows the run rejected, by reason.", ("reason",)
    )
    for reason, n in summary.rejected.items():
        rejected.labels(*values, reason).set(n)
    figures = (
        ("ridecast_batch_job_duration_seconds", "Wall time of the run.", summary.seconds),
        (
            "ridecast_batch_job_prediction_mean_minutes",
            "Mean predicted ride duration of the run.",
            summary.mean,
        ),
        (
            "ridecast_batch_job_prediction_std_minutes",
            "Standard deviation of the run's predicted ride durations.",
            summary.std,
        ),
        (
            "ridecast_batch_job_rmse_minutes",
            "Root mean squared error of the predictions against the actual durations.",
            summary.rmse,
        ),
        (
            "ridecast_batch_job_last_success_timestamp_seconds",
            "When the run finished (Unix time).",
            time.time(),
        ),
    )
    for name, documentation, value in figures:
        gauge(name, documentation).labels(*values).set(value)
    return registry


def publish_run(summary: ScoreSummary, settings: Settings) -> list[str]:
    """Push and/or write the run's metrics as ``settings`` say; where they went (empty when
    neither is set). Raises OSError when the Pushgateway or the folder cannot be reached."""
    if not settings.metrics_pushgateway and settings.metrics_textfile_dir is None:
        return []
    return publish(
        run_registry(summary),
        job=JOB,
        grouping={"taxi_type": summary.taxi_type.value, "month": str(summary.month)},
        pushgateway=settings.metrics_pushgateway,
        textfile_dir=settings.metrics_textfile_dir,
    )
