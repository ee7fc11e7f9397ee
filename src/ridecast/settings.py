"""Every knob of ridecast, read once from the environment (``RIDECAST_*``) with a safe default.

The core modules receive a :class:`Settings` object; they never read environment variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RIDECAST_", extra="ignore", populate_by_name=True)

    home: Path = Field(
        default=Path(".ridecast"),
        description="Working directory for the embedded defaults (registry, data, logs).",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Where TLC month files live (default: <home>/data).",
    )
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "MLFLOW_TRACKING_URI", "RIDECAST_TRACKING_URI", "tracking_uri"
        ),
        description="MLflow tracking/registry URI. MLFLOW_TRACKING_URI wins if set; "
        "default: sqlite:///<home>/mlflow.db with artifacts in <home>/mlartifacts.",
    )
    prediction_log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log (default: sqlite:///<home>/predictions.db).",
    )
    broker_url: str = Field(
        default="memory://",
        validation_alias=AliasChoices("RIDECAST_BROKER_URL", "REDIS_URL", "broker_url"),
        description="Stream broker: memory:// (in-process) or redis://host:port/db.",
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def resolved_prediction_log_url(self) -> str:
        if self.prediction_log_url:
            return self.prediction_log_url
        return f"sqlite:///{(self.home / 'predictions.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
