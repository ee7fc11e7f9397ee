"""Metrics and the prediction log on their own: the request tally reaches prometheus_client,
workers' numbers add up in multiprocess mode and a dead worker leaves the gauges, batched writes
to SQLite and PostgreSQL, and nothing lost when the writer stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.monitoring.metrics import (
    LATENCY_BUCKETS,
    RequestTally,
    add_observations,
    exposition,
    mark_worker_dead,
    prepare_multiprocess_dir,
)

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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text_: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text_):
        for s in family.samples:
            labels = dict(s.labels)
            if "le" in labels and labels["le"] != "+Inf":
                labels["le"] = f"{float(labels['le']):g}"  # the parser may write 30 as 30.0
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_tally_reaches_prometheus_once_per_request() -> None:
    endpoint, model = f"/t-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    tally = RequestTally()
    tally.record_request(endpoint, 200, "1", 0.002)
    tally.record_request(endpoint, 200, "1", 0.002)
    tally.record_request(endpoint, 422, "", 0.0001)
    tally.record_batch(model, "1", np.array([5.0, 25.0, 70.0, np.nan]))
    many = np.linspace(0.5, 99.5, 100)  # the numpy path (more than 32 values)
    tally.record_batch(model, "1", many)
    ok = {"endpoint": endpoint, "status": "200", "model_version": "1"}
    assert _value("ridecast_http_requests_total", **ok) == 0  # counted, not yet added
    tally.flush()
    tally.flush()  # a second flush adds nothing
    bad = {"endpoint": endpoint, "status": "422", "model_version": ""}
    assert _value("ridecast_http_requests_total", **ok) == 2
    assert _value("ridecast_http_requests_total", **bad) == 1
    assert _value("ridecast_http_request_errors_total", **bad) == 1
    assert _value("ridecast_http_request_errors_total", **ok) == 0
    latency = {"endpoint": endpoint, "model_version": "1"}
    assert _value("ridecast_http_request_duration_seconds_bucket", **latency, le="0.001") == 0
    assert _value("ridecast_http_request_duration_seconds_bucket", **latency, le="0.0025") == 2
    assert _value("ridecast_http_request_duration_seconds_sum", **latency) == pytest.approx(0.004)
    version = {"model": model, "model_version": "1"}
    assert _value("ridecast_predictions_total", **version) == 104
    expected_le30 = 2 + int((many <= 30).sum())  # 5 and 25; 70 is above, NaN is not a value
    assert _value("ridecast_prediction_value_bucket", **version, le="30.0") == expected_le30
    assert _value("ridecast_prediction_value_count", **version) == 103
    assert _value("ridecast_model_call_rides_bucket", model=model, le="4.0") == 1
    assert _value("ridecast_model_call_rides_count", model=model) == 2
    tally.record_request(endpoint, 200, "1", 0.3)
    tally.stop()  # flushes what is left
    assert _value("ridecast_http_requests_total", **ok) == 3
    assert _value("ridecast_http_request_duration_seconds_bucket", **latency, le="0.25") == 2


def test_add_observations_equals_observing_one_by_one() -> None:
    values = np.array([0.0001, 0.0005, 0.003, 0.003, 0.2, 7.0])
    one, bulk = CollectorRegistry(), CollectorRegistry()
    a = Histogram("x_seconds", "x", ["k"], buckets=LATENCY_BUCKETS, registry=one)
    b = Histogram("x_seconds", "x", ["k"], buckets=LATENCY_BUCKETS, registry=bulk)
    for v in values:
        a.labels("v").observe(float(v))
    counts = np.bincount(np.searchsorted(LATENCY_BUCKETS, values), minlength=13)
    add_observations(b.labels("v"), counts.tolist(), float(values.sum()))
    assert generate_latest(one) == generate_latest(bulk)
    with pytest.raises(ValueError, match="bucket counts"):
        add_observations(b.labels("v"), [1.0, 2.0], 3.0)


# One worker of a server, as prometheus_client's multiprocess mode sees it: it counts two
# requests, serves a version, and waits until its stdin closes (or it is killed).
_WORKER = """
import sys
import numpy as np
from ridecast.monitoring.metrics import RequestTally, web_metrics
tally = RequestTally()
tally.record_request("/predict", 200, "1", 0.002)
tally.record_request("/predict", 200, "1", 0.002)
tally.record_batch("ride-duration", "1", np.array([12.0, 18.0]))
tally.flush()
web_metrics().model_info.labels("ride-duration", "1").set(1)
print("ready", flush=True)
sys.stdin.read()
"""


def test_workers_add_up_and_a_dead_workers_gauges_leave(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"left by an earlier server")
    prepare_multiprocess_dir(shared)
    assert not list(shared.glob("*.db")), "an earlier server's files must go"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        samples = _samples(exposition(shared).decode())
        ok = (("endpoint", "/predict"), ("model_version", "1"), ("status", "200"))
        assert samples[("ridecast_http_requests_total", ok)] == 4
        value = (("model", "ride-duration"), ("model_version", "1"))
        assert samples[("ridecast_predictions_total", value)] == 4
        assert samples[("ridecast_prediction_value_bucket", (("le", "20"), *value))] == 4

        def served_by() -> set[str]:
            families = text_string_to_metric_families(exposition(shared).decode())
            return {
                s.labels["pid"]
                for f in families
                if f.name == "ridecast_model_info"
                for s in f.samples
                if s.value == 1
            }

        assert served_by() == {str(w.pid) for w in workers}
        victim, survivor = workers
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert str(victim.pid) in served_by(), "files stay until the worker is reported dead"
        mark_worker_dead(victim.pid, shared)
        assert served_by() == {str(survivor.pid)}  # the dead worker's version is gone
        after = _samples(exposition(shared).decode())
        assert after[("ridecast_http_requests_total", ok)] == 4  # its requests still counted
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait(timeout=10)


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
    before = _value("ridecast_prediction_log_rows_total", state="dropped")
    written = _value("ridecast_prediction_log_rows_total", state="written")
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", max_pending=300)
    log.log(_batch(200, "a"))
    log.log(_batch(200, "b"))  # would pass the limit: dropped and counted
    assert log.pending == 200 and log.dropped == 200
    assert log.flush() == 200
    log.close()
    assert _value("ridecast_prediction_log_rows_total", state="dropped") - before == 200
    assert _value("ridecast_prediction_log_rows_total", state="written") - written == 200
