"""Rollout control tests. Helpers shared by the test files live here (not in a conftest), so
the session's trained registry is copied, never changed: each test moves aliases in its own copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridecast.settings import Settings

CANARY = """\
model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 20
  - analysis: {duration: 20s}
  - set_weight: 50
  - analysis: {duration: 20s}
analysis:
  min_samples: 200
  max_mae_ratio: 1.05
"""


@dataclass
class Home:
    """A private ridecast home: a copy of the trained registry, its own state store and log."""

    settings: Settings
    registry: Any
    store: Any
    path: Path

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if not k.startswith("RIDECAST_")}
        env.update(
            {
                "RIDECAST_HOME": str(self.path),
                "MLFLOW_TRACKING_URI": str(self.settings.tracking_uri),
            }
        )
        return env

    def champion(self) -> str:
        from ridecast.modelref import ModelRef

        return str(self.registry.resolve(ModelRef("ride-duration", "champion")))


def _tracking_file(trained: Any) -> Path:
    uri = str(trained.tracking_uri)
    assert uri.startswith("sqlite:///"), uri
    return Path(uri.removeprefix("sqlite:///"))


@contextmanager
def private_home(trained: Any, path: Path, **overrides: Any) -> Iterator[Home]:
    """Copy the trained registry's database into ``path`` (the artifacts stay shared and are
    only read), and give back settings, registry and store over that copy."""
    from ridecast.control.store import store_for
    from ridecast.registry import Registry, configure_mlflow

    path.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(_tracking_file(trained))
    target = sqlite3.connect(path / "mlflow.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    values: dict[str, Any] = {
        "home": path,
        "tracking_uri": f"sqlite:///{(path / 'mlflow.db').resolve()}",
        "data_dir": None,
        "prediction_log_url": None,
        "state_url": None,
        **overrides,
    }
    settings = Settings(**values)
    registry = Registry(settings)
    try:
        yield Home(settings, registry, store_for(settings), path)
    finally:
        configure_mlflow(trained.settings)  # MLflow's global URI back to the shared registry
