"""The live service page: per model version, over a recent window, from the prediction log.

Requests per second, p50 and p99 latency, the error rate and the distribution of predictions,
for the answers that callers saw (web and stream; shadow copies and batch jobs are left out).

Cheap on a big log: the versions are found by a loose index scan (one ``MIN`` per version over
the ``(model, version, ts)`` index), then each version's window is one range of that index,
aggregated in SQL into time buckets × latency bins. Percentiles are read from those bins (as
Prometheus reads a histogram): the value returned lies in the same bin as the exact one.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from ridecast.dashboard.sources import Sources, bucket_index, nice_step
from ridecast.monitoring.schema import FAILED_KIND, prediction_errors, predictions
from ridecast.rollout.state import SHADOW_ARM

WINDOWS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21_600, "24h": 86_400}
DEFAULT_WINDOW = "15m"
POINTS = 90  # time buckets per chart
# Upper edges of the latency bins, ms; the last bin is open.
LATENCY_EDGES_MS = (
    0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 2000, 5000,
)  # fmt: skip
PREDICTION_BINS = 30
# Rows of one version read per refresh; a busier window is read 1 row in k (k = rows / this).
SAMPLE_ROWS = 50_000


def _next_value(conn: Connection, column: Any, after: str | None, *where: Any) -> str | None:
    """The smallest value of an indexed ``column`` above ``after``: one index seek."""
    conditions = [*where] if after is None else [*where, column > after]
    return conn.execute(select(func.min(column)).where(*conditions)).scalar()


def distinct_values(conn: Connection, column: Any, *where: Any, limit: int = 50) -> list[str]:
    """The distinct values of an index's column (after equality ``where`` on the columns before
    it), one seek each: a loose index scan, which neither SQLite nor PostgreSQL do by themselves."""
    found: list[str] = []
    value = _next_value(conn, column, None, *where)
    while value is not None and len(found) < limit:
        found.append(value)
        value = _next_value(conn, column, value, *where)
    return found


def _version_order(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def _percentile(counts: list[int], q: float) -> float | None:
    """The ``q``-quantile of values binned by LATENCY_EDGES_MS, interpolated inside its bin."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low = LATENCY_EDGES_MS[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_EDGES_MS):  # the open bin: its lower edge is all we know
                return float(low)
            high = LATENCY_EDGES_MS[i]
            return float(low + (high - low) * max(rank - seen, 0.0) / count)
        seen += count
    return float(LATENCY_EDGES_MS[-1])


def _latency_bin(column: Any) -> Any:
    return case(
        *((column <= edge, i) for i, edge in enumerate(LATENCY_EDGES_MS)),
        else_=len(LATENCY_EDGES_MS),
    )


def live_view(
    sources: Sources,
    model: str | None = None,
    window: str = DEFAULT_WINDOW,
    now: float | None = None,
) -> dict[str, Any]:
    """Everything the live page draws, as JSON-able data (``empty`` when nothing was served)."""
    window = window if window in WINDOWS else DEFAULT_WINDOW
    until = time.time() if now is None else now
    span = float(WINDOWS[window])
    step = nice_step(span, POINTS)
    since = math.floor((until - span) / step) * step
    buckets = math.ceil((until - since) / step)
    out: dict[str, Any] = {
        "model": model,
        "models": [],
        "window": window,
        "windows": list(WINDOWS),
        "since": since,
        "until": until,
        "step": step,
        "versions": [],
        "series": {"t": [since + i * step for i in range(buckets)]},
        "distribution": None,
        "empty": True,
    }
    engine = sources.log
    if not sources.has(engine, predictions.name):
        return out
    p, e = predictions, prediction_errors
    has_errors = sources.has(engine, e.name)
    lo, hi = _utc(since), _utc(until)
    with engine.connect() as conn:
        models = distinct_values(conn, p.c.model)
        out["models"] = models
        if not models:
            return out
        if model not in models:
            preferred = [m for m in models if m == "ride-duration"]
            model = (preferred or models)[0]
        out["model"] = model
        versions = set(distinct_values(conn, p.c.version, p.c.model == model))
        if has_errors:
            versions |= set(distinct_values(conn, e.c.version, e.c.model == model))
        ordered = sorted(versions, key=_version_order)
        per_version: dict[str, dict[str, Any]] = {}
        for version in ordered:
            figures = _version_window(conn, sources, model, version, lo, hi, since, step, buckets)
            if has_errors:
                figures["errors_by_bucket"] = _errors(
                    conn, sources, model, version, lo, hi, since, step, buckets
                )
            else:
                figures["errors_by_bucket"] = [0] * buckets
            if figures["requests"] or sum(figures["errors_by_bucket"]):
                per_version[version] = figures
        out["distribution"] = _distribution(conn, model, per_version, lo, hi)
    series: dict[str, Any] = out["series"]
    for name in ("rps", "p50_ms", "p99_ms", "error_rate"):
        series[name] = {}
    for version, f in per_version.items():
        counts, errors = f["counts"], f["errors_by_bucket"]
        series["rps"][version] = [c / step for c in counts]
        series["p50_ms"][version] = [_percentile(h, 0.50) for h in f["histograms"]]
        series["p99_ms"][version] = [_percentile(h, 0.99) for h in f["histograms"]]
        series["error_rate"][version] = [
            (err / (c + err)) if (c + err) else None for c, err in zip(counts, errors, strict=True)
        ]
        requests, failed = f["requests"], sum(errors)
        out["versions"].append(
            {
                "version": version,
                "requests": requests,
                "rate": requests / (until - since),
                "errors": failed,
                "error_rate": failed / (requests + failed) if requests + failed else None,
                "p50_ms": _percentile(f["total_histogram"], 0.50),
                "p99_ms": _percentile(f["total_histogram"], 0.99),
                "mean_prediction": f["mean_prediction"],
                "sampled_one_in": f["stride"],  # 1: every row was read, the figures are exact
            }
        )
    out["empty"] = not per_version
    _from_first_answer(series, per_version)
    return out


def _from_first_answer(series: dict[str, Any], per_version: dict[str, dict[str, Any]]) -> None:
    """Start the charts at the first bucket that has an answer (or an error): a service that
    started two minutes ago fills the chart instead of its right edge."""
    busy = [
        i
        for f in per_version.values()
        for i, (c, e) in enumerate(zip(f["counts"], f["errors_by_bucket"], strict=True))
        if c or e
    ]
    first = min(busy, default=0)
    series["t"] = series["t"][first:]
    for name in ("rps", "p50_ms", "p99_ms", "error_rate"):
        series[name] = {v: values[first:] for v, values in series[name].items()}


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _live_rows(model: str, version: str, lo: Any, hi: Any, stride: int = 1) -> Any:
    """The callers' answers of one version in the window; with ``stride`` k, every k-th row (by
    id, tested on the index entry before the row is read)."""
    p = predictions
    conditions = [
        p.c.model == model,
        p.c.version == version,
        p.c.ts >= lo,
        p.c.ts <= hi,
        p.c.arm != SHADOW_ARM,
        ~p.c.source.like("batch%"),
    ]
    if stride > 1:
        conditions.append(p.c.id % stride == 0)
    return and_(*conditions)


def _version_window(
    conn: Connection,
    sources: Sources,
    model: str,
    version: str,
    lo: Any,
    hi: Any,
    since: float,
    step: float,
    buckets: int,
) -> dict[str, Any]:
    """One version's answers per time bucket and latency bin: one indexed, grouped pass.

    A window of more than SAMPLE_ROWS rows is read 1 row in ``stride`` (counted from the index
    alone, which costs a fraction of reading the rows) and its counts scaled back up: the figures
    are then estimates, and say so."""
    p = predictions
    in_window = conn.execute(
        select(func.count()).where(
            p.c.model == model, p.c.version == version, p.c.ts >= lo, p.c.ts <= hi
        )
    ).scalar_one()
    stride = max(1, math.ceil(int(in_window) / SAMPLE_ROWS))
    bucket = bucket_index(sources.log, p.c.ts, since, step).label("bucket")
    latency = _latency_bin(p.c.latency_ms).label("latency_bin")
    rows = conn.execute(
        select(
            bucket,
            latency,
            func.count(),
            func.sum(p.c.prediction),
            func.min(p.c.prediction),
            func.max(p.c.prediction),
        )
        .where(_live_rows(model, version, lo, hi, stride))
        .group_by(bucket, latency)
    ).all()
    bins = len(LATENCY_EDGES_MS) + 1
    counts = [0] * buckets
    histograms = [[0] * bins for _ in range(buckets)]
    total = [0] * bins
    prediction_sum = 0.0
    low = min((float(r[4]) for r in rows if r[4] is not None), default=None)
    high = max((float(r[5]) for r in rows if r[5] is not None), default=None)
    for b, lat, n, s, _low, _high in rows:
        i = min(max(int(b), 0), buckets - 1)
        counts[i] += int(n) * stride
        histograms[i][int(lat)] += int(n)
        total[int(lat)] += int(n)
        prediction_sum += float(s or 0.0)
    read = sum(total)
    return {
        "counts": counts,
        "histograms": histograms,
        "total_histogram": total,
        "requests": read * stride,
        "mean_prediction": prediction_sum / read if read else None,
        "stride": stride,
        "range": None if low is None or high is None else (low, high),
    }


def _errors(
    conn: Connection,
    sources: Sources,
    model: str,
    version: str,
    lo: Any,
    hi: Any,
    since: float,
    step: float,
    buckets: int,
) -> list[int]:
    e = prediction_errors
    bucket = bucket_index(sources.log, e.c.ts, since, step).label("bucket")
    conditions = [
        e.c.model == model,
        e.c.version == version,
        e.c.ts >= lo,
        e.c.ts <= hi,
        e.c.arm != SHADOW_ARM,
        ~e.c.source.like("batch%"),
    ]
    if sources.has_column(sources.log, e.name, "kind"):  # since migration 0006
        conditions.append(e.c.kind == FAILED_KIND)  # not shadow copies dropped unasked
    query = select(bucket, func.sum(e.c.count)).where(*conditions).group_by(bucket)
    rows = conn.execute(query).all()
    counts = [0] * buckets
    for b, n in rows:
        counts[min(max(int(b), 0), buckets - 1)] += int(n or 0)
    return counts


def _distribution(
    conn: Connection, model: str, per_version: dict[str, dict[str, Any]], lo: Any, hi: Any
) -> dict[str, Any] | None:
    """The share of each version's predictions in PREDICTION_BINS equal bins over the range
    all versions' predictions cover in the window."""
    p = predictions
    ranges = [f["range"] for f in per_version.values() if f["range"] is not None]
    if not ranges:
        return None
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    strides = {v: int(f["stride"]) for v, f in per_version.items()}
    width = _nice_width((high - low) / PREDICTION_BINS)
    start = math.floor(low / width) * width
    n_bins = max(1, min(math.ceil((high - start) / width + 1e-9), 4 * PREDICTION_BINS))
    shares: dict[str, list[float]] = {}
    # Bins in SQL without floor() (SQLite may lack it): count the rows below each edge instead.
    for version, stride in strides.items():
        edges = [start + width * (i + 1) for i in range(n_bins - 1)]
        below = conn.execute(
            select(
                func.count(),
                *(func.sum(case((p.c.prediction < edge, 1), else_=0)) for edge in edges),
            ).where(_live_rows(model, version, lo, hi, stride))
        ).one()
        total = int(below[0])
        if total == 0:
            continue
        cumulative = [int(x or 0) for x in below[1:]] + [total]
        counts = [cumulative[0]] + [
            cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))
        ]
        shares[version] = [c / total for c in counts]
    return {
        "edges": [start + width * i for i in range(n_bins + 1)],
        "shares": shares,
        "unit": unit_of(model),
    }


def unit_of(model: str) -> str:
    """What a model's predictions count: ride-duration minutes, tip and cost dollars."""
    return "minutes" if "duration" in model else "dollars"


def _nice_width(raw: float) -> float:
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return float(factor * magnitude)
    return float(10 * magnitude)
