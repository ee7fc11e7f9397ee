"""The batch step of ``ridecast demo``: score the validation month into parquet, twice."""

from __future__ import annotations

import time
from typing import Any

import pyarrow.parquet as pq

from ridecast.batch.job import score_month
from ridecast.batch.sinks import DirectorySink, MonthKey
from ridecast.batch.sources import open_source
from ridecast.monitoring.batch_results import BatchResults


def demo_step(ctx: Any) -> None:
    console = ctx.console
    console.rule("[bold]batch scoring")
    started = time.perf_counter()
    predictor = ctx.registry.predictor("models:/ride-duration@champion")
    sink = DirectorySink(ctx.settings.home / "predictions")
    source = open_source(
        None, taxi_type=ctx.taxi_type, month=ctx.valid_month, data_dir=ctx.data_dir
    )
    # Each month's summary also goes to the prediction log's database, for the dashboard.
    results = BatchResults(ctx.settings.resolved_prediction_log_url)
    summary = score_month(ctx.taxi_type, ctx.valid_month, predictor, source, sink, results=results)
    key = MonthKey(
        ctx.taxi_type, ctx.valid_month, predictor.name, predictor.version, summary.run_id
    )
    reasons = ", ".join(f"{r} {n:,}" for r, n in summary.rejected.items() if n) or "none"
    console.print(
        f"[green]✓[/] scored {ctx.taxi_type.value} {ctx.valid_month} with {predictor.name} "
        f"v{predictor.version}: {summary.rows_read:,} read = {summary.rows_scored:,} scored + "
        f"{summary.rows_rejected:,} rejected ({reasons}) in {summary.seconds:.2f}s",
        highlight=False,
    )
    console.print(
        f"  predicted duration mean {summary.mean:.2f} min, std {summary.std:.2f} min; "
        f"RMSE against actual {summary.rmse:.2f} min → {sink.path(key)}",
        highlight=False,
    )
    # Scoring the same month with the same version again replaces it: no duplicate rows.
    again = score_month(ctx.taxi_type, ctx.valid_month, predictor, source, sink, results=results)
    rows = pq.ParquetFile(sink.path(key)).metadata.num_rows
    console.print(
        f"[green]✓[/] rerun replaced the month atomically: {rows:,} rows in the partition "
        f"(run {again.run_id}), step took {time.perf_counter() - started:.1f}s",
        highlight=False,
    )
    ctx.results["batch"] = summary
