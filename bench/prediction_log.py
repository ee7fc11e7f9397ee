"""Prediction-log benchmark: the writer on SQLite against PostgreSQL, and the rollout queries.

    .venv/bin/python bench/prediction_log.py [--rows 500000] [--runs 2] [--query-rows 1000000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Writes: ``--rows`` predictions in micro-batches of ``--batch`` rows go through
:class:`~ridecast.monitoring.PredictionLog` (its writer thread running, as in a server) into a
fresh SQLite file and a fresh PostgreSQL schema, in interleaved runs. Reported: rows/s from the
first ``log`` call until ``close`` returned (everything written), the process CPU per row (what
the log takes from a server's cores), and the hot path's cost per row (``log`` itself).

Queries: ``--query-rows`` predictions of one canary rollout spread over an hour, then feedback
for 60% of the rides, 500 per flush in the order the rides were predicted (reported: feedback
rows/s and process CPU per feedback row, each one writing its ride's outcome), then
:func:`ridecast.control.measure.measure` and its per-version error queries alone
(:func:`~ridecast.control.measure.error_query`, one per version: count, MAE and variance from the
``outcomes`` table), over the whole hour and over the last minute (the size of an analysis step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ridecast.control.measure import Window, engine_for, error_query, measure, sides_of  # noqa: E402
from ridecast.monitoring import PredictionBatch, PredictionLog  # noqa: E402
from ridecast.rollout.state import RolloutState  # noqa: E402


def batches(n_rows: int, size: int, rollout: str, start: float = 0.0, span: float = 0.0):
    """Micro-batches as the web service makes them: string ride ids, per-request latency."""
    rng = np.random.default_rng(1)
    out = []
    for i, lo in enumerate(range(0, n_rows, size)):
        n = min(size, n_rows - lo)
        canary = i % 2 == 1
        out.append(
            PredictionBatch(
                model="ride-duration",
                version="2" if canary else "1",
                source="web:/predict",
                pu=rng.integers(1, 266, n),
                do=rng.integers(1, 266, n),
                distance=rng.uniform(0.5, 20, n),
                predictions=rng.uniform(3, 60, n),
                latency_ms=rng.exponential(2.0, n).tolist(),
                ride_ids=[f"ride-{lo + j}" for j in range(n)],
                user_ids=None,
                at=start + span * lo / n_rows if span else 0.0,
                arm="canary" if canary else "stable",
                rollout_id=rollout,
            )
        )
    return out


class Database:
    """A fresh SQLite file or PostgreSQL schema per use, removed afterwards."""

    def __init__(self, kind: str, postgres: str, workdir: Path) -> None:
        self.kind, self.postgres, self.workdir = kind, postgres, workdir
        self.schema = ""

    def __enter__(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / (name + '.db')}"
        self.schema = name
        engine = create_engine(self.postgres)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        engine.dispose()
        sep = "&" if "?" in self.postgres else "?"
        return f"{self.postgres}{sep}options={quote(f'-csearch_path={name}')}"

    def __exit__(self, *_: object) -> None:
        if self.schema:
            engine = create_engine(self.postgres)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            engine.dispose()


def write_run(url: str, rows: int, size: int) -> tuple[float, float, float]:
    work = batches(rows, size, "bench")
    log = PredictionLog(url).start()
    t0, c0 = time.perf_counter(), time.process_time()
    hot = 0.0
    for b in work:
        h = time.perf_counter()
        log.log(b)
        hot += time.perf_counter() - h
    log.close(timeout=600)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert log.written == rows and log.dropped == 0, (log.written, log.dropped, log.last_error)
    return rows / elapsed, cpu / rows * 1e6, hot / rows * 1e9


def fill(url: str, rows: int, start: float, span: float, flush: int = 500) -> tuple[float, float]:
    """The predictions, then feedback for 60% of the rides in the order they were predicted,
    ``flush`` at a time as a server's writer flushes them. Returns the feedback's rows/s and the
    process CPU per feedback row."""
    log = PredictionLog(url, max_pending=rows + 1, max_pending_feedback=rows + 1)
    for b in batches(rows, 1000, "bench-q", start, span):
        log.log(b)
    log.flush()
    analyze(log.engine)  # as autovacuum would have by now: the feedback lookups need statistics
    rng = np.random.default_rng(2)
    ended = np.flatnonzero(rng.random(rows) < 0.6).tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    for lo in range(0, len(ended), flush):
        for i in ended[lo : lo + flush]:
            log.log_feedback(f"ride-{i}", "duration", float(rng.uniform(3, 60)))
        log.flush()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    log.close(timeout=600)
    assert log.written == rows, (log.written, log.last_error)
    assert log.feedback_counts["recorded"] == len(ended), log.feedback_counts
    analyze(create_engine(url))
    return len(ended) / elapsed, cpu / len(ended) * 1e6


def analyze(engine: Any) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("predictions", "feedback", "outcomes"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    fn()  # warm the cache: analysis runs every few seconds on a warm database
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def query_bench(url: str, rows: int) -> dict[str, float]:
    end = time.time()
    start = end - 3600.0
    t = time.perf_counter()
    feedback_rps, feedback_cpu = fill(url, rows, start, 3600.0)
    fill_s = time.perf_counter() - t
    state = RolloutState(
        id="bench-q", model="ride-duration", strategy="canary", stable_version="1",
        candidate_version="2",
    )  # fmt: skip
    engine = engine_for(url)
    out = {"fill_s": fill_s, "feedback_rps": feedback_rps, "feedback_cpu": feedback_cpu}
    for label, lo in (("hour", start), ("minute", end - 60.0)):
        queries = [
            error_query(Window(state, lo, end), arms, version, "duration")
            for _, arms, version in sides_of(state)
        ]

        def query(queries: list[Any] = queries) -> object:
            with engine.connect() as conn:
                return [conn.execute(q).one() for q in queries]

        out[f"query_{label}_s"] = timed(query)
        out[f"measure_{label}_s"] = timed(lambda lo=lo: measure(engine, state, lo, end, "duration"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--query-rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql")
    with tempfile.TemporaryDirectory(prefix="ridecast-bench-log-") as tmp:
        workdir = Path(tmp)
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
        for run in range(args.runs):
            for kind in kinds if run % 2 == 0 else reversed(kinds):
                with Database(kind, args.postgres, workdir) as url:
                    results[kind].append(write_run(url, args.rows, args.batch))
        print(f"\nWrites: {args.rows:,} rows in batches of {args.batch}, {args.runs} runs (median)")
        print(f"{'database':<12} {'rows/s':>10} {'CPU µs/row':>11} {'log() ns/row':>13}")
        med = {}
        for kind in kinds:
            rps, cpu, hot = (statistics.median(x) for x in zip(*results[kind], strict=True))
            med[kind] = rps
            print(f"{kind:<12} {rps:>10,.0f} {cpu:>11.2f} {hot:>13.0f}")
        print(f"PostgreSQL / SQLite rows/s: {med['postgresql'] / med['sqlite']:.2f}x")

        if args.query_rows:
            n = args.query_rows
            print(f"\nQueries over {n:,} predictions (60% with feedback), median of 3")
            print(
                f"{'database':<12} {'fill s':>7} {'feedback/s (CPU µs)':>20} {'error query':>24} "
                f"{'measure()':>24}"
            )
            print(
                f"{'':<12} {'':>7} {'':>20} {'hour':>11} {'last min':>12} {'hour':>11} "
                f"{'last min':>12}"
            )
            for kind in kinds:
                with Database(kind, args.postgres, workdir) as url:
                    q = query_bench(url, args.query_rows)
                print(
                    f"{kind:<12} {q['fill_s']:>7.1f} "
                    f"{q['feedback_rps']:>12,.0f} ({q['feedback_cpu']:>5.1f}) "
                    f"{q['query_hour_s'] * 1000:>9.0f}ms "
                    f"{q['query_minute_s'] * 1000:>10.1f}ms {q['measure_hour_s'] * 1000:>9.0f}ms "
                    f"{q['measure_minute_s'] * 1000:>10.1f}ms"
                )


if __name__ == "__main__":
    main()
