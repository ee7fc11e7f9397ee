"""End-to-end rollout fixtures: a registry of three real duration models and a served app.

ride-duration v1 (linear, champion), v2 (gbm: better), v3 (linear trained on a month whose rides
all took 1.6× longer: worse), ride-tip and ride-cost v1; all in their own home so the tests can
move aliases freely.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ridecast.data.readers import find_month_file
from ridecast.data.schema import Month, TaxiType
from ridecast.riders import Rides
from ridecast.settings import Settings

TAXI = TaxiType.GREEN
ROWS = 20_000
SLOW_MONTH = Month(2025, 3)


@dataclass
class Models:
    settings: Settings
    home: Path
    registry: object
    tracking_uri: str
    rides: Rides  # the validation month: what riders book, with real outcomes

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIDECAST_")}
        env.update(
            {
                "RIDECAST_HOME": str(self.home),
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def ridecast(self, *args: str, **extra: str) -> list[str]:
        return [sys.executable, "-m", "ridecast", *args]


def _slow_copy(source: Path, target: Path, factor: float) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    pickup, dropoff = "lpep_pickup_datetime", "lpep_dropoff_datetime"
    start = table[pickup].cast(pa.int64())
    took = pc.subtract(table[dropoff].cast(pa.int64()), start)
    slower = pc.add(start, pc.cast(pc.multiply(took, factor), pa.int64()))
    table = table.set_column(
        table.schema.get_field_index(dropoff), dropoff, slower.cast(table[dropoff].type)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    from ridecast.registry import Registry
    from ridecast.training import train_model, train_on_synthetic_months

    home = tmp_path_factory.mktemp("e2e-home")
    settings = Settings(home=home, tracking_uri=None, data_dir=None, prediction_log_url=None)
    registry = Registry(settings)
    train_on_synthetic_months(settings, registry, rows=ROWS, taxi_type=TAXI)
    data = settings.resolved_data_dir
    train_file = find_month_file(data, TAXI, Month(2025, 1))
    _slow_copy(train_file, data / train_file.name.replace("2025-01", str(SLOW_MONTH)), 1.6)
    worse = train_model(
        "ride-duration", TAXI, SLOW_MONTH, Month(2025, 2), settings=settings, data_dir=data
    )
    assert worse.version == "3", worse
    rides = Rides.from_month(find_month_file(data, TAXI, Month(2025, 2)))
    yield Models(settings, home, registry, registry.tracking_uri, rides)
