"""The prediction log's writer against what goes wrong: malformed batches, values the database
refuses, a database that goes away, many threads at once; rollout columns and error counts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from ridecast.monitoring import PredictionBatch, PredictionLog
from tests.monitoring.proxy import Relay

pytestmark = pytest.mark.timeout(120)


def counted(name: str, state: str) -> float:
    """A counter of the prediction log's, as this process's /metrics would show it."""
    return REGISTRY.get_sample_value(name, {"state": state}) or 0.0


def batch(n: int, prefix: str, **fields: object) -> PredictionBatch:
    values: dict[str, object] = {
        "model": "ride-duration",
        "version": "1",
        "source": "test",
        "pu": np.arange(1, n + 1, dtype=np.int64),
        "do": np.full(n, 50, dtype=np.int64),
        "distance": np.linspace(0.5, 9.5, n),
        "predictions": np.linspace(3.0, 40.0, n),
        "latency_ms": 0.5,
        "ride_ids": [f"{prefix}-{i}" for i in range(n)],
    }
    values.update(fields)
    return PredictionBatch(**values)  # type: ignore[arg-type]


def rows(url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_rollout_columns_and_error_counts_are_written(db_url: str) -> None:
    log = PredictionLog(db_url)
    log.log(batch(3, "plain"))
    log.log(batch(2, "canary", arm="canary", rollout_id="r1", request_ids=["q1", "q2"]))
    log.log_errors("ride-duration", "2", "canary", "r1", "web", 2)
    log.log_errors("ride-duration", "2", "canary", "r1", "web")
    log.log_errors("ride-duration", "1", "stable", None, "stream")
    log.close()
    got = rows(db_url, "select ride_id, arm, rollout_id, request_id from predictions order by id")
    assert got == [
        ("plain-0", "stable", None, None),
        ("plain-1", "stable", None, None),
        ("plain-2", "stable", None, None),
        ("canary-0", "canary", "r1", "q1"),
        ("canary-1", "canary", "r1", "q2"),
    ]
    errors = rows(
        db_url, "select version, arm, rollout_id, source, count from prediction_errors order by 1"
    )
    assert errors == [("1", "stable", None, "stream", 1), ("2", "canary", "r1", "web", 3)]


def test_writer_survives_a_malformed_batch_and_keeps_writing(tmp_path: object) -> None:
    """Before: an AttributeError in the writer killed its thread and lost every batch it held."""
    url = f"sqlite:///{tmp_path}/log.db"
    log = PredictionLog(url, flush_interval=0.02).start()
    log.log(batch(10, "before"))
    log.log(batch(5, "bad", pu=[1, 2, 3, 4, 5]))  # a list, not an array
    log.log(batch(10, "with"))
    wait_for(lambda: log.written == 20)
    log.log(batch(10, "after"))
    wait_for(lambda: log.written == 30)
    assert log.alive and log.dropped == 5 and log.pending == 0
    log.close()
    assert rows(url, "select count(*) from predictions") == [(30,)]


def test_a_refused_batch_is_dropped_alone_and_reported_once(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one value the database rejects failed every later flush until the queue filled."""
    dropped = counted("ridecast_prediction_log_rows_total", "dropped")
    log = PredictionLog(db_url)
    caplog.set_level(logging.WARNING, logger="ridecast.monitoring")
    for i in range(3):
        log.log(batch(20, f"good{i}"))
        log.log(batch(7, f"bad{i}", model=None))  # NOT NULL: refused by every database
    assert log.flush() == 60
    log.log(batch(20, "later"))
    log.log(batch(7, "bad-later", model=None))
    assert log.flush() == 20
    assert (log.written, log.dropped, log.rejected, log.pending) == (80, 28, 28, 0)
    assert log.last_error is None and "model" in (log.last_refusal or "")
    refusals = [r for r in caplog.records if "refused" in r.getMessage() and r.levelname == "ERROR"]
    assert len(refusals) == 1
    log.close()
    assert rows(db_url, "select count(*) from predictions") == [(80,)]
    assert counted("ridecast_prediction_log_rows_total", "dropped") - dropped == 28


def test_rows_wait_while_the_database_is_away_and_are_all_written_after(pg_url: str) -> None:
    parsed = urlparse(pg_url)
    relay = Relay(parsed.hostname or "127.0.0.1", parsed.port or 5432)
    via_relay = pg_url.replace(f":{parsed.port or 5432}/", f":{relay.port}/", 1)
    log = PredictionLog(via_relay, flush_interval=0.05).start()
    try:
        log.log(batch(100, "up"))
        wait_for(lambda: log.written == 100)
        relay.cut()
        for i in range(5):
            log.log(batch(100, f"down{i}"))
        wait_for(lambda: log.last_error is not None)
        time.sleep(0.3)  # several failed flushes
        assert log.pending == 500 and log.dropped == 0 and log.alive
        relay.restore()
        wait_for(lambda: log.written == 600)
        assert log.last_error is None
    finally:
        log.close()
        relay.close()
    assert rows(pg_url, "select count(*), count(distinct ride_id) from predictions") == [(600, 600)]


def test_pending_rows_lose_no_update_when_the_writer_runs_mid_update(tmp_path: object) -> None:
    """Before: the hot path and the writer updated the pending count without a lock.

    The interleaving is forced rather than hoped for: the hot path pauses between computing its
    new count and storing it, until the writer has stored its own (or 2 s have passed, which is
    what happens when a lock keeps the writer out). Without the lock the writer's decrement is
    overwritten: all 8 rows are written, yet 8 stay counted as pending."""
    paused = threading.Event()
    writer_stored = threading.Event()

    class PausingLog(PredictionLog):
        @property  # type: ignore[override]
        def _pending_rows(self) -> int:
            return int(self.__dict__.get("pending_rows_stored", 0))

        @_pending_rows.setter
        def _pending_rows(self, value: int) -> None:
            if threading.current_thread().name == "hot-path" and not paused.is_set():
                paused.set()
                writer_stored.wait(2.0)
            self.__dict__["pending_rows_stored"] = value
            if threading.current_thread().name == "writer":
                writer_stored.set()

    log = PausingLog(f"sqlite:///{tmp_path}/log.db")  # no writer thread: flushes are explicit
    log.log(batch(5, "first"))
    hot_path = threading.Thread(target=log.log, args=(batch(3, "second"),), name="hot-path")
    hot_path.start()
    assert paused.wait(10)
    writer = threading.Thread(target=log.flush, name="writer")
    writer.start()
    hot_path.join(10)
    writer.join(10)
    log.flush()
    assert (log.written, log.pending, log.dropped) == (8, 0, 0)
    log.close()


def test_feedback_counts_once_and_only_for_predicted_rides(db_url: str) -> None:
    states = ("recorded", "duplicate", "unknown_ride")
    before = [counted("ridecast_feedback_total", s) for s in states]
    log = PredictionLog(db_url, feedback_grace=0.5)
    log.log(batch(3, "ride"))
    log.log_feedback("ride-0", "duration", 10.0)
    log.log_feedback("ride-0", "duration", 99.0)  # repeated in the same flush
    log.log_feedback("ride-0", "tip", 2.0)  # another target of the same ride
    log.log_feedback("never", "duration", 5.0)
    log.log_feedback("late", "duration", 7.0)  # its prediction comes from another process
    log.flush()
    assert log.feedback_counts == {
        "recorded": 2,
        "duplicate": 1,
        "unknown_ride": 0,
        "dropped": 0,
        "rejected": 0,
    }
    other = PredictionLog(db_url)  # another worker, flushing its prediction a little later
    other.log(batch(1, "x", ride_ids=["late"]))
    other.close()
    log.log_feedback("ride-0", "duration", 11.0)  # repeated after it was stored
    log.flush()
    time.sleep(0.6)  # past the grace period
    log.flush()
    counts = log.feedback_counts
    assert (counts["recorded"], counts["duplicate"], counts["unknown_ride"]) == (3, 2, 1)
    log.close()
    stored = rows(db_url, "select ride_id, target, actual from feedback order by ride_id, target")
    assert stored == [
        ("late", "duration", 7.0),
        ("ride-0", "duration", 10.0),
        ("ride-0", "tip", 2.0),
    ]
    after = [counted("ridecast_feedback_total", s) for s in states]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 2, 1]


def test_pending_feedback_is_bounded(tmp_path: object) -> None:
    """Before: feedback queued without limit while the database was away."""
    dropped = counted("ridecast_feedback_total", "dropped")
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db", max_pending_feedback=5)
    for i in range(8):
        log.log_feedback(f"r{i}", "duration", 1.0)
    assert log.feedback_counts["dropped"] == 3
    assert counted("ridecast_feedback_total", "dropped") - dropped == 3
    log.close()


def test_credentials_never_reach_logs_or_errors(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ridecast.errors import RidecastError

    parsed = urlparse(postgres_url)
    secret = "s3cr3t-Pw"
    with_password = postgres_url.replace(f"{parsed.username}@", f"{parsed.username}:{secret}@", 1)
    caplog.set_level(logging.DEBUG)
    log = PredictionLog(with_password, max_pending=10)  # trust auth: any password works
    assert secret not in log.safe_url and "***" in log.safe_url and secret not in repr(log)
    log.log(batch(20, "over"))  # over max_pending: dropped with a warning naming the log
    log.close()
    assert log.dropped == 20
    with pytest.raises(RidecastError) as caught:
        PredictionLog(f"postgresql+psycopg://u:{secret}@127.0.0.1:1/x?password={secret}")
    assert secret not in str(caught.value) and "127.0.0.1:1" in str(caught.value)
    assert "dropped" in caplog.text
    assert secret not in caplog.text
