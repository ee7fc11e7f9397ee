"""What a batch run tells the person who ran it: the closing summary, as text and Rich tables.

Lines that carry paths, URLs or error messages are printed with ``markup=False`` (or escaped):
a ``[bracket]`` in them is text, not Rich markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ridecast.batch.backfill import MonthOutcome
    from ridecast.batch.job import ScoreSummary
    from ridecast.batch.sinks import DirectorySink, SqlSink


def month_line(outcome: MonthOutcome) -> str:
    if outcome.status == "skipped":
        previous = outcome.previous or {}
        return (
            f"{outcome.month}  skipped   already scored by v{previous.get('model_version', '?')} "
            f"(run {previous.get('run_id', '?')}, {previous.get('rows_scored', 0):,} rows); "
            "--force to redo"
        )
    if outcome.status == "failed":
        return f"{outcome.month}  failed    {outcome.error}"
    s = outcome.summary
    assert s is not None
    return (
        f"{outcome.month}  scored    {s.rows_read:,} read, {s.rows_scored:,} scored, "
        f"{s.rows_rejected:,} rejected, RMSE {s.rmse:.2f} min, {s.seconds:.1f}s"
    )


def print_summary(console: Console, summary: ScoreSummary, sink: DirectorySink | SqlSink) -> None:
    from ridecast.batch.sinks import DirectorySink, MonthKey

    s = summary
    console.print(
        f"[green]✓[/] {s.taxi_type.value} {s.month}: {s.rows_read:,} rows read, "
        f"{s.rows_scored:,} scored, {s.rows_rejected:,} rejected "
        f"in {s.seconds:.1f}s ({s.rows_per_second:,.0f} rows/s), run {s.run_id}",
        highlight=False,
    )
    reasons = [f"{reason} {count:,}" for reason, count in s.rejected.items() if count]
    if reasons:
        console.print(f"  rejected: {' · '.join(reasons)}", highlight=False)
    console.print(
        f"  predicted duration: mean {s.mean:.2f} min, std {s.std:.2f} min; "
        f"RMSE against actual {s.rmse:.2f} min",
        highlight=False,
    )
    if s.comparison is not None:
        _print_comparison(console, s)
    if s.split is not None:
        _print_split(console, s)
    if s.logged is not None:
        console.print(
            f"  prediction log: {s.logged['written']:,} rows written, {s.logged['dropped']:,} "
            f"dropped, {s.logged['seconds']:.1f}s, into {s.logged['url']}",
            markup=False,
            highlight=False,
        )
    if isinstance(sink, DirectorySink):
        key = s.key or MonthKey(s.taxi_type, s.month, s.model_name, s.model_version, s.run_id)
        console.print(
            f"  → {sink.output(key)} (predictions, rejects and run record)",
            markup=False,
            highlight=False,
        )
    else:
        console.print(
            f"  → {sink} (rejects in {sink.rejects_table}, run in ride_batch_runs)",
            markup=False,
            highlight=False,
        )


def _print_comparison(console: Console, summary: ScoreSummary) -> None:
    from rich.table import Table

    assert summary.comparison is not None
    c = summary.comparison.record()
    stable, candidate = c["stable"], c["candidate"]
    table = Table(title=f"stable v{stable['version']} vs candidate v{candidate['version']}")
    table.add_column("figure")
    table.add_column(f"stable v{stable['version']}", justify="right")
    table.add_column(f"candidate v{candidate['version']}", justify="right")
    table.add_row("rows", f"{c['rows']:,}", f"{c['rows']:,}")
    table.add_row("MAE vs actual, min", f"{stable['mae']:.3f}", f"{candidate['mae']:.3f}")
    table.add_row("RMSE vs actual, min", f"{stable['rmse']:.3f}", f"{candidate['rmse']:.3f}")
    table.add_row("mean diff (candidate − stable), min", "", f"{c['mean_diff']:+.3f}")
    table.add_row("mean |diff|, min", "", f"{c['mean_abs_diff']:.3f}")
    table.add_row("share |diff| > 2 min", "", f"{c['share_abs_diff_over_2min']:.1%}")
    console.print(table)
    better = {
        "candidate": f"candidate v{candidate['version']} is better (lower MAE)",
        "stable": f"stable v{stable['version']} is better (lower MAE)",
        "tie": "both versions have the same MAE",
    }[c["better"]]
    console.print(f"  {better}", highlight=False)


def _print_split(console: Console, summary: ScoreSummary) -> None:
    from rich.table import Table

    assert summary.split is not None
    r = summary.split.record()
    console.print(
        f"  rows were split between versions by rollout {r['rollout_id']} ({r['strategy']}, "
        f"{r['phase']}, step {r['step']}, weight {r['weight']}%), by ride id:",
        highlight=False,
    )
    table = Table()
    for name in ("version", "arm", "rows", "share", "MAE, min", "RMSE, min"):
        table.add_column(name, justify="left" if name in ("version", "arm") else "right")
    for v in r["versions"]:
        table.add_row(
            f"v{v['version']}",
            v["arm"],
            f"{v['rows']:,}",
            f"{v['share']:.1%}",
            f"{v['mae']:.3f}",
            f"{v['rmse']:.3f}",
        )
    console.print(table)
    if r["shadow_rows"]:
        console.print(
            f"  {r['shadow_rows']:,} rows were also scored by the shadow (logged only)",
            highlight=False,
        )
