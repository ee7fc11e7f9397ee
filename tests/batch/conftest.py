"""Fixtures of the batch tests: a real predictor from the real registry, and dirty TLC months."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ridecast.data.schema import Month, TaxiType
from ridecast.data.synth import synthesize_month
from ridecast.predictor import Predictor
from ridecast.registry import Registry
from ridecast.settings import Settings

from ..conftest import Trained

MONTH = Month(2025, 2)

# Rows of the dirty month that carry one kind of dirt each, and the reason they must get.
DIRT: dict[int, str] = {
    0: "missing_zone",  # null PULocationID
    1: "missing_zone",  # null DOLocationID
    2: "unknown_zone",  # zone 0
    3: "unknown_zone",  # zone 300
    4: "missing_distance",  # NaN
    5: "missing_distance",  # null
    6: "negative_distance",
    7: "missing_time",  # null pickup
    8: "duration_out_of_range",  # dropoff before pickup
    9: "duration_out_of_range",  # zero-length ride
    10: "duration_out_of_range",  # meter left running for 5 hours
    11: "pickup_outside_month",  # device clock years back
    12: "pickup_outside_month",  # next month
    13: "missing_zone",  # null zone AND negative distance: the first reason wins
    14: "distance_out_of_range",  # 5,000 miles: an odometer error, refused by every mode
    15: "distance_out_of_range",  # infinite
}
LONG_RIDE_ROW = 16  # 499 miles: absurd but within what every mode scores, so it is scored
PLAIN_ROWS = 17  # rows 0..16 are a plain 10-minute ride apart from their one injected dirt


def _uncached(trained: Trained) -> Registry:
    """A registry that loads through MLflow (full RideModel, not the cache's compiled form)."""
    return Registry(trained.settings.model_copy(update={"batch_model_cache": False}))


@pytest.fixture(scope="session")
def predictor(trained: Trained) -> Predictor:
    return _uncached(trained).predictor("models:/ride-duration@champion")


@pytest.fixture(scope="session")
def challenger(trained: Trained) -> Predictor:
    return _uncached(trained).predictor("models:/ride-duration@challenger")


@pytest.fixture
def private(trained: Trained, tmp_path: Path) -> Trained:
    """A copy of the trained registry in its own home (same artifacts, same data), for tests
    that move aliases, register versions or start rollouts: the shared one stays as it was."""
    home = tmp_path / "home"
    home.mkdir()
    source = sqlite3.connect(trained.home / "mlflow.db")
    target = sqlite3.connect(home / "mlflow.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    settings = Settings(
        home=home, tracking_uri=None, data_dir=trained.data_dir, prediction_log_url=None
    )
    registry = Registry(settings)
    return Trained(settings, home, trained.data_dir, registry.tracking_uri, registry)


def _set(table: pa.Table, column: str, values: dict[int, object]) -> pa.Table:
    data = table.column(column).to_pylist()
    for row, value in values.items():
        data[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(data, type=table.schema.field(column).type))


def make_dirty_month(rows: int = 3000, seed: int = 7) -> pa.Table:
    """A green month in TLC's exact schema with every kind of dirt real months have."""
    table = synthesize_month(TaxiType.GREEN, MONTH, rows, seed=seed)
    ok_pickup = datetime(2025, 2, 10, 12, 0)
    # Give the dirty rows a plain 10-minute ride first, so only the injected dirt counts.
    plain = dict.fromkeys(range(PLAIN_ROWS), ok_pickup)
    table = _set(table, "lpep_pickup_datetime", plain)
    table = _set(
        table,
        "lpep_dropoff_datetime",
        {row: datetime(2025, 2, 10, 12, 10) for row in range(PLAIN_ROWS)},
    )
    rows = range(PLAIN_ROWS)
    table = _set(table, "PULocationID", dict.fromkeys(rows, 74) | {0: None, 2: 0, 13: None})
    table = _set(table, "DOLocationID", dict.fromkeys(rows, 75) | {1: None, 3: 300})
    dirt = {4: float("nan"), 5: None, 6: -1.2, 13: -3.0, 14: 5000.0, 15: float("inf"), 16: 499.0}
    table = _set(table, "trip_distance", dict.fromkeys(rows, 2.5) | dirt)
    table = _set(table, "lpep_pickup_datetime", {7: None})
    table = _set(
        table,
        "lpep_dropoff_datetime",
        {
            8: datetime(2025, 2, 10, 11, 50),
            9: ok_pickup,
            10: datetime(2025, 2, 10, 17, 0),
        },
    )
    table = _set(
        table,
        "lpep_pickup_datetime",
        {11: datetime(2011, 2, 10, 12, 0), 12: datetime(2025, 3, 1, 0, 5)},
    )
    table = _set(
        table,
        "lpep_dropoff_datetime",
        {11: datetime(2011, 2, 10, 12, 10), 12: datetime(2025, 3, 1, 0, 15)},
    )
    return table  # rows from PLAIN_ROWS on keep the synthetic month's own (realistic) dirt


@pytest.fixture
def dirty_file(tmp_path: Path) -> Path:
    path = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(make_dirty_month(), path)
    return path


def expected_reasons(table: pa.Table) -> np.ndarray:
    """The reason each row must get, computed independently of the job, row by row."""
    out = []
    start, end = datetime(2025, 2, 1), datetime(2025, 3, 1)
    for r in table.to_pylist():
        pickup, dropoff = r["lpep_pickup_datetime"], r["lpep_dropoff_datetime"]
        pu, do, dist = r["PULocationID"], r["DOLocationID"], r["trip_distance"]
        if pickup is None or dropoff is None:
            out.append("missing_time")
        elif not start <= pickup < end:
            out.append("pickup_outside_month")
        elif pu is None or do is None:
            out.append("missing_zone")
        elif not (1 <= pu <= 265 and 1 <= do <= 265):
            out.append("unknown_zone")
        elif dist is None or dist != dist:
            out.append("missing_distance")
        elif dist < 0:
            out.append("negative_distance")
        elif dist > 500:  # infinity too
            out.append("distance_out_of_range")
        elif not 1 <= (dropoff - pickup).total_seconds() / 60 <= 60:
            out.append("duration_out_of_range")
        else:
            out.append("")
    return np.array(out, dtype=object)


@pytest.fixture
def pg_cleanup(postgres_url: str, unique_name: str) -> Iterator[str]:
    """The PostgreSQL URL; the test's tables and run records are dropped afterwards."""
    yield postgres_url
    import psycopg
    from sqlalchemy.engine import make_url

    target = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(target) as connection:
        for table in (unique_name, f"{unique_name}_rejects"):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute("DELETE FROM ride_batch_runs WHERE sink_table = %s", (unique_name,))


CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One real Spark session on ``local[2]`` for every Spark test (starting one takes ~10 s).
    Where Java or pyspark is missing the Spark tests skip, except with CI=true, where they
    fail: CI installs both."""
    from ridecast.batch.spark_session import SparkUnavailable, start_session

    try:
        session = start_session("local[2]", app_name="ridecast tests")
    except SparkUnavailable as exc:
        if CI:
            pytest.fail(f"{exc} (CI=true: the dev lock installs pyspark; Java 17 must be there)")
        pytest.skip(str(exc))
    yield session
    session.stop()
