"""Backfills skip what the same version scored, resume after a crash; the CLI speaks plainly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ridecast.batch.backfill import backfill
from ridecast.batch.job import ScoreSummary
from ridecast.batch.sinks import DirectorySink
from ridecast.batch.sources import TripSource
from ridecast.data.schema import Month, TaxiType, month_range
from ridecast.predictor import Predictor

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

    # A folder whose name holds brackets: a month's error names it, and prints it whole.
    source = tmp_path / "tlc [copy]"
    source.mkdir()
    for month in ("2025-01", "2025-02"):
        name = f"green_tripdata_{month}.parquet"
        (source / name).symlink_to(trained.data_dir / name)
    args = ["batch", "backfill", "--from", "2025-01", "--to", "2025-03", "--sink", sink]
    result = _ridecast([*args, "--source", str(source)], trained)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("2025-01  scored") for line in lines), result.stdout
    assert any(line.startswith("2025-02  skipped") for line in lines), result.stdout
    (failed,) = [line for line in lines if line.startswith("2025-03  failed")]
    assert str(source / "green_tripdata_2025-03.parquet") in failed, result.stdout
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
    # Help is Rich markup: a "[default: …]" written in a help text must survive it.
    result = subprocess.run(
        [sys.executable, "-m", "ridecast", "batch", "score", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert "[default: 250000; env RIDECAST_BATCH_CHUNK_ROWS]" in result.stdout
    assert "[default: local[*], or the one spark-submit was given]" in result.stdout
