"""The dashboard's queries on real databases (a SQLite file and a PostgreSQL schema of the test's
own), written by the real prediction log and batch-results writer: the figures they return are
the rows' own, an empty or table-less database reads as "no data yet", and every JSON answer and
page is 200 on it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from ridecast.dashboard import live
from ridecast.dashboard.app import create_dashboard, standalone_app
from ridecast.dashboard.batches import batch_view
from ridecast.dashboard.live import LATENCY_EDGES_MS, distinct_values, live_view
from ridecast.dashboard.rollouts import rollouts_view
from ridecast.dashboard.sources import Sources
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.monitoring.batch_results import BatchResults, DurationHistogram, read_results
from ridecast.monitoring.schema import batch_results, predictions
from ridecast.settings import Settings
from tests.web.conftest import _serve_in_thread

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
    else:
        yield request.getfixturevalue("pg_url")  # a fresh schema, dropped afterwards


def _bin(ms: float) -> int:
    return next((i for i, edge in enumerate(LATENCY_EDGES_MS) if ms <= edge), len(LATENCY_EDGES_MS))


def test_an_empty_database_reads_as_no_data_yet(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):  # a file that exists but holds none of the tables
        engine = create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
        engine.dispose()
    sources = Sources(db_url)
    sources.check()
    assert live_view(sources)["empty"] is True
    assert rollouts_view(sources) == {"empty": True, "rollouts": [], "rollout": None}
    assert batch_view(sources) == {"empty": True, "runs": []}
    settings = Settings(home=tmp_path, tracking_uri=None, prediction_log_url=db_url)
    for url in _serve_in_thread(standalone_app(create_dashboard(settings))):  # type: ignore[arg-type]
        client = httpx.Client(base_url=url, timeout=10)
        for path in ("", "rollouts", "batch", "drift"):
            page = client.get(f"/dashboard/{path}")
            assert page.status_code == 200 and "<title>" in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
        for api in ("live", "rollouts", "batch", "drift?subject=last:200"):
            answer = client.get(f"/dashboard/api/{api}")
            assert answer.status_code == 200, answer.text
        assert client.get("/dashboard/api/live").json()["empty"] is True
        assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
        assert client.get("/dashboard", follow_redirects=True).url.path == "/dashboard/"
        assert client.get("/dashboard/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    # Reading changed nothing: the dashboard creates no table.
    engine = create_engine(db_url)
    with engine.connect() as conn:
        names = set(conn.dialect.get_table_names(conn))
    engine.dispose()
    assert not names & {"predictions", "rollouts", "batch_results"}


def test_live_figures_are_the_rows_own(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    rng = np.random.default_rng(1)
    log = PredictionLog(db_url)
    latencies = {"1": rng.lognormal(0.0, 0.8, 700), "2": rng.lognormal(1.5, 0.6, 300)}
    values = {"1": rng.normal(15, 4, 700), "2": rng.normal(18, 5, 300)}
    for version, lat in latencies.items():
        n = len(lat)
        for part in range(5):  # five model calls spread over the last 4 minutes
            rows = slice(part * n // 5, (part + 1) * n // 5)
            size = len(lat[rows])
            log.log(
                PredictionBatch(
                    "ride-duration", version, "web:/predict",
                    np.full(size, 74), np.full(size, 75), np.full(size, 2.0),
                    values[version][rows], lat[rows].tolist(),
                    [f"r{version}-{part}-{i}" for i in range(size)],
                    at=now - 230 + 50 * part,
                )
            )  # fmt: skip
    # Left out of the live page: shadow copies, batch answers, and anything older than 5 minutes.
    for arm, source, at in (("shadow", "web:/predict", now - 10), ("stable", "batch", now - 10)):
        log.log(
            PredictionBatch(
                "ride-duration", "2", source, np.full(50, 1), np.full(50, 2), np.full(50, 1.0),
                np.full(50, 99.0), 1.0, arm=arm, at=at,
            )
        )  # fmt: skip
    log.log(
        PredictionBatch(
            "ride-duration", "1", "web:/predict", np.full(9, 1), np.full(9, 2), np.full(9, 1.0),
            np.full(9, 1.0), 1.0, at=now - 3600,
        )
    )  # fmt: skip
    log.log_errors("ride-duration", "2", "stable", None, "web:/predict", 3)
    log.close()

    view = live_view(Sources(db_url), "ride-duration", "5m", now=now + 1)
    assert view["model"] == "ride-duration" and not view["empty"]
    by_version = {v["version"]: v for v in view["versions"]}
    assert by_version["1"]["requests"] == 700 and by_version["2"]["requests"] == 300
    assert by_version["2"]["errors"] == 3 and by_version["1"]["errors"] == 0
    assert by_version["2"]["error_rate"] == pytest.approx(3 / 303)
    for version, lat in latencies.items():
        figures = by_version[version]
        assert figures["mean_prediction"] == pytest.approx(values[version].mean())
        for q, key in ((0.5, "p50_ms"), (0.99, "p99_ms")):
            exact = float(np.percentile(lat, 100 * q, method="inverted_cdf"))
            assert _bin(figures[key]) == _bin(exact), (version, key, figures[key], exact)
        step = view["step"]
        assert sum(view["series"]["rps"][version]) * step == pytest.approx(len(lat))
        shares = view["distribution"]["shares"][version]
        assert sum(shares) == pytest.approx(1.0)
        edges = view["distribution"]["edges"]
        counts = np.histogram(values[version], bins=edges)[0]
        assert np.allclose(np.array(shares) * len(lat), counts)
    assert (
        sum(view["series"]["error_rate"]["2"][i] or 0 for i in range(len(view["series"]["t"]))) > 0
    )

    assert {v["sampled_one_in"] for v in view["versions"]} == {1}  # small: every row read

    # A busy window is read 1 row in k: the totals are estimates, close to the truth.
    monkeypatch.setattr(live, "SAMPLE_ROWS", 100)
    busy = live_view(Sources(db_url), "ride-duration", "5m")["versions"]
    sampled = {v["version"]: v for v in busy}
    assert sampled["1"]["sampled_one_in"] == 7  # 700 rows of v1 in the window
    assert sampled["2"]["sampled_one_in"] == 4  # 300 live, 50 shadow and 50 batch rows of v2
    assert abs(sampled["1"]["requests"] - 700) <= 7 * 4
    assert abs(sampled["1"]["mean_prediction"] - values["1"].mean()) < 1.5

    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert distinct_values(conn, predictions.c.model) == ["ride-duration"]
        found = distinct_values(conn, predictions.c.version, predictions.c.model == "ride-duration")
    engine.dispose()
    assert found == ["1", "2"]


def _record(run_id: str, **extra: object) -> dict[str, object]:
    predicted, actual = DurationHistogram(), DurationHistogram()
    predicted.add(np.array([3.2, 14.9, 14.1, 75.0, -1.0]))
    actual.add(np.array([4.0, 12.5, 16.0, 30.0, 59.99]))
    return {
        "kind": "score",
        "taxi_type": "green",
        "month": "2025-02",
        "model_name": "ride-duration",
        "model_version": "1",
        "run_id": run_id,
        "rows_read": 7,
        "rows_scored": 5,
        "rows_rejected": 2,
        "rejected": {"unknown_zone": 2},
        "mean_prediction": 21.2,
        "std_prediction": math.nan,  # JSON has no NaN: stored as null
        "rmse": 9.5,
        "mae": 6.25,
        "histograms": {"predicted": predicted.to_dict(), "actual": actual.to_dict()},
        **extra,
    }


def test_batch_results_are_published_once_per_month_and_version(db_url: str) -> None:
    results = BatchResults(db_url)
    assert results.publish(_record("run-1"))
    assert results.publish(_record("run-2", rows_read=8))  # a rerun replaces its row
    assert results.publish(_record("run-3", model_version="2"))
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(batch_results)).scalar_one() == 2
    rows = read_results(engine)
    engine.dispose()
    one = next(r for r in rows if r["version"] == "1")
    assert one["run_id"] == "run-2" and one["rows_read"] == 8 and one["std_prediction"] is None
    histogram = one["details"]["histograms"]["predicted"]
    assert histogram["below"] == 1 and histogram["above"] == 1
    assert (
        histogram["counts"][14] == 2
        and histogram["counts"][3] == 1
        and sum(histogram["counts"]) == 3
    )
    view = batch_view(Sources(db_url))
    assert [r["version"] for r in view["runs"]] == ["1", "2"]
    assert view["runs"][0]["rejected"] == {"unknown_zone": 2} and view["runs"][0]["mae"] == 6.25


def test_publishing_to_an_unreachable_database_warns_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    results = BatchResults("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert results.publish(_record("run-1")) is False
    assert "not published" in caplog.text and "green 2025-02 v1" in caplog.text
    assert results.publish({"month": "2025-02"}) is False  # a record that is not a run's


def _rollout(store: Any, text: str, rollout_id: str, now: float) -> Any:
    from ridecast.rollout.spec import initial_state, parse_spec

    state = initial_state(
        parse_spec(text), rollout_id=rollout_id, stable_version="1", candidate_version="2", now=now
    )
    return store.create(state, reason="started by the test")


def test_rollout_figures_are_the_controllers_own(db_url: str) -> None:
    """The A/B sequence ends at the controller's measurement of the test, and the shadow's share
    of answers more than 2 minutes apart is the shadow report's, on either database."""
    from ridecast.control.measure import measure
    from ridecast.control.store import RolloutStore

    t0 = time.time() - 120
    store = RolloutStore(db_url)  # brings the database to the newest schema
    ab = _rollout(store, "model: ride-duration\ncandidate: '2'\nstrategy: ab\n", "r-ab", t0)
    shadow = _rollout(store, "model: ride-tip\ncandidate: '2'\nstrategy: shadow\n", "r-sh", t0)
    rng = np.random.default_rng(5)
    actual = rng.gamma(4.0, 4.0, 400)
    log = PredictionLog(db_url)
    n = len(actual)
    arms = (("a", "1", 4.0, slice(0, n // 2)), ("b", "2", 2.5, slice(n // 2, n)))
    for arm, version, noise, part in arms:
        size = len(actual[part])
        log.log(
            PredictionBatch(
                "ride-duration", version, "web:/predict", np.full(size, 74), np.full(size, 75),
                np.full(size, 2.0), actual[part] + rng.normal(0, noise, size), 1.0,
                [f"ab-{i}" for i in range(part.start, part.stop)], arm=arm, rollout_id=ab.id,
                at=t0 + 5 + (0 if arm == "a" else 1),
            )
        )  # fmt: skip
    live = rng.gamma(4.0, 4.0, 300)
    copies = live + rng.normal(0, 2.5, 300)
    for arm, version, values in (("stable", "1", live), ("shadow", "2", copies)):
        log.log(
            PredictionBatch(
                "ride-tip", version, "web:/predict", np.full(300, 74), np.full(300, 75),
                np.full(300, 2.0), values, 1.0, [f"sh-{i}" for i in range(300)], arm=arm,
                rollout_id=shadow.id, request_ids=[f"q-{i}" for i in range(300)], at=t0 + 7,
            )
        )  # fmt: skip
    log.flush()
    for i, value in enumerate(actual):
        log.log_feedback(f"ab-{i}", "duration", float(value))
    log.close()

    sources = Sources(db_url)
    now = time.time()
    m = measure(sources.log, ab, t0, now, "duration")
    view = rollouts_view(sources, ab.id, now=now)["rollout"]["ab"]
    assert view["variants"]["a"]["n"] == m.stable.joined == n // 2
    assert view["variants"]["b"]["n"] == m.candidate.joined == n - n // 2
    seq = view["sequence"]
    assert seq["n_a"][-1] == n // 2 and seq["n_b"][-1] == n - n // 2
    assert seq["d_hat"][-1] == pytest.approx(m.candidate.mae - m.stable.mae)
    assert seq["low"][-1] < seq["d_hat"][-1] < seq["high"][-1]
    assert view["variants"]["interval"] == pytest.approx([seq["low"][-1], seq["high"][-1]])

    m = measure(sources.log, shadow, t0, now, "tip")
    figures = rollouts_view(sources, shadow.id, now=now)["rollout"]["shadow"]
    assert figures["n"] == m.shadow.n == 300
    assert figures["share_far_apart"] == pytest.approx(m.shadow.share_over_2_min)
    assert figures["share_far_apart"] == pytest.approx(np.mean(np.abs(copies - live) > 2.0))
    assert sorted(figures["points"]["live"]) == pytest.approx(sorted(live))
