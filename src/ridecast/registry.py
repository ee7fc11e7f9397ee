"""The MLflow registry as ridecast sees it: model URIs, versions, aliases, loading with a cache.

The registry is the single source of truth for versions; an alias names what a deployment serves.
Every mode gets its model through :meth:`Registry.predictor`: the reference is resolved through
MLflow's client (its public API), the version is loaded, warmed and kept in memory; with
``batch_model_cache`` on, a local copy (:mod:`ridecast.model_cache`) lets a later process skip
MLflow's pyfunc loading for the same version. MLflow is imported when a Registry is made, not
when this module is imported, so parsing a reference stays cheap.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

from ridecast import artifacts
from ridecast.errors import ModelError
from ridecast.model_cache import ModelCache, VersionIdentity
from ridecast.modelref import ModelRef, parse_model_uri
from ridecast.predictor import LoadedModel, Predictor
from ridecast.settings import Settings
from ridecast.urls import mask_url

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger("ridecast.registry")

EXPERIMENT = "ridecast"
# pyfunc loading resolves ``models:/`` through MLflow's process-wide registry URI; a process may
# hold registries of several URIs (tests, tools), so each load points it at its own first.
_PYFUNC_LOCK = threading.Lock()
__all__ = ["EXPERIMENT", "ModelRef", "Registry", "configure_mlflow", "parse_model_uri"]


def tracking_uri(settings: Settings) -> str:
    """The registry URI the settings name (default: a SQLite file in the home folder)."""
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured tracking server (default: a local SQLite file)."""
    import mlflow

    uri = tracking_uri(settings)
    if not settings.tracking_uri:
        settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow's own INFO chatter (migrations, run links) is noise in a CLI.
    # (Its cloudpickle advice is moot here: models load only from the registry.)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    return uri


def ensure_experiment(settings: Settings) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    artifact_location = None if settings.tracking_uri else settings.artifact_root.as_uri()
    return str(mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location))


# MLflow's error codes for "no such model, version or alias" (the registry answered).
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


class Registry:
    """Resolve and load registered ride models. Loaded versions are cached (they are immutable)."""

    def __init__(self, settings: Settings) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.tracking_uri = configure_mlflow(settings)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.disk = ModelCache(settings.home / "cache" / "models")
        self._cache: dict[tuple[str, str], LoadedModel] = {}
        self._predictors: dict[tuple[str, str], Predictor] = {}
        self._lock = threading.Lock()

    def _model_version(self, ref: ModelRef) -> ModelVersion:
        """The registry's record of the version ``ref`` names now (one client call)."""
        from mlflow.exceptions import MlflowException

        try:
            if ref.version is not None:
                return self.client.get_model_version(ref.name, ref.version)
            return self.client.get_model_version_by_alias(ref.name, ref.alias or "champion")
        except Exception as exc:
            code = getattr(exc, "error_code", None)
            if not isinstance(exc, MlflowException) or code not in _NOT_FOUND:
                # Not an answer from the registry but no answer at all: the database or the
                # tracking server is away. Say so; "not registered" would send the user to train.
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(
                    f"cannot reach the registry at {mask_url(self.tracking_uri)} to resolve "
                    f"{ref.uri}: "
                    f"{first[:300]}"
                ) from exc
            try:
                names = sorted(m.name for m in self.client.search_registered_models())
            except Exception:
                names = []
            raise ModelError(
                f"{ref.uri} is not in the registry at {mask_url(self.tracking_uri)} "
                f"(registered models: {', '.join(names) or 'none'}); "
                f"train one with `ridecast train {ref.name} ...`"
            ) from exc

    def resolve(self, ref: ModelRef) -> str:
        """The version number an alias (or explicit version) points at now."""
        return str(self._model_version(ref).version)

    def identity(self, ref: ModelRef | str) -> VersionIdentity:
        """What makes the version ``ref`` names now that version (the disk cache's key)."""
        if isinstance(ref, str):
            ref = parse_model_uri(ref)
        mv = self._model_version(ref)
        return self._identity(ref.name, mv)

    def _identity(self, name: str, mv: ModelVersion) -> VersionIdentity:
        created = mv.creation_timestamp
        return VersionIdentity(
            self.tracking_uri,
            name,
            str(mv.version),
            mv.run_id or None,
            int(created or 0) or None,
            (mv.tags or {}).get(artifacts.TAG),
        )

    def load(self, ref: ModelRef | str) -> LoadedModel:
        if isinstance(ref, str):
            ref = parse_model_uri(ref)
        mv = self._model_version(ref)
        version = str(mv.version)
        key = (ref.name, version)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        identity = self._identity(ref.name, mv)
        use_disk = self.settings.batch_model_cache and str(mv.status or "READY") == "READY"
        loaded = self.disk.get(identity) if use_disk else None
        if loaded is None:
            loaded = self._load_through_mlflow(ref.name, version, mv.run_id, identity.checksum)
            if use_disk:
                self.disk.put(identity, loaded)
        with self._lock:
            self._cache[key] = loaded
        return loaded

    def _load_through_mlflow(
        self, name: str, version: str, run_id: str | None, expected: str | None
    ) -> LoadedModel:
        """Download the version's files, check them against the checksum recorded at
        registration, and only then let MLflow unpickle them."""
        import tempfile
        from pathlib import Path

        import mlflow.artifacts
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        from ridecast.model import RideModel

        uri = f"models:/{name}/{version}"
        try:
            with _PYFUNC_LOCK, tempfile.TemporaryDirectory(prefix="ridecast-model-") as tmp:
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.tracking_uri)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                actual = artifacts.checksum(local)
                if expected is None:
                    log.warning(
                        "%s has no %s tag (registered before checksums): loading it unverified",
                        uri,
                        artifacts.TAG,
                    )
                elif actual != expected:
                    raise ModelError(
                        f"{uri}: its artifacts changed since registration (SHA-256 {actual[:12]}…, "
                        f"registered {expected[:12]}…); refusing to load them. Register the model "
                        "again, or restore its files in the artifact store"
                    )
                pyfunc = mlflow.pyfunc.load_model(str(local))
            model = pyfunc.unwrap_python_model()
        except MlflowException as exc:
            raise ModelError(f"{uri} could not be loaded: {exc}") from exc
        if not isinstance(model, RideModel):
            raise ModelError(f"{uri} is a {type(model).__name__}, not a ridecast RideModel")
        metrics: dict[str, float] = {}
        if run_id:
            try:
                metrics = dict(self.client.get_run(run_id).data.metrics)
            except MlflowException:
                metrics = {}
        return LoadedModel(name, version, model, run_id, metrics)

    def predictor(self, ref: ModelRef | str, version: str | None = None) -> Predictor:
        """The one way every mode gets a model: resolve the reference (or take ``version``),
        load it, warm it, and cache the warmed :class:`Predictor` (versions are immutable)."""
        if isinstance(ref, str):
            ref = parse_model_uri(ref)
        if version is not None:
            ref = ModelRef(ref.name, None, str(version))
        resolved = ref.version if ref.version is not None else self.resolve(ref)
        key = (ref.name, resolved)
        with self._lock:
            cached = self._predictors.get(key)
        if cached is not None:
            return cached
        predictor = Predictor(self.load(ModelRef(ref.name, None, resolved)))
        predictor.warm()
        with self._lock:
            self._predictors[key] = predictor
        return predictor

    def retain(self, name: str, versions: set[str]) -> None:
        """Forget every loaded version of ``name`` except ``versions`` (what the alias and the
        rollout need), so a long-running server does not keep every version it has seen."""
        with self._lock:
            for cache in (self._cache, self._predictors):
                for key in [k for k in cache if k[0] == name and k[1] not in versions]:
                    del cache[key]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def list_versions(self) -> list[dict[str, Any]]:
        """Every registered version with its aliases and its run's metrics, newest first."""
        from mlflow.exceptions import MlflowException

        from ridecast.model import TARGETS

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
