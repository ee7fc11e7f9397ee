"""Shared fixtures: a real MLflow registry with real trained models, and the real services.

Services (Redis, PostgreSQL) are reached at their defaults unless RIDECAST_TEST_REDIS_URL /
RIDECAST_TEST_POSTGRES_URL say otherwise. When one is unreachable its tests skip on a laptop,
and fail in CI (CI=true), where every service must be up.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ridecast.data.schema import Month, TaxiType
from ridecast.settings import Settings

TAXI = TaxiType.GREEN
TRAIN_MONTH = Month(2025, 1)
VALID_MONTH = Month(2025, 2)
ROWS = 20_000

REDIS_URL = os.environ.get("RIDECAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "RIDECAST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1.0
        ):
            return True
    except OSError:
        return False


def require_service(url: str, default_port: int, what: str) -> None:
    if _reachable(url, default_port):
        return
    message = f"{what} is not reachable at {url}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: every service must be up)")
    pytest.skip(message)


def require_tool(name: str, what: str) -> str:
    """The path of program ``name``; where it is missing, skip on a laptop and fail in CI
    (CI=true), where .ci/run makes sure every tool the tests use is there."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed: {what}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: every tool must be there)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service(POSTGRES_URL, 5432, "PostgreSQL")
    return POSTGRES_URL


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run) uses: for streams, tables, groups."""
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Trained:
    """A registry with ride-duration v1 (champion, linear) and v2 (challenger, gbm), ride-tip
    and ride-cost v1 (champion), trained on two synthetic green months in ``data_dir``."""

    settings: Settings
    home: Path
    data_dir: Path
    tracking_uri: str
    registry: object

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (server, consumer, CLI) that uses this registry."""
        env = dict(os.environ)
        env.update(
            {
                "RIDECAST_HOME": str(self.home),
                "RIDECAST_DATA_DIR": str(self.data_dir),
                "MLFLOW_TRACKING_URI": self.tracking_uri,
            }
        )
        return env


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from ridecast.registry import Registry
    from ridecast.training import train_on_synthetic_months

    home = tmp_path_factory.mktemp("ridecast-home")
    settings = Settings(home=home, tracking_uri=None, data_dir=None, prediction_log_url=None)
    registry = Registry(settings)
    train_on_synthetic_months(
        settings,
        registry,
        rows=ROWS,
        taxi_type=TAXI,
        train_month=TRAIN_MONTH,
        valid_month=VALID_MONTH,
    )
    yield Trained(settings, home, settings.resolved_data_dir, registry.tracking_uri, registry)
