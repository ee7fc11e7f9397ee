"""Score a range of months, skipping those the same model version has already scored.

The sink itself is the run state: a month counts as done when its results and its run record were
committed together (one transaction in a database; the run record written after the files are
renamed into place in a folder). A backfill that crashes or is killed therefore resumes by being
run again: finished months are skipped, the interrupted one (which left nothing visible) is
scored from the start, and the rest follow. The model version is resolved once, so every month of
one backfill is scored by the same version even if the alias moves meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridecast.batch.job import ScoreSummary, score_month
from ridecast.batch.plan import ScoringPlan
from ridecast.batch.sinks import MonthKey, Sink
from ridecast.batch.sources import open_source
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError
from ridecast.predictor import Predictor


@dataclass(frozen=True)
class MonthOutcome:
    month: Month
    status: str  # "scored", "skipped" (done before by this version) or "failed"
    summary: ScoreSummary | None = None
    previous: dict[str, Any] | None = None  # the earlier run's record, when skipped
    error: str | None = None


def backfill(
    taxi_type: TaxiType,
    months: list[Month],
    plan: ScoringPlan | Predictor,
    sink: Sink,
    *,
    source: str | None,
    data_dir: Path,
    source_table: str = "trips",
    force: bool = False,
    score: Callable[[Month, Any], ScoreSummary] | None = None,
    on_month: Callable[[MonthOutcome], None] | None = None,
    open_month: Callable[[Month], Any] | None = None,
) -> list[MonthOutcome]:
    """Score each month in order; a month whose input is missing or unreadable is reported as
    failed and the backfill goes on. ``score`` runs one month (default: :func:`score_month`) on
    the input ``open_month`` finds for it (default: :func:`open_source` over ``source``; the
    Spark engine passes its own, which also reads Hadoop paths).
    With a plan that compares or follows a rollout, a month counts as done for that comparison
    (or that rollout) only."""
    if isinstance(plan, Predictor):
        plan = ScoringPlan(plan)
    outcomes: list[MonthOutcome] = []
    for month in months:
        key = MonthKey(
            taxi_type,
            month,
            plan.stable.name,
            plan.stable.version,
            run_id="",
            candidate_version=plan.candidate.version if plan.candidate is not None else None,
            rollout_id=plan.rollout_id,
        )
        previous = None if force else sink.completed(key)
        if previous is not None:
            outcome = MonthOutcome(month, "skipped", previous=previous)
        else:
            try:
                month_source = (
                    open_month(month)
                    if open_month is not None
                    else open_source(
                        source,
                        taxi_type=taxi_type,
                        month=month,
                        data_dir=data_dir,
                        table=source_table,
                    )
                )
                if score is not None:
                    summary = score(month, month_source)
                else:
                    summary = score_month(taxi_type, month, plan, month_source, sink)
                outcome = MonthOutcome(month, "scored", summary=summary)
            except DataError as exc:
                outcome = MonthOutcome(month, "failed", error=str(exc))
        outcomes.append(outcome)
        if on_month is not None:
            on_month(outcome)
    return outcomes
