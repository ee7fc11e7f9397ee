"""The CLI as a user meets it: real processes, one-line errors, non-zero exits, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Trained

RIDECAST = [sys.executable, "-m", "ridecast"]


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        RIDECAST + args,
        env=env or dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, result.stderr


def test_help_lists_the_commands() -> None:
    result = run(["--help"])
    assert result.returncode == 0
    for command in ("data", "train", "models", "demo"):
        assert command in result.stdout
    for sub in (["data", "synth", "--help"], ["train", "--help"], ["models", "list", "--help"]):
        assert run(sub).returncode == 0


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["data", "synth", "--month", "2025-13"], ["2025-13", "YYYY-MM"]),
        (["data", "synth", "--month", "2025-01", "--taxi-type", "purple"], ["purple", "green"]),
    ],
)
def test_bad_arguments_end_with_one_clear_line(
    args: list[str], needles: list[str], tmp_path: Path
) -> None:
    assert_one_line_error(run([*args, "--out", str(tmp_path)]), *needles)


def test_missing_month_file_names_the_path_and_the_fix(trained: Trained, tmp_path: Path) -> None:
    env = {**trained.env(), "RIDECAST_DATA_DIR": str(tmp_path)}
    result = run(["train", "ride-duration", "--train", "2024-05", "--valid", "2024-06"], env=env)
    assert_one_line_error(result, "green_tripdata_2024-05.parquet", "ridecast data synth")


def test_file_without_needed_columns_is_named(trained: Trained, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"foo": [1, 2]}), tmp_path / "green_tripdata_2025-03.parquet")
    pq.write_table(pa.table({"foo": [1, 2]}), tmp_path / "green_tripdata_2025-04.parquet")
    env = {**trained.env(), "RIDECAST_DATA_DIR": str(tmp_path)}
    result = run(["train", "ride-duration", "--train", "2025-03", "--valid", "2025-04"], env=env)
    assert_one_line_error(result, "green_tripdata_2025-03.parquet", "PULocationID")


@pytest.mark.timeout(240)
def test_synth_train_list_on_yellow_months(trained: Trained, tmp_path: Path) -> None:
    """A yellow month in the published schema trains without changes; models list shows it."""
    env = {
        **trained.env(),
        "RIDECAST_HOME": str(tmp_path / "home"),
        "RIDECAST_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for month, seed in (("2024-03", "3"), ("2024-04", "4")):
        result = run(
            [
                "data",
                "synth",
                "--taxi-type",
                "yellow",
                "--month",
                month,
                "--rows",
                "8000",
                "--seed",
                seed,
            ],
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "data" / f"yellow_tripdata_{month}.parquet").exists()
    result = run(
        [
            "train",
            "ride-duration",
            "--taxi-type",
            "yellow",
            "--train",
            "2024-03",
            "--valid",
            "2024-04",
            "--alias",
            "champion",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "registered ride-duration v1 @champion" in result.stdout
    listed = run(["models", "list"], env=env)
    assert listed.returncode == 0
    assert (
        "ride-duration" in listed.stdout
        and "champion" in listed.stdout
        and "yellow 2024-03" in listed.stdout
    )
    unknown = run(["models", "alias", "ride-duration", "champion", "7"], env=env)
    assert_one_line_error(unknown, "ride-duration")
