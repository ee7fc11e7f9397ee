"""``ridecast demo``'s drift step: two new months against the model's reference month.

March is another ordinary month; in April every ride is 1.5× longer (a bridge closed, say). The
drift report should leave March alone and flag April's distances and predictions, which is what
``ridecast monitor drift`` and the dashboard's drift page then show.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.compute as pc

from ridecast.data.schema import Month

ORDINARY = Month(2025, 3)
LONGER_TRIPS = Month(2025, 4)
LONGER_BY = 1.5


def demo_step(ctx: Any) -> None:
    from ridecast.data.synth import synthesize_month, write_month
    from ridecast.monitoring.drift import month_drift

    console = ctx.console
    console.rule("[bold]monitoring: drift against the model's reference month")
    started = time.perf_counter()
    for month, seed in ((ORDINARY, 3), (LONGER_TRIPS, 4)):
        table = synthesize_month(ctx.taxi_type, month, ctx.rows, seed=seed)
        if month == LONGER_TRIPS:
            column = table.schema.get_field_index("trip_distance")
            longer = pc.multiply(table["trip_distance"], LONGER_BY)
            table = table.set_column(column, "trip_distance", longer)
        write_month(table, ctx.data_dir, ctx.taxi_type, month)
    for month, story in ((ORDINARY, "an ordinary month"), (LONGER_TRIPS, "every ride 1.5× longer")):
        report = month_drift(ctx.settings, ctx.taxi_type, month, registry=ctx.registry)
        scores = ", ".join(
            f"{c.column} {c.score:.3f}{' DRIFT' if c.drifted else ''}" for c in report.columns
        )
        verdict = "[red]dataset drift[/]" if report.dataset_drifted else "[green]no drift[/]"
        console.print(
            f"{report.current_label} ({story}) vs {report.reference_label}: {verdict}; {scores}"
        )
    console.print(
        f"[green]✓[/] drift checked in {time.perf_counter() - started:.1f}s. Try it: "
        f"ridecast monitor drift --taxi-type {ctx.taxi_type} --month {LONGER_TRIPS} "
        "\\[--json] \\[--html FILE]",
        highlight=False,
    )
