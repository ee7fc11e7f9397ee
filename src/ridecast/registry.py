"""The MLflow registry as ridecast sees it: model URIs, versions, aliases, loading with a cache.

The registry is the single source of truth for versions; an alias names what a deployment serves.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ridecast.errors import ModelError
from ridecast.model import TARGETS, RideModel
from ridecast.modelref import ModelRef, parse_model_uri
from ridecast.predictor import LoadedModel
from ridecast.settings import Settings

EXPERIMENT = "ridecast"


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured tracking server (default: a local SQLite file)."""
    uri = settings.tracking_uri
    if not uri:
        settings.home.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow's own INFO chatter (migrations, run links) is noise in a CLI.
    # (Its cloudpickle advice is moot here: models load only from the registry.)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    return uri


def ensure_experiment(settings: Settings) -> str:
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    artifact_location = None if settings.tracking_uri else settings.artifact_root.as_uri()
    return str(mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location))


class Registry:
    """Resolve and load registered ride models. Loaded versions are cached (they are immutable)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracking_uri = configure_mlflow(settings)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._cache: dict[tuple[str, str], LoadedModel] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: ModelRef) -> str:
        """The version number an alias (or explicit version) points at now."""
        try:
            if ref.version is not None:
                self.client.get_model_version(ref.name, ref.version)
                return ref.version
            mv = self.client.get_model_version_by_alias(ref.name, ref.alias or "champion")
            return str(mv.version)
        except MlflowException as exc:
            known = (
                ", ".join(sorted(m.name for m in self.client.search_registered_models())) or "none"
            )
            raise ModelError(
                f"{ref.uri} is not in the registry at {self.tracking_uri} "
                f"(registered models: {known}); train one with `ridecast train {ref.name} ...`"
            ) from exc

    def load(self, ref: ModelRef | str) -> LoadedModel:
        if isinstance(ref, str):
            ref = parse_model_uri(ref)
        version = self.resolve(ref)
        key = (ref.name, version)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            mv = self.client.get_model_version(ref.name, version)
            pyfunc = mlflow.pyfunc.load_model(f"models:/{ref.name}/{version}")
            model = pyfunc.unwrap_python_model()
        except MlflowException as exc:
            raise ModelError(f"models:/{ref.name}/{version} could not be loaded: {exc}") from exc
        if not isinstance(model, RideModel):
            raise ModelError(
                f"models:/{ref.name}/{version} is a {type(model).__name__}, "
                "not a ridecast RideModel"
            )
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        loaded = LoadedModel(ref.name, version, model, mv.run_id, metrics)
        with self._lock:
            self._cache[key] = loaded
        return loaded

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def list_versions(self) -> list[dict[str, Any]]:
        """Every registered version with its aliases and its run's metrics, newest first."""
        rows: list[dict[str, Any]] = []
        for registered in self.client.search_registered_models():
            aliases: dict[str, list[str]] = {}
            for alias, version in (registered.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            for mv in self.client.search_model_versions(f"name='{registered.name}'"):
                metrics: dict[str, float] = {}
                params: dict[str, str] = {}
                if mv.run_id:
                    try:
                        run = self.client.get_run(mv.run_id)
                        metrics, params = dict(run.data.metrics), dict(run.data.params)
                    except MlflowException:
                        pass
                rows.append(
                    {
                        "name": registered.name,
                        "version": str(mv.version),
                        "aliases": sorted(aliases.get(str(mv.version), [])),
                        "target": TARGETS.get(registered.name, "?"),
                        "metrics": metrics,
                        "params": params,
                        "created": mv.creation_timestamp,
                    }
                )
        rows.sort(key=lambda r: (r["name"], -int(r["version"])))
        return rows
