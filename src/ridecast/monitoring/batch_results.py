"""What each batch run found, kept in the prediction log's database for the dashboard.

The batch job writes its predictions to a sink (parquet or SQL) and a record of the run beside
them. The dashboard should not need that sink: at the end of each month the job publishes the
record here too, one row per taxi type, month, model, version and kind of run (``score``,
``compare``, ``rollout``); a rerun replaces its row, as it replaces the month in the sink.

The record is the job's own (``ScoreSummary.record()``): rows, rejects by reason, the mean and
std of the predictions, RMSE and MAE against the actual durations, and two
:class:`DurationHistogram` (predicted and actual minutes). Publishing never fails the job: the
month is already committed to its sink, so a database that is away costs a warning, not the run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, insert, inspect, select

from ridecast.monitoring import migrate
from ridecast.monitoring.database import first_line, mask_url, shared_engine
from ridecast.monitoring.schema import batch_results

log = logging.getLogger("ridecast.monitoring")

MAX_MINUTES = 60  # rides are 1..60 minutes long (the course's filter)


class DurationHistogram:
    """Counts of durations in 1-minute bins from 0 to 60, with one bin for everything below 0
    and one for everything from 60 on; adding a chunk is one ``bincount``."""

    def __init__(self) -> None:
        self.counts = np.zeros(MAX_MINUTES + 2, dtype=np.int64)

    def add(self, minutes: np.ndarray) -> None:
        """Count ``minutes`` (finite values; the batch job only tallies rows it scored)."""
        if minutes.shape[0] == 0:
            return
        bins = np.clip(np.floor(minutes), -1, MAX_MINUTES).astype(np.int64) + 1
        self.counts += np.bincount(bins, minlength=MAX_MINUTES + 2)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(range(MAX_MINUTES + 1)),
            "counts": [int(c) for c in self.counts[1:-1]],
            "below": int(self.counts[0]),
            "above": int(self.counts[-1]),
        }


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class BatchResults:
    """The ``batch_results`` table of the database at ``url`` (upgraded to the newest schema on
    first use)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def publish(self, record: Mapping[str, Any]) -> bool:
        """Replace the row of ``record``'s run (``taxi_type``, ``month``, ``model_name``,
        ``model_version``, ``kind``). False, with a warning logged, when it could not."""
        clean = _finite(record)
        try:
            key = {
                "taxi_type": str(clean["taxi_type"]),
                "month": str(clean["month"]),
                "model": str(clean["model_name"]),
                "version": str(clean["model_version"]),
                "kind": str(clean.get("kind") or "score"),
            }
            row = {
                **key,
                "ts": datetime.now(UTC),
                "run_id": str(clean["run_id"]),
                "rows_read": int(clean["rows_read"]),
                "rows_scored": int(clean["rows_scored"]),
                "rows_rejected": int(clean["rows_rejected"]),
                "mean_prediction": clean.get("mean_prediction"),
                "std_prediction": clean.get("std_prediction"),
                "rmse": clean.get("rmse"),
                "mae": clean.get("mae"),
                "details": json.dumps(clean, default=str),
            }
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("batch results not published: the run record lacks %s", exc)
            return False
        try:
            engine = shared_engine(self.url)
            migrate.upgrade(engine)
            t = batch_results
            with engine.begin() as conn:
                conn.execute(
                    delete(t).where(*(getattr(t.c, name) == value for name, value in key.items()))
                )
                conn.execute(insert(t).values(**row))
        except Exception as exc:  # the month is in its sink already: say so, go on
            log.warning(
                "batch results of %s %s v%s not published to %s: %s",
                key["taxi_type"],
                key["month"],
                key["version"],
                mask_url(self.url),
                first_line(exc),
            )
            return False
        return True


def read_results(engine: Engine, limit: int = 240) -> list[dict[str, Any]]:
    """The newest ``limit`` published runs, newest month first, each with its ``details``
    parsed; an empty list when the database has no batch results (yet)."""
    if not inspect(engine).has_table(batch_results.name):
        return []
    t = batch_results
    query = (
        select(t)
        .order_by(t.c.month.desc(), t.c.taxi_type, t.c.model, t.c.version, t.c.kind)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        row["details"] = json.loads(row["details"]) if row["details"] else {}
        ts = row["ts"]
        if isinstance(ts, datetime):
            row["ts"] = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
    return rows
