"""Backfills skip what the same version scored, resume after a crash; the CLI speaks plainly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ridecast.batch.backfill import backfill
from ridecast.batch.job import ScoreSummary
from ridecast.batch.models import _ask_sqlite_registry, _cache_path, load_predictor, tracking_uri
from ridecast.batch.sinks import DirectorySink
from ridecast.batch.sources import TripSource
from ridecast.data.schema import Month, TaxiType, month_range
from ridecast.predictor import Predictor
from ridecast.registry import Registry

from ..conftest import Trained

GREEN = TaxiType.GREEN
MONTHS = month_range(Month(2025, 1), Month(2025, 3))  # 2025-03 has no file


def test_backfill_skips_done_months_resumes_after_a_crash_and_forces(
    trained: Trained, predictor: Predictor, tmp_path: Path
) -> None:
    sink = DirectorySink(tmp_path / "out")

    def crash_on_february(month: Month, source: TripSource) -> ScoreSummary:
        if month == Month(2025, 2):
            raise KeyboardInterrupt  # the process dies in the middle of the backfill
        from ridecast.batch.job import score_month

        return score_month(GREEN, month, predictor, source, sink)

    with pytest.raises(KeyboardInterrupt):
        backfill(GREEN, MONTHS, predictor, sink, source=None, data_dir=trained.data_dir,
                 score=crash_on_february)  # fmt: skip

    resumed = backfill(GREEN, MONTHS, predictor, sink, source=None, data_dir=trained.data_dir)
    assert [o.status for o in resumed] == ["skipped", "scored", "failed"]
    assert "no green trip file for 2025-03" in (resumed[2].error or "")
    assert resumed[1].summary is not None and resumed[1].summary.rows_scored > 0

    again = backfill(GREEN, MONTHS, predictor, sink, source=None, data_dir=trained.data_dir)
    assert [o.status for o in again] == ["skipped", "skipped", "failed"]
    assert again[1].previous is not None
    assert again[1].previous["run_id"] == resumed[1].summary.run_id

    forced = backfill(
        GREEN, MONTHS[:2], predictor, sink, source=None, data_dir=trained.data_dir, force=True
    )
    assert [o.status for o in forced] == ["scored", "scored"]


def _ridecast(args: list[str], trained: Trained) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=trained.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.timeout(300)
def test_cli_backfill_prints_one_line_per_month_and_fails_plainly(
    trained: Trained, tmp_path: Path
) -> None:
    sink = f"sqlite:///{tmp_path / 'scores.db'}"
    score = _ridecast(["batch", "score", "--month", "2025-02", "--sink", sink], trained)
    assert score.returncode == 0, score.stderr
    assert "rows read" in score.stdout and "RMSE against actual" in score.stdout

    args = ["batch", "backfill", "--from", "2025-01", "--to", "2025-03", "--sink", sink]
    result = _ridecast(args, trained)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("2025-01  scored") for line in lines), result.stdout
    assert any(line.startswith("2025-02  skipped") for line in lines), result.stdout
    assert any(line.startswith("2025-03  failed") for line in lines), result.stdout
    assert "1 of 3 months failed (2025-03)" in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["batch", "score", "--month", "2025-13"], ["2025-13", "YYYY-MM"]),
        (["batch", "score", "--month", "2025-02", "--source", "/nonexistent.parquet"],
         ["/nonexistent.parquet", "does not exist"]),
        (["batch", "score", "--month", "2025-02", "--sink", "mysql://x@y/z"], ["sqlite:///"]),
        (["batch", "score", "--month", "2025-02", "--model", "models:/nope@champion"],
         ["models:/nope@champion", "ride-duration"]),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], needles: list[str], trained: Trained
) -> None:
    result = _ridecast(args, trained)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, result.stderr


def test_cli_help() -> None:
    for args in (
        ["batch", "--help"],
        ["batch", "score", "--help"],
        ["batch", "backfill", "--help"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ridecast", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0
        assert "--sink" in result.stdout or "backfill" in result.stdout


def test_model_cache_follows_the_registry(trained: Trained, unique_name: str) -> None:
    """The cache only saves loading: the alias still decides the version, every time."""
    registry = trained.registry
    assert isinstance(registry, Registry)
    settings = trained.settings
    alias = f"batch{unique_name}"
    registry.set_alias("ride-duration", alias, "1")
    first = load_predictor(settings, f"models:/ride-duration@{alias}", use_cache=True)
    identity = _ask_sqlite_registry(tracking_uri(settings), "ride-duration", alias, None)
    assert identity is not None and identity.version == first.version == "1"
    assert _cache_path(settings, tracking_uri(settings), identity).is_file()

    # A cache hit does not go through MLflow's loading path at all.
    original = Registry.load
    Registry.load = lambda *a, **k: pytest.fail("loaded through MLflow despite the cache")  # type: ignore[method-assign]
    try:
        cached = load_predictor(settings, f"models:/ride-duration@{alias}", use_cache=True)
    finally:
        Registry.load = original  # type: ignore[method-assign]
    assert cached.version == "1" and cached.predict_rides(
        [{"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0}]
    ) == first.predict_rides([{"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0}])

    registry.set_alias("ride-duration", alias, "2")  # the alias moves: the next job follows
    moved = load_predictor(settings, f"models:/ride-duration@{alias}", use_cache=True)
    assert moved.version == "2" and moved.loaded.model.algorithm == "gbm"
    registry.client.delete_registered_model_alias("ride-duration", alias)
