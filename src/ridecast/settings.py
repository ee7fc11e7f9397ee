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

    # --- rollouts (ridecast.rollout, ridecast.control) ---
    state_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the rollout state store (default: the prediction log's "
        "database, so analysis and state share one database).",
    )
    rollout_follow_interval: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Seconds between checks of the rollout state and the alias by every "
        "serving process (every process follows a change within this time plus a load).",
    )
    rollout_controller: bool = Field(
        default=True,
        description="Let this process compete for the lease that advances rollout steps.",
    )
    rollout_lease_seconds: float = Field(
        default=5.0,
        ge=1.0,
        description="A controller that stops renewing loses the lease after this.",
    )
    admin_token: str | None = Field(
        default=None,
        description="Bearer token of the admin API (/admin/...). Off when neither this nor "
        "admin_token_file is set.",
    )
    admin_token_file: Path | None = Field(
        default=None, description="File holding the admin token (a mounted secret)."
    )
    feedback_token: str | None = Field(
        default=None,
        description="Bearer token POST /feedback needs (default: the admin token, if any).",
    )
    shadow_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Shadow requests waiting for the candidate; more are dropped and counted.",
    )

    # --- web service (`ridecast serve`); the CLI's options override these ---
    serve_models: str = Field(
        default="models:/ride-duration@champion",
        description="Comma-separated model URIs the web service loads; the first answers /predict "
        "and /invocations.",
    )
    serve_workers: int = Field(default=2, ge=1, description="Worker processes of `ridecast serve`.")
    serve_batching: bool = Field(
        default=True, description="Coalesce concurrent single-ride requests into one model call."
    )
    serve_max_batch_size: int = Field(default=256, ge=1, description="Largest micro-batch.")
    serve_max_batch_time_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="Longest a request waits for companions; 0 = batch only the requests that "
        "arrived in the same event-loop turn (adds no latency).",
    )
    serve_watch_interval: float = Field(
        default=2.0,
        ge=0.0,
        description="Seconds between alias checks (0 = no hot reload of a moved alias; the "
        "rollout state is followed all the same).",
    )
    serve_max_body_bytes: int = Field(default=2_097_152, ge=1024, description="Request size cap.")
    serve_max_rides: int = Field(default=10_000, ge=1, description="Rides per request cap.")
    serve_log_predictions: bool = Field(
        default=True, description="Write every prediction to the prediction log."
    )
    serve_shutdown_delay: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds to keep serving (with /health/ready false) after SIGTERM.",
    )

    # --- streaming (ridecast.stream) ---
    stream_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Events a consumer reads, predicts and acknowledges at once; also the cap "
        "on its in-flight (read, unacknowledged) events.",
    )
    stream_block_ms: int = Field(
        default=500, ge=1, le=5_000, description="How long a read waits for the first event."
    )
    stream_claim_idle_ms: int = Field(
        default=30_000,
        ge=50,
        description="An event left unacknowledged this long (its consumer died) is claimed by "
        "another consumer of the group.",
    )
    stream_max_deliveries: int = Field(
        default=5,
        ge=1,
        description="An event delivered more often than this goes to the dead-letter stream.",
    )
    stream_retention: int = Field(
        default=1_000_000,
        ge=100,
        description="Output and dead-letter streams keep about this many entries (MAXLEN ~).",
    )
    lambda_model_uri: str = Field(
        default="models:/ride-duration@champion",
        validation_alias=AliasChoices(
            "RIDECAST_MODEL_URI", "RIDECAST_LAMBDA_MODEL_URI", "lambda_model_uri"
        ),
        description="Model the Lambda-compatible handler loads once per container.",
    )

    # --- batch scoring (ridecast.batch) ---
    batch_chunk_rows: int = Field(
        default=250_000,
        ge=100,
        le=5_000_000,
        description="Rows read, scored and written at a time; bounds the job's memory.",
    )
    batch_model_cache: bool = Field(
        default=True,
        description="Keep each registered version's model under <home>/cache/models so later "
        "jobs skip MLflow's loading path (the registry still says which version to use).",
    )

    # --- Prometheus metrics (ridecast.monitoring.metrics) ---
    metrics_pushgateway: str | None = Field(
        default=None,
        description="Pushgateway (host:port or URL) a batch job pushes its metrics to when it "
        "ends, grouped by job, taxi type and month.",
    )
    metrics_textfile_dir: Path | None = Field(
        default=None,
        description="Folder of node-exporter's textfile collector; a batch job writes its "
        "metrics there (one .prom file per taxi type and month) when it ends.",
    )
    metrics_multiprocess_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "metrics_multiprocess_dir"),
        description="prometheus_client's multiprocess folder. `ridecast serve --workers N` sets "
        "it for its workers (default <home>/run/serve-<pid>/prometheus) and empties it at start.",
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def resolved_state_url(self) -> str:
        return self.state_url or self.resolved_prediction_log_url

    @property
    def resolved_admin_token(self) -> str | None:
        if self.admin_token:
            return self.admin_token
        if self.admin_token_file is not None:
            token = self.admin_token_file.read_text(encoding="utf-8").strip()
            return token or None
        return None

    @property
    def resolved_feedback_token(self) -> str | None:
        return self.feedback_token or self.resolved_admin_token

    @property
    def resolved_prediction_log_url(self) -> str:
        if self.prediction_log_url:
            return self.prediction_log_url
        return f"sqlite:///{(self.home / 'predictions.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
