"""The batch results page: per month and version, what each batch run found.

Read from the ``batch_results`` table the batch job publishes to at the end of each month
(:mod:`ridecast.monitoring.batch_results`), so the page needs the database and nothing else:
not the sink, not the data files, not the registry.
"""

from __future__ import annotations

from typing import Any

from ridecast.dashboard.sources import Sources
from ridecast.monitoring.batch_results import read_results


def batch_view(sources: Sources) -> dict[str, Any]:
    """Every published run, newest month first (``empty`` when there is none yet)."""
    runs = []
    for row in read_results(sources.log):
        details = row["details"]
        runs.append(
            {
                "taxi_type": row["taxi_type"],
                "month": row["month"],
                "model": row["model"],
                "version": row["version"],
                "kind": row["kind"],
                "run_id": row["run_id"],
                "published_at": row["ts"],
                "rows_read": row["rows_read"],
                "rows_scored": row["rows_scored"],
                "rows_rejected": row["rows_rejected"],
                "mean_prediction": row["mean_prediction"],
                "std_prediction": row["std_prediction"],
                "rmse": row["rmse"],
                "mae": row["mae"],
                "rejected": details.get("rejected") or {},
                "histograms": details.get("histograms"),
                "comparison": details.get("comparison"),
                "rollout": details.get("rollout"),
                "seconds": details.get("seconds"),
                "source": details.get("source"),
            }
        )
    return {"empty": not runs, "runs": runs}
