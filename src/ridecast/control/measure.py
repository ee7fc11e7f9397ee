"""One window of a rollout, measured from the prediction log in SQL.

Each figure is an aggregate over the index ``(rollout_id, arm, ts)``: rows of this rollout, of one
arm, in ``[since, until]``. How wrong a version was comes from its predictions joined to the
ride's feedback (``ride_id``, ``target``). Percentiles are nearest-rank (``numpy``'s
``inverted_cdf``): count the rows, then read the k-th in order, which SQLite can do without a
percentile function. Every figure is None when there was nothing to measure.

Pairs: a shadow answer and its live answer share ``request_id`` (or, without one, ``ride_id``);
so do two live answers of different versions for one ride (the batch job scores both).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, select
from sqlalchemy.sql import ColumnElement, Select

from ridecast.monitoring import migrate
from ridecast.monitoring.database import shared_engine
from ridecast.monitoring.schema import (
    DROPPED_KIND,
    FAILED_KIND,
    feedback,
    prediction_errors,
    predictions,
)
from ridecast.rollout.measurements import ArmFigures, Measurements, PairedFigures, ShadowFigures
from ridecast.rollout.state import PREVIEW_ARM, SHADOW_ARM, RolloutState

_migrated: set[str] = set()


def engine_for(url: str) -> Engine:
    """The engine for ``url``, one per process, its schema at head (upgraded once if not)."""
    engine = shared_engine(url)
    if url not in _migrated:
        migrate.upgrade(engine)
        _migrated.add(url)
    return engine


def measure_url(
    url: str, state: RolloutState, since: float, until: float, target: str
) -> Measurements:
    return measure(engine_for(url), state, since, until, target)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class _Window:
    """The SQL conditions of one rollout's window."""

    def __init__(self, state: RolloutState, since: float, until: float) -> None:
        self.rollout_id = state.id
        self.lo, self.hi = _utc(since), _utc(until)

    def rows(self, table: Any, arms: tuple[str, ...], version: str | None) -> ColumnElement[bool]:
        conditions = [
            table.c.rollout_id == self.rollout_id,
            table.c.arm.in_(arms) if len(arms) > 1 else table.c.arm == arms[0],
            table.c.ts >= self.lo,
            table.c.ts <= self.hi,
        ]
        if version is not None:
            conditions.append(table.c.version == version)
        return and_(*conditions)


def _nearest_rank(conn: Connection, query: Select[Any], value: Any, n: int, q: float) -> Any:
    """The ``q``-quantile (nearest rank) of ``value`` over ``query``'s ``n`` rows.

    A high quantile is read from the top (descending, offset n − 1 − k): with LIMIT + OFFSET the
    database keeps only the top n − k rows while it scans, instead of sorting all n (p99 of
    500,000 SQLite rows: 5 s sorted in full, a fraction of that from the top)."""
    if n == 0:
        return None
    k = max(0, math.ceil(q * n) - 1)
    values = query.with_only_columns(value)
    if k > n // 2:
        return conn.execute(values.order_by(value.desc()).offset(n - 1 - k).limit(1)).scalar()
    return conn.execute(values.order_by(value).offset(k).limit(1)).scalar()


def _sample_variance(n: int, total: float | None, squares: float | None) -> float | None:
    if n < 2 or total is None or squares is None:
        return None
    return max(0.0, (squares - total * total / n) / (n - 1))


Side = tuple[str, tuple[str, ...], str]  # (arm it reports as, arms it takes rows from, version)


def _arms(
    conn: Connection, window: _Window, sides: tuple[Side, ...], target: str
) -> list[ArmFigures]:
    """Both sides' counts, means and errors: one indexed pass over the window, grouped by arm and
    version, predictions left-joined to their ride's feedback; then one sort per side for p99."""
    p, f, e = predictions, feedback, prediction_errors
    arms = tuple(dict.fromkeys(a for _, side_arms, _ in sides for a in side_arms))
    abs_error = func.abs(p.c.prediction - f.c.actual)
    groups = conn.execute(
        select(
            p.c.arm,
            p.c.version,
            func.count(p.c.id),
            func.sum(p.c.prediction),
            func.count(f.c.actual),
            func.sum(abs_error),
            func.sum(abs_error * abs_error),
        )
        .select_from(p.outerjoin(f, and_(f.c.ride_id == p.c.ride_id, f.c.target == target)))
        .where(window.rows(p, arms, None))
        .group_by(p.c.arm, p.c.version)
    ).all()
    failed = conn.execute(
        select(e.c.arm, e.c.version, func.sum(e.c.count))
        .where(window.rows(e, arms, None), e.c.kind == FAILED_KIND)
        .group_by(e.c.arm, e.c.version)
    ).all()
    out = []
    for label, side_arms, version in sides:
        mine = [g for g in groups if g[0] in side_arms and g[1] == version]
        requests = sum(int(g[2]) for g in mine)
        joined = sum(int(g[4]) for g in mine)
        total = sum(float(g[5]) for g in mine if g[5] is not None)
        squares = sum(float(g[6]) for g in mine if g[6] is not None)
        where = window.rows(p, side_arms, version)
        out.append(
            ArmFigures(
                version=version,
                arm=label,
                requests=requests,
                errors=sum(int(c) for a, v, c in failed if a in side_arms and v == version),
                p99_latency_ms=_nearest_rank(
                    conn, select(p.c.id).where(where), p.c.latency_ms, requests, 0.99
                ),
                mean_prediction=(sum(float(g[3]) for g in mine) / requests if requests else None),
                joined=joined,
                mae=total / joined if joined else None,
                abs_error_var=_sample_variance(joined, total, squares),
            )
        )
    return out


def _pairs(
    window: _Window,
    first: tuple[tuple[str, ...], str],
    second: tuple[tuple[str, ...], str | None],
) -> Any:
    """One row per request answered by both sides: (key, first, second, ride_id).

    Grouping by the pairing key (a sort) pairs without a self-join, which SQLite could only do
    row by row. A side that answered one request twice counts with its mean answer.
    """
    p = predictions
    key = func.coalesce(p.c.request_id, p.c.ride_id)
    (arms_a, version_a), (arms_b, version_b) = first, second
    in_a = and_(p.c.arm.in_(arms_a), p.c.version == version_a)
    in_b = (
        p.c.arm.in_(arms_b)
        if version_b is None
        else and_(p.c.arm.in_(arms_b), p.c.version == version_b)
    )
    arms = tuple(dict.fromkeys(arms_a + arms_b))
    return (
        select(
            key.label("key"),
            func.avg(case((in_a, p.c.prediction))).label("a"),
            func.avg(case((in_b, p.c.prediction))).label("b"),
            func.max(p.c.ride_id).label("ride_id"),
        )
        .where(window.rows(p, arms, None), key.is_not(None))
        .group_by(key)
        .having(and_(func.count(case((in_a, 1))) > 0, func.count(case((in_b, 1))) > 0))
        .subquery("pairs")
    )


def _shadow(
    conn: Connection, window: _Window, state: RolloutState, live_arms: tuple[str, ...]
) -> ShadowFigures:
    s, e = predictions, prediction_errors
    shadow_rows = window.rows(s, (SHADOW_ARM,), state.candidate_version)
    count = conn.execute(select(func.count()).where(shadow_rows)).scalar_one()
    p99 = _nearest_rank(conn, select(s.c.id).where(shadow_rows), s.c.latency_ms, count, 0.99)
    dropped = conn.execute(
        select(func.coalesce(func.sum(e.c.count), 0)).where(
            window.rows(e, (SHADOW_ARM,), state.candidate_version), e.c.kind == DROPPED_KIND
        )
    ).scalar_one()
    empty = ShadowFigures(shadow_p99_latency_ms=p99, dropped=int(dropped))
    if not live_arms or count == 0:
        return empty
    pairs = _pairs(window, ((SHADOW_ARM,), state.candidate_version), (live_arms, None))
    x, y = pairs.c.a, pairs.c.b  # shadow, live
    diff = x - y
    n, abs_mean, signed_mean, sx, sy, sxx, syy, sxy, over = conn.execute(
        select(
            func.count(),
            func.avg(func.abs(diff)),
            func.avg(diff),
            func.sum(x),
            func.sum(y),
            func.sum(x * x),
            func.sum(y * y),
            func.sum(x * y),
            func.sum(case((func.abs(diff) > 2.0, 1), else_=0)),
        ).select_from(pairs)
    ).one()
    n = int(n)
    if n == 0:
        return empty
    correlation = None
    if n >= 2:
        spread = (n * sxx - sx * sx) * (n * syy - sy * sy)
        if spread > 0:
            correlation = (n * sxy - sx * sy) / math.sqrt(spread)
    return ShadowFigures(
        n=n,
        mean_abs_diff=float(abs_mean),
        mean_signed_diff=float(signed_mean),
        correlation=correlation,
        share_over_2_min=float(over) / n,
        p95_abs_diff=_nearest_rank(
            conn, select(pairs.c.key).select_from(pairs), func.abs(diff), n, 0.95
        ),
        shadow_p99_latency_ms=p99,
        dropped=int(dropped),
    )


def _paired(
    conn: Connection,
    window: _Window,
    state: RolloutState,
    candidate_arms: tuple[str, ...],
    target: str,
) -> PairedFigures:
    pairs = _pairs(
        window,
        (candidate_arms, state.candidate_version),
        ((state.stable_arm,), state.stable_version),
    )
    f = feedback
    d = func.abs(pairs.c.a - f.c.actual) - func.abs(pairs.c.b - f.c.actual)
    n, total, squares = conn.execute(
        select(func.count(), func.sum(d), func.sum(d * d)).select_from(
            pairs.join(f, and_(f.c.ride_id == pairs.c.ride_id, f.c.target == target))
        )
    ).one()
    n = int(n)
    return PairedFigures(
        n=n,
        mean_diff=None if n == 0 else float(total) / n,
        var_diff=_sample_variance(n, total, squares),
    )


def measure(
    engine: Engine, state: RolloutState, since: float, until: float, target: str
) -> Measurements:
    """The figures of ``state``'s rollout over ``[since, until]`` (unix seconds).

    The candidate's figures include its shadow answers (arm ``shadow``) and its preview answers
    (arm ``preview``): before a blue/green switch, or in a shadow rollout, those are the
    candidate answering. ``target`` is the feedback target the model predicts (duration, tip or
    cost).
    """
    window = _Window(state, since, until)
    candidate_arms = tuple(dict.fromkeys((state.candidate_arm, SHADOW_ARM, PREVIEW_ARM)))
    live_arms = tuple(a for a in dict.fromkeys(state.arms) if a != SHADOW_ARM)
    with engine.connect() as conn:
        stable, candidate = _arms(
            conn,
            window,
            (
                (state.stable_arm, (state.stable_arm,), state.stable_version),
                (state.candidate_arm, candidate_arms, state.candidate_version),
            ),
            target,
        )
        shadow = _shadow(conn, window, state, live_arms)
        paired = _paired(conn, window, state, candidate_arms, target)
    return Measurements(
        since=since, until=until, stable=stable, candidate=candidate, paired=paired, shadow=shadow
    )
