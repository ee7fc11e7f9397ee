"""The batch job's model: the registry says which version, a local cache skips MLflow's loading.

Loading through MLflow (client, store schema checks, artifact download, pyfunc wrapper) costs
seconds per process, which is most of a short job's wall time. So for a SQLite registry (the
embedded default) the job asks the registry's database which version the alias points at and
whether that version is still READY, and then takes the model from
``<home>/cache/models/<registry>/<name>/v<version>.pkl`` if an earlier job stored it there, with
the same run id and creation time. Any other case, or any doubt, goes through
:class:`ridecast.registry.Registry` and refreshes the cache. The cache never decides a version.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ridecast.predictor import LoadedModel, Predictor
from ridecast.settings import Settings

if TYPE_CHECKING:
    from ridecast.registry import Registry

CACHE_FORMAT = 2  # 2: linear models are stored compiled (numpy only)


@dataclass(frozen=True)
class VersionIdentity:
    """What the registry says about a version; a cached model must match it exactly."""

    name: str
    version: str
    run_id: str | None
    creation_time: int | None


def tracking_uri(settings: Settings) -> str:
    """The registry URI the job uses (as :func:`ridecast.registry.configure_mlflow` decides it)."""
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"


def load_predictor(
    settings: Settings,
    model_uri: str,
    *,
    use_cache: bool | None = None,
    registry: Registry | None = None,
) -> Predictor:
    """A Predictor for ``model_uri`` (``models:/name@alias`` or ``models:/name/3``).

    ``registry`` is used when the model must be loaded through MLflow (default: a new one).
    Raises ModelError (from the registry) when the model or alias does not exist.
    """
    from ridecast.modelref import parse_model_uri

    ref = parse_model_uri(model_uri)
    cache_on = settings.batch_model_cache if use_cache is None else use_cache
    uri = tracking_uri(settings)
    identity = _ask_sqlite_registry(uri, ref.name, ref.alias, ref.version) if cache_on else None
    if identity is not None:
        cached = _read_cache(_cache_path(settings, uri, identity), identity)
        if cached is not None:
            return Predictor(cached)

    if registry is None:
        from ridecast.registry import Registry

        registry = Registry(settings)
    loaded = registry.load(ref)
    if cache_on:
        fresh = _ask_sqlite_registry(uri, loaded.name, None, loaded.version)
        if fresh is not None:
            _write_cache(_cache_path(settings, uri, fresh), fresh, loaded)
    return Predictor(loaded)


def _ask_sqlite_registry(
    uri: str, name: str, alias: str | None, version: str | None
) -> VersionIdentity | None:
    """The version an alias names, read from MLflow's SQLite store; None if unsure."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or not Path(path).is_file():
        return None
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        if version is None:
            rows = connection.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                (name, alias or "champion"),
            ).fetchall()
            if len(rows) != 1:
                return None
            version = str(rows[0][0])
        rows = connection.execute(
            "SELECT run_id, creation_time, status, current_stage FROM model_versions "
            "WHERE name = ? AND version = ?",
            (name, int(version)),
        ).fetchall()
    except (sqlite3.Error, ValueError):
        return None
    finally:
        connection.close()
    if len(rows) != 1:
        return None
    run_id, created, status, stage = rows[0]
    if status != "READY" or stage == "Deleted_Internal":
        return None
    return VersionIdentity(name, version, run_id, created)


def _cache_path(settings: Settings, uri: str, identity: VersionIdentity) -> Path:
    registry_key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    folder = settings.home / "cache" / "models" / registry_key / identity.name
    return folder / f"v{identity.version}.pkl"


def _read_cache(path: Path, identity: VersionIdentity) -> Any | None:
    try:
        with path.open("rb") as handle:
            payload = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        return None
    if payload.get("identity") != identity:
        return None
    return payload.get("loaded")


def _light(loaded: LoadedModel) -> LoadedModel:
    """A linear model's numpy-only form: a cache hit then imports neither MLflow nor sklearn."""
    compiled = getattr(loaded.model, "compiled", None)
    light = compiled() if callable(compiled) else None
    return replace(loaded, model=light) if light is not None else loaded


def _write_cache(path: Path, identity: VersionIdentity, loaded: LoadedModel) -> None:
    """Best effort: a cache that cannot be written only costs the next job some seconds."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as handle:
            pickle.dump(
                {"format": CACHE_FORMAT, "identity": identity, "loaded": _light(loaded)},
                handle,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        os.replace(partial, path)
    except (OSError, pickle.PicklingError):
        with contextlib.suppress(OSError):
            partial.unlink()
