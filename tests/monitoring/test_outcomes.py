"""The outcomes table, each rollout answer joined to its ride's feedback as the writers go, holds
what a direct join of the log's predictions and feedback gives: whatever order answers and
feedback come in, whichever process writes them, and after a migration upgrades a log that had
rows. ``measure()``, which reads it, gives the figures that the direct join gives, computed here
in Python. Random data: several rollouts, arms, versions and targets, repeated feedback, feedback
for rides never predicted, answers written after their ride's feedback; SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine, text

from ridecast.control.measure import engine_for, measure
from ridecast.monitoring import PredictionBatch, PredictionLog, migrate
from ridecast.rollout.state import RolloutState

pytestmark = pytest.mark.timeout(300)

BASE = 1_800_000_000.0  # every answer's time is BASE + whole seconds; windows cut at half seconds
TARGETS = ("duration", "tip")


@dataclass(frozen=True)
class Answer:
    ride: str
    request: str | None
    rollout: str | None
    arm: str
    version: str
    prediction: float
    at: float


# Each rollout's live arms and the version each answers with (now and then another one).
ROLLOUTS: dict[str | None, tuple[tuple[str, str], ...]] = {
    "canary-1": (("stable", "1"), ("canary", "2"), ("preview", "2")),
    "ab-1": (("a", "1"), ("b", "3")),
    None: (("stable", "1"),),
}


def _answers(rng: np.random.Generator, rides: int) -> tuple[list[Answer], list[Answer]]:
    """Answers written before any feedback, and answers written after it (late shadow copies,
    another worker's queue, a batch job scoring both versions, a repeated request)."""
    early: list[Answer] = []
    late: list[Answer] = []
    names = list(ROLLOUTS)
    for i in range(rides):
        ride = f"ride-{i}"
        # How the writers key a pair: the ride id, no request id, or a request id of its own.
        request = (ride, None, f"req-{i}")[int(rng.integers(3))]
        rollout = names[int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
        arms = ROLLOUTS[rollout]

        def answer(arm: str, version: str, key: str | None = request) -> Answer:
            if rng.random() < 0.05:
                version = "9"  # a version the rollout does not compare
            at = BASE + float(rng.integers(0, 60))
            return Answer(ride, key, rollout, arm, version, float(rng.uniform(3, 60)), at)  # noqa: B023

        arm, version = arms[int(rng.integers(len(arms)))]
        early.append(answer(arm, version))
        extra = []
        if rollout == "canary-1" and rng.random() < 0.4:
            extra.append(answer("shadow", "2"))  # the candidate's shadow copy of the request
        if rng.random() < 0.15:
            other_arm, other_version = arms[int(rng.integers(len(arms)))]
            extra.append(answer(other_arm, other_version, None))  # a batch job's second answer
        if rng.random() < 0.1:
            extra.append(answer(arm, version))  # the same request asked twice
        for a in extra:
            (late if rng.random() < 0.4 else early).append(a)
    return early, late


def _log(log: PredictionLog, answers: list[Answer]) -> None:
    """One batch per rollout, arm, version and time, as the serving side hands them over."""
    groups: dict[tuple[Any, ...], list[Answer]] = defaultdict(list)
    for a in answers:
        groups[(a.rollout, a.arm, a.version, a.at)].append(a)
    for (rollout, arm, version, at), some in groups.items():
        n = len(some)
        requests = [a.request for a in some]
        log.log(
            PredictionBatch(
                model="ride-duration",
                version=version,
                source="test",
                pu=np.full(n, 10),
                do=np.full(n, 20),
                distance=np.full(n, 2.5),
                predictions=np.array([a.prediction for a in some]),
                latency_ms=[float(k % 7) + a.prediction / 100 for k, a in enumerate(some)],
                ride_ids=[a.ride for a in some],
                at=at,
                arm=arm,
                rollout_id=rollout,
                request_ids=requests if any(r is not None for r in requests) else None,
            )
        )


def _feedback(rng: np.random.Generator, rides: int, share: float) -> list[tuple[str, str, float]]:
    out = []
    for i in range(rides):
        if rng.random() >= share:
            continue
        for target in TARGETS if rng.random() < 0.3 else TARGETS[:1]:
            out.append((f"ride-{i}", target, float(rng.uniform(3, 60))))
            if rng.random() < 0.2:
                out.append((f"ride-{i}", target, float(rng.uniform(3, 60))))  # counts once
    out += [(f"never-{i}", "duration", 10.0) for i in range(20)]  # rides nobody predicted
    return out


def _fill(url: str, seed: int, rides: int = 600) -> None:
    """Answers, then feedback from another worker, then late answers from a third, then more
    feedback and more late answers."""
    rng = np.random.default_rng(seed)
    early, late = _answers(rng, rides)
    half = len(late) // 2
    feedback = _feedback(rng, rides, 0.6)
    first, second = feedback[: len(feedback) // 2], feedback[len(feedback) // 2 :]
    serving, riders, batch = (PredictionLog(url, feedback_grace=0.0) for _ in range(3))
    _log(serving, early)
    serving.flush()
    for ride, target, actual in first:
        riders.log_feedback(ride, target, actual)
    riders.flush()
    _log(batch, late[:half])
    batch.flush()
    for ride, target, actual in second + first[: len(first) // 4]:  # and repeated once stored
        riders.log_feedback(ride, target, actual)
    riders.flush()
    _log(batch, late[half:])
    for log in (serving, riders, batch):
        log.close()
    assert riders.feedback_counts["recorded"] > 200 and riders.feedback_counts["duplicate"] > 20


# ---------------------------------------------------------------- the direct join, in Python


def _unix(ts: Any) -> float:
    if isinstance(ts, str):  # SQLite keeps text
        ts = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return float(ts.timestamp())


@dataclass(frozen=True)
class Row:
    id: int
    rollout: str | None
    arm: str
    version: str
    at: float
    ride: str | None
    request: str | None
    prediction: float
    latency: float

    @property
    def key(self) -> str | None:
        return self.request if self.request is not None else self.ride


def _read(url: str) -> tuple[list[Row], dict[tuple[str, str], float]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            Row(i, r, arm, v, _unix(ts), ride, req, float(p), float(lat))
            for i, r, arm, v, ts, ride, req, p, lat in conn.execute(
                text(
                    "SELECT id, rollout_id, arm, version, ts, ride_id, request_id, prediction, "
                    "latency_ms FROM predictions"
                )
            )
        ]
        actual = {
            (ride, target): float(a)
            for ride, target, a in conn.execute(
                text("SELECT ride_id, target, actual FROM feedback")
            )
        }
    engine.dispose()
    return rows, actual


def _expected_outcomes(
    rows: list[Row], actual: dict[tuple[str, str], float]
) -> dict[tuple[int, str], tuple[Any, ...]]:
    joined = [
        (r, t)
        for r in rows
        for t in TARGETS
        if r.rollout is not None and r.ride is not None and (r.ride, t) in actual
    ]
    sharing = Counter((t, r.rollout, r.ride, r.key) for r, t in joined)
    return {
        (r.id, t): (
            r.rollout,
            r.arm,
            r.version,
            r.at,
            r.key,
            r.prediction,
            actual[(r.ride, t)],  # type: ignore[index]
            sharing[(t, r.rollout, r.ride, r.key)] > 1,
        )
        for r, t in joined
    }


def _stored_outcomes(url: str) -> dict[tuple[int, str], tuple[Any, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        got = {
            (int(pid), t): (r, arm, v, _unix(ts), key, float(p), float(a), bool(paired))
            for pid, t, r, arm, v, ts, key, p, a, paired in conn.execute(
                text(
                    "SELECT prediction_id, target, rollout_id, arm, version, ts, pair_key, "
                    "prediction, actual, paired FROM outcomes"
                )
            )
        }
    engine.dispose()
    return got


def _q(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q, method="inverted_cdf")) if values else None


def _expected_figures(
    rows: list[Row],
    actual: dict[tuple[str, str], float],
    state: RolloutState,
    lo: float,
    hi: float,
    target: str,
) -> dict[str, Any]:
    """What measure() reported before the outcomes table: predictions joined to feedback in the
    window, pairs grouped by request (else ride) and joined to the group's ride."""
    window = [r for r in rows if r.rollout == state.id and lo <= r.at <= hi]
    candidate_arms = (state.candidate_arm, "shadow", "preview")
    sides = {
        "stable": ((state.stable_arm,), state.stable_version),
        "candidate": (candidate_arms, state.candidate_version),
    }
    out: dict[str, Any] = {}
    for name, (arms, version) in sides.items():
        mine = [r for r in window if r.arm in arms and r.version == version]
        errors = [
            abs(r.prediction - actual[(r.ride, target)])
            for r in mine
            if r.ride is not None and (r.ride, target) in actual
        ]
        out[name] = (
            len(mine),
            float(np.mean([r.prediction for r in mine])) if mine else None,
            _q([r.latency for r in mine], 99),
            len(errors),
            float(np.mean(errors)) if errors else None,
            float(np.var(errors, ddof=1)) if len(errors) > 1 else None,
        )
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in window:
        if r.key is not None and r.arm in (*candidate_arms, state.stable_arm):
            groups[r.key].append(r)
    diffs = []
    for group in groups.values():
        a = [
            r.prediction
            for r in group
            if r.arm in candidate_arms and r.version == state.candidate_version
        ]
        b = [
            r.prediction
            for r in group
            if r.arm == state.stable_arm and r.version == state.stable_version
        ]
        ride = max((r.ride for r in group if r.ride is not None), default=None)
        if a and b and ride is not None and (ride, target) in actual:
            y = actual[(ride, target)]
            diffs.append(abs(float(np.mean(a)) - y) - abs(float(np.mean(b)) - y))
    out["paired"] = (
        len(diffs),
        float(np.mean(diffs)) if diffs else None,
        float(np.var(diffs, ddof=1)) if len(diffs) > 1 else None,
    )
    return out


def _measured(url: str, state: RolloutState, lo: float, hi: float, target: str) -> dict[str, Any]:
    m = measure(engine_for(url), state, lo, hi, target)
    arm = lambda f: (  # noqa: E731
        f.requests,
        f.mean_prediction,
        f.p99_latency_ms,
        f.joined,
        f.mae,
        f.abs_error_var,
    )
    return {
        "stable": arm(m.stable),
        "candidate": arm(m.candidate),
        "paired": (m.paired.n, m.paired.mean_diff, m.paired.var_diff),
    }


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, tuple):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float) and got is not None:
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return bool(got == want)


STATES = (
    RolloutState(id="canary-1", model="ride-duration", strategy="canary", stable_version="1",
                 candidate_version="2"),
    RolloutState(id="ab-1", model="ride-duration", strategy="ab", stable_version="1",
                 candidate_version="3"),
)  # fmt: skip
WINDOWS = ((BASE - 1, BASE + 61), (BASE + 10.5, BASE + 40.5), (BASE + 59.5, BASE + 70))


def _check(url: str) -> None:
    rows, actual = _read(url)
    expected = _expected_outcomes(rows, actual)
    assert len(expected) > 300
    assert sum(paired for *_, paired in expected.values()) > 50
    assert _stored_outcomes(url) == expected
    for state in STATES:
        for lo, hi in WINDOWS:
            for target in TARGETS:
                want = _expected_figures(rows, actual, state, lo, hi, target)
                got = _measured(url, state, lo, hi, target)
                assert _same(got, want), (state.id, lo - BASE, hi - BASE, target, got, want)
    canary = _expected_figures(rows, actual, STATES[0], *WINDOWS[0], "duration")
    assert canary["paired"][0] > 20  # the shadow copies, early and late, paired with stable


@pytest.mark.parametrize("seed", [1, 2])
def test_outcomes_and_figures_equal_a_direct_join(db_url: str, seed: int) -> None:
    _fill(db_url, seed)
    _check(db_url)


def test_an_upgrade_joins_the_rows_already_stored(db_url: str) -> None:
    """A log from before the outcomes table (migration 0006) gets its rows joined by 0007."""
    _fill(db_url, 3)
    engine = create_engine(db_url)
    config = migrate.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "0006"
    migrate.upgrade(engine)
    engine.dispose()
    _check(db_url)


def test_feedback_and_late_answers_written_at_once_are_joined(db_url: str) -> None:
    """Two processes' writers at full speed: one records feedback for rides while the other
    writes those rides' late answers, many times over; no outcome is missed or doubled."""
    serving = PredictionLog(db_url, flush_interval=0.005, feedback_grace=30.0).start()
    late = PredictionLog(db_url, flush_interval=0.005, feedback_grace=30.0).start()
    riders = PredictionLog(db_url, flush_interval=0.005, feedback_grace=30.0).start()
    rng = np.random.default_rng(5)
    rounds, per_round = 40, 25

    def answers(k: int, arm: str) -> list[Answer]:
        version = "1" if arm == "stable" else "2"
        rides = [f"ride-{k}-{j}" for j in range(per_round)]
        at = BASE + k % 60
        return [
            Answer(r, r, "canary-1", arm, version, float(rng.uniform(3, 60)), at) for r in rides
        ]

    def feedback() -> None:
        for k in range(rounds):
            time.sleep(float(rng.uniform(0, 0.01)))
            for j in range(per_round):
                riders.log_feedback(f"ride-{k}-{j}", "duration", float(j))

    thread = threading.Thread(target=feedback)
    for k in range(rounds):
        _log(serving, answers(k, "stable"))
    serving.flush()
    thread.start()
    for k in range(rounds):  # the shadow copies, racing their rides' feedback
        time.sleep(float(rng.uniform(0, 0.01)))
        _log(late, answers(k, "shadow"))
    thread.join()
    for log in (serving, late, riders):
        log.close()
    assert riders.feedback_counts["recorded"] == rounds * per_round
    rows, actual = _read(db_url)
    expected = _expected_outcomes(rows, actual)
    assert len(expected) == 2 * rounds * per_round
    assert all(paired for *_, paired in expected.values())
    assert _stored_outcomes(db_url) == expected
