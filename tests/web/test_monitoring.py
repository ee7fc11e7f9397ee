"""Metrics and the prediction log on their own: Prometheus text, workers' numbers merged, batched
writes to SQLite and PostgreSQL, and nothing lost when the writer stops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from ridecast.monitoring import MetricSet, PredictionBatch, PredictionLog

pytestmark = pytest.mark.timeout(120)


def _batch(n: int, ride_prefix: str, version: str = "1") -> PredictionBatch:
    return PredictionBatch(
        model="ride-duration",
        version=version,
        source="test",
        pu=np.arange(1, n + 1, dtype=np.int64),
        do=np.full(n, 50, dtype=np.int64),
        distance=np.linspace(0.5, 9.5, n),
        predictions=np.linspace(3.0, 40.0, n),
        latency_ms=[0.5] * n,
        ride_ids=[f"{ride_prefix}-{i}" for i in range(n)],
        user_ids=None,
    )


def _samples(text_: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text_):
        for s in family.samples:
            labels = dict(s.labels)
            if "le" in labels and labels["le"] != "+Inf":
                labels["le"] = f"{float(labels['le']):g}"  # the parser may write 30 as 30.0
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def test_metrics_render_valid_prometheus_and_merge_workers(tmp_path: Path) -> None:
    shared = tmp_path / "share"
    a, b = MetricSet(share_dir=shared), MetricSet(share_dir=shared)
    for m in (a, b):
        m.record_request("/predict", 200, "1", 0.002)
        m.record_batch("ride-duration", "1", np.array([5.0, 25.0, 70.0]))
    a.record_request("/predict", 422, "", 0.0001)
    b.export()  # b plays another worker: its file sits next to a's
    os.replace(shared / f"{os.getpid()}.json", shared / "99999999.json")
    samples = _samples(a.render().decode())
    key = (("endpoint", "/predict"), ("model_version", "1"), ("status", "200"))
    assert samples[("ridecast_http_requests_total", key)] == 2
    err = (("endpoint", "/predict"), ("model_version", ""), ("status", "422"))
    assert samples[("ridecast_http_request_errors_total", err)] == 1
    value = (("model", "ride-duration"), ("model_version", "1"))
    assert samples[("ridecast_predictions_total", value)] == 6
    le30 = ("ridecast_prediction_value_bucket", (("le", "30"), *value))
    assert samples[le30] == 4  # 5 and 25 from each worker; 70 is above
    latency = (("endpoint", "/predict"), ("le", "0.0025"))  # sorted label order
    assert samples[("ridecast_http_request_duration_seconds_bucket", latency)] == 3


def _check_log(url: str, prefix: str) -> None:
    log = PredictionLog(url, flush_interval=0.05).start()
    for i in range(5):
        log.log(_batch(200, f"{prefix}-{i}"))
    log.log_feedback(f"{prefix}-0-7", "duration", 12.5)
    log.close()  # writes what is queued before returning
    assert log.written == 1000 and log.dropped == 0
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(
            text("select count(*) from predictions where ride_id like :p"), {"p": f"{prefix}-%"}
        ).scalar_one()
        row = conn.execute(
            text(
                "select p.prediction, p.pu_location_id, f.actual from predictions p "
                "join feedback f on f.ride_id = p.ride_id where p.ride_id = :r"
            ),
            {"r": f"{prefix}-0-7"},
        ).one()
    engine.dispose()
    assert n == 1000
    assert row[1] == 8 and row[2] == 12.5 and row[0] == pytest.approx(np.linspace(3, 40, 200)[7])


def test_prediction_log_sqlite(tmp_path: Path) -> None:
    _check_log(f"sqlite:///{tmp_path / 'log.db'}", "sqlite")


def test_prediction_log_postgres(postgres_url: str, unique_name: str) -> None:
    _check_log(postgres_url, unique_name)


def test_full_queue_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    metrics = MetricSet()
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", max_pending=300, metrics=metrics)
    log.log(_batch(200, "a"))
    log.log(_batch(200, "b"))  # would pass the limit: dropped and counted
    assert log.pending == 200 and log.dropped == 200
    assert log.flush() == 200
    log.close()
    assert b'ridecast_prediction_log_rows_total{state="dropped"} 200' in metrics.render()
