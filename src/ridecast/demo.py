"""``ridecast demo``: the whole tour on embedded defaults, in one straight line.

1. synthesize two TLC-schema months;  2. train and register v1 (champion) and a better v2
(challenger);  3. run every deployment mode against the registry, then check two new months for
drift; each step is a ``demo_step(ctx)`` in its own package;  4. serve the dashboard over what
the steps logged and print its URL (``keep_serving``: until Ctrl-C).
"""

from __future__ import annotations

import importlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ridecast.data.schema import Month, TaxiType
from ridecast.settings import Settings

TRAIN_MONTH = Month(2025, 1)
VALID_MONTH = Month(2025, 2)
# The demo's steps, run in this order; each module has a ``demo_step(ctx)``.
MODE_STEPS = (
    "ridecast.web.demo",
    "ridecast.batch.demo",
    "ridecast.stream.demo",
    "ridecast.web.rollout_demo",
    "ridecast.monitoring.demo",
)


@dataclass
class DemoContext:
    """What the steps share: where things are, and what the earlier steps made."""

    console: Console
    settings: Settings
    registry: Any
    taxi_type: TaxiType = TaxiType.GREEN
    train_month: Month = TRAIN_MONTH
    valid_month: Month = VALID_MONTH
    rows: int = 60_000  # rides per synthetic month
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir


def run_demo(
    console: Console,
    *,
    workdir: Path | None = None,
    rows: int = 60_000,
    keep_serving: bool = False,
) -> DemoContext:
    from ridecast.registry import Registry
    from ridecast.training import DEMO_PLAN, train_on_synthetic_months

    started = time.perf_counter()
    home = workdir or Path(".ridecast/demo")
    shutil.rmtree(home, ignore_errors=True)  # the demo's own directory: every run starts clean
    settings = Settings(home=home, tracking_uri=None, data_dir=None, prediction_log_url=None)
    ctx = DemoContext(console, settings, Registry(settings), rows=rows)
    console.rule("[bold]ridecast demo")
    console.print(f"workdir {home.resolve()}  ·  registry {ctx.registry.tracking_uri}")

    t0 = time.perf_counter()
    ctx.results.update(
        train_on_synthetic_months(
            settings,
            ctx.registry,
            rows=rows,
            taxi_type=ctx.taxi_type,
            train_month=ctx.train_month,
            valid_month=ctx.valid_month,
        )
    )
    console.print(
        f"[green]✓[/] synthesized {ctx.taxi_type} {ctx.train_month} and {ctx.valid_month} "
        f"({rows:,} rides each) and trained {len(DEMO_PLAN)} models "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    table = Table(
        "model", "version", "alias", "algorithm", "valid RMSE", "std of target", "RMSE/std"
    )
    for name, algorithm, alias in DEMO_PLAN:
        m = ctx.results[f"{name}@{alias}"].metrics
        version = ctx.results[f"{name}@{alias}"].version
        table.add_row(
            name,
            f"v{version}",
            alias,
            algorithm,
            f"{m['rmse']:.3f}",
            f"{m['target_std']:.3f}",
            f"{m['rmse_over_std']:.2f}",
        )
    console.print(table)
    champion = ctx.results["ride-duration@champion"].metrics
    challenger = ctx.results["ride-duration@challenger"].metrics
    console.print(
        f"ride-duration: champion RMSE {champion['rmse']:.2f} min "
        f"vs std {champion['target_std']:.2f} min "
        f"(ratio {champion['rmse_over_std']:.2f}); challenger RMSE {challenger['rmse']:.2f} min"
    )

    for module_name in MODE_STEPS:
        importlib.import_module(module_name).demo_step(ctx)

    console.rule(f"demo finished in {time.perf_counter() - started:.1f}s")
    # Last, so that the URL is the last thing printed (and stays up with --keep-serving).
    from ridecast.dashboard.demo import show_dashboard

    show_dashboard(ctx, keep_serving=keep_serving)
    return ctx
