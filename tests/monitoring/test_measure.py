"""A rollout's window measured in SQL equals the same figures computed with numpy on the rows the
prediction log was given, on SQLite and PostgreSQL; and an arm without data gives None."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

from ridecast.control.measure import engine_for, measure, measure_url
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.rollout.state import RolloutState

pytestmark = pytest.mark.timeout(120)


def _q(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="inverted_cdf"))


def _batch(
    version: str,
    arm: str,
    rollout_id: str,
    preds: np.ndarray,
    latency: np.ndarray,
    rides: list[str],
    requests: list[str] | None = None,
    at: float = 0.0,
) -> PredictionBatch:
    n = len(preds)
    return PredictionBatch(
        model="ride-duration",
        version=version,
        source="test",
        pu=np.full(n, 10, dtype=np.int64),
        do=np.full(n, 20, dtype=np.int64),
        distance=np.full(n, 2.5),
        predictions=preds,
        latency_ms=latency.tolist(),
        ride_ids=rides,
        at=at,
        arm=arm,
        rollout_id=rollout_id,
        request_ids=requests,
    )


def _state(strategy: str = "canary") -> RolloutState:
    return RolloutState(
        id=f"r-{uuid.uuid4().hex[:8]}",
        model="ride-duration",
        strategy=strategy,
        stable_version="1",
        candidate_version="2",
    )


def _mae_var(preds: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    err = np.abs(preds - actual)
    return float(err.mean()), float(err.var(ddof=1))


def test_canary_with_shadow_matches_numpy(db_url: str) -> None:
    rng = np.random.default_rng(7)
    state = _state("canary")
    log = PredictionLog(db_url)
    since = time.time() - 1.0
    # stable: 300 rides; canary: 200 rides; shadow copies of stable rides 100..249
    ps, ls = rng.uniform(5, 40, 300), rng.exponential(3.0, 300)
    pc, lc = rng.uniform(5, 40, 200), rng.exponential(5.0, 200)
    ph, lh = ps[100:250] + rng.normal(0.5, 2.0, 150), rng.exponential(8.0, 150)
    s_rides = [f"{state.id}-s{i}" for i in range(300)]
    c_rides = [f"{state.id}-c{i}" for i in range(200)]
    s_reqs = [f"req-{r}" for r in s_rides]
    for lo, hi in ((0, 120), (120, 300)):  # two batches: the writer's batching is invisible
        log.log(
            _batch("1", "stable", state.id, ps[lo:hi], ls[lo:hi], s_rides[lo:hi], s_reqs[lo:hi])
        )
    log.log(_batch("2", "canary", state.id, pc, lc, c_rides))
    log.log(_batch("2", "shadow", state.id, ph, lh, s_rides[100:250], s_reqs[100:250]))
    # Rows the window must leave out: before it, another rollout, no rollout at all.
    log.log(_batch("1", "stable", state.id, ps[:50] + 100, ls[:50], s_rides[:50], at=since - 60))
    log.log(_batch("1", "stable", "another", ps[:50] + 100, ls[:50], s_rides[:50]))
    log.log(_batch("2", "canary", "another", pc[:50] - 3, lc[:50], c_rides[:50]))
    log.log(_batch("1", "stable", None, ps[:50], ls[:50], s_rides[:50]))  # type: ignore[arg-type]
    log.flush()
    actual_s, actual_c = rng.uniform(5, 40, 200), rng.uniform(5, 40, 100)
    for ride, a in zip(s_rides[:200], actual_s, strict=True):
        log.log_feedback(ride, "duration", float(a))
    for ride, a in zip(c_rides[:100], actual_c, strict=True):
        log.log_feedback(ride, "duration", float(a))
        log.log_feedback(ride, "tip", 0.0)  # another target: never joined
    log.log_errors("ride-duration", "1", "stable", state.id, "web", 3)
    log.log_errors("ride-duration", "2", "canary", state.id, "web", 2)
    log.log_errors("ride-duration", "2", "shadow", state.id, "shadow")
    log.log_errors("ride-duration", "2", "canary", "another", "web", 50)
    log.close()
    assert log.feedback_counts["recorded"] == 400
    until = time.time() + 1.0

    m = measure_url(db_url, state, since, until, "duration")
    assert (m.since, m.until) == (since, until)

    st = m.stable
    assert (st.version, st.arm, st.requests, st.errors, st.joined) == ("1", "stable", 300, 3, 200)
    assert st.p99_latency_ms == pytest.approx(_q(ls, 99))
    assert st.mean_prediction == pytest.approx(ps.mean())
    mae, var = _mae_var(ps[:200], actual_s)
    assert st.mae == pytest.approx(mae) and st.abs_error_var == pytest.approx(var)

    ca = m.candidate  # the canary's own rows and its shadow answers
    cand_preds, cand_lat = np.concatenate([pc, ph]), np.concatenate([lc, lh])
    assert (ca.version, ca.arm, ca.requests, ca.errors) == ("2", "canary", 350, 3)
    assert ca.p99_latency_ms == pytest.approx(_q(cand_lat, 99))
    assert ca.mean_prediction == pytest.approx(cand_preds.mean())
    joined_preds = np.concatenate([pc[:100], ph[:100]])  # shadow rows of rides 100..199
    joined_actual = np.concatenate([actual_c, actual_s[100:200]])
    mae, var = _mae_var(joined_preds, joined_actual)
    assert ca.joined == 200
    assert ca.mae == pytest.approx(mae) and ca.abs_error_var == pytest.approx(var)

    sh, live = m.shadow, ps[100:250]
    diff = ph - live
    assert sh.n == 150
    assert sh.mean_abs_diff == pytest.approx(np.abs(diff).mean())
    assert sh.mean_signed_diff == pytest.approx(diff.mean())
    assert sh.correlation == pytest.approx(np.corrcoef(ph, live)[0, 1])
    assert sh.share_over_2_min == pytest.approx(np.mean(np.abs(diff) > 2))
    assert sh.p95_abs_diff == pytest.approx(_q(np.abs(diff), 95))
    assert sh.shadow_p99_latency_ms == pytest.approx(_q(lh, 99))

    a = actual_s[100:200]
    d = np.abs(ph[:100] - a) - np.abs(ps[100:200] - a)
    assert m.paired.n == 100
    assert m.paired.mean_diff == pytest.approx(d.mean())
    assert m.paired.var_diff == pytest.approx(d.var(ddof=1))


def test_two_live_versions_of_one_ride_are_paired(db_url: str) -> None:
    """The batch job scores every ride with both versions: pairs without a shadow."""
    rng = np.random.default_rng(3)
    state = _state("rolling")
    log = PredictionLog(db_url)
    since = time.time() - 1.0
    rides = [f"{state.id}-{i}" for i in range(80)]
    p1, p2 = rng.uniform(5, 40, 80), rng.uniform(5, 40, 80)
    lat = rng.exponential(2.0, 80)
    log.log(_batch("1", "stable", state.id, p1, lat, rides))
    log.log(_batch("2", "candidate", state.id, p2, lat, rides))
    log.flush()
    actual = rng.uniform(5, 40, 60)
    for ride, a in zip(rides[:60], actual, strict=True):
        log.log_feedback(ride, "duration", float(a))
    log.close()
    m = measure(engine_for(db_url), state, since, time.time() + 1, "duration")
    d = np.abs(p2[:60] - actual) - np.abs(p1[:60] - actual)
    assert m.paired.n == 60
    assert m.paired.mean_diff == pytest.approx(d.mean())
    assert m.paired.var_diff == pytest.approx(d.var(ddof=1))
    assert m.stable.joined == m.candidate.joined == 60
    assert m.shadow.n == 0 and m.shadow.mean_abs_diff is None


def _assert_empty(figures: Any, version: str) -> None:
    assert figures.version == version
    assert (figures.requests, figures.errors, figures.joined) == (0, 0, 0)
    assert figures.p99_latency_ms is None and figures.mean_prediction is None
    assert figures.mae is None and figures.abs_error_var is None and figures.error_rate is None


def test_arms_without_data_are_none_not_zero(db_url: str) -> None:
    state = _state("shadow")
    log = PredictionLog(db_url)
    since = time.time() - 1.0
    m = measure(engine_for(db_url), state, since, time.time() + 1, "duration")
    _assert_empty(m.stable, "1")
    _assert_empty(m.candidate, "2")
    assert m.paired.n == 0 and m.paired.mean_diff is None and m.paired.var_diff is None
    assert m.shadow.n == 0 and m.shadow.correlation is None
    assert m.shadow.shadow_p99_latency_ms is None

    # Stable traffic with one finished ride: its MAE exists, its variance cannot; no candidate.
    rides = [f"{state.id}-{i}" for i in range(5)]
    log.log(_batch("1", "stable", state.id, np.full(5, 10.0), np.ones(5), rides))
    log.flush()
    log.log_feedback(rides[0], "duration", 12.0)
    log.close()
    m = measure(engine_for(db_url), state, since, time.time() + 1, "duration")
    assert m.stable.requests == 5 and m.stable.joined == 1
    assert m.stable.mae == pytest.approx(2.0) and m.stable.abs_error_var is None
    _assert_empty(m.candidate, "2")
    assert m.shadow.n == 0 and m.paired.n == 0


def test_preview_answers_count_for_the_candidate_before_a_blue_green_switch(db_url: str) -> None:
    """Blue/green's pre-promotion analysis judges green on its shadow *and* preview answers: both
    are green answering (docs/rollout.md, Blue/green). Preview rides pair with blue's live answer
    of the same ride."""
    rng = np.random.default_rng(11)
    state = _state("blue_green")
    log = PredictionLog(db_url)
    since = time.time() - 1.0
    rides = [f"{state.id}-{i}" for i in range(120)]
    blue, green_shadow, green_preview = (rng.uniform(5, 40, n) for n in (120, 40, 60))
    lat = rng.exponential(2.0, 120)
    log.log(_batch("1", "blue", state.id, blue, lat, rides, rides))
    log.log(_batch("2", "shadow", state.id, green_shadow, lat[:40], rides[:40], rides[:40]))
    log.log(_batch("2", "preview", state.id, green_preview, lat[:60] * 3, rides[60:]))
    log.log_errors("ride-duration", "2", "preview", state.id, "web", 4)
    log.flush()
    actual = rng.uniform(5, 40, 120)
    for ride, a in zip(rides, actual, strict=True):
        log.log_feedback(ride, "duration", float(a))
    log.close()
    m = measure(engine_for(db_url), state, since, time.time() + 1, "duration")
    green = np.concatenate([green_shadow, green_preview])
    assert (m.candidate.requests, m.candidate.errors, m.candidate.joined) == (100, 4, 100)
    assert m.candidate.mean_prediction == pytest.approx(green.mean())
    assert m.candidate.p99_latency_ms == pytest.approx(
        _q(np.concatenate([lat[:40], lat[:60] * 3]), 99)
    )
    green_actual = np.concatenate([actual[:40], actual[60:]])
    assert m.candidate.mae == pytest.approx(np.abs(green - green_actual).mean())
    blue_for = np.concatenate([blue[:40], blue[60:]])
    d = np.abs(green - green_actual) - np.abs(blue_for - green_actual)
    assert m.paired.n == 100 and m.paired.mean_diff == pytest.approx(d.mean())
    assert m.shadow.n == 40  # the shadow report stays shadow against live


def test_dropped_shadow_copies_are_reported_and_are_not_errors(db_url: str) -> None:
    """A full shadow queue drops copies unasked: the shadow report counts them (``dropped``),
    the candidate's error rate does not (it was never asked)."""
    state = _state("shadow")
    log = PredictionLog(db_url)
    since = time.time() - 1.0
    rides = [f"{state.id}-{i}" for i in range(10)]
    preds = np.linspace(5, 30, 10)
    log.log(_batch("1", "stable", state.id, preds, np.ones(10), rides, rides))
    log.log(_batch("2", "shadow", state.id, preds + 1, np.ones(10), rides, rides))
    log.log_errors("ride-duration", "2", "shadow", state.id, "web:/predict", 700, kind="dropped")
    log.log_errors("ride-duration", "2", "shadow", state.id, "web:/predict", 40, kind="dropped")
    log.log_errors("ride-duration", "2", "shadow", state.id, "web:/predict", 5)  # failed
    log.log_errors("ride-duration", "2", "shadow", "another", "web:/predict", 9, kind="dropped")
    log.close()
    m = measure(engine_for(db_url), state, since, time.time() + 1, "duration")
    assert m.shadow.dropped == 740 and m.shadow.n == 10
    assert (m.candidate.requests, m.candidate.errors) == (10, 5)
    assert m.candidate.error_rate == pytest.approx(5 / 15)
