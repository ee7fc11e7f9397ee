"""The local model cache only saves loading: the registry decides the version, every time, and an
entry is served only to the exact version (registry, name, number, run, creation time) it holds."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ridecast.model_cache import ModelCache, VersionIdentity
from ridecast.registry import Registry

from ..conftest import Trained

RIDE = [{"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0}]


def _fresh(private: Trained) -> Registry:
    """A new Registry: nothing in memory, as in a new process."""
    return Registry(private.settings)


def _no_pyfunc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        pytest.fail("loaded through MLflow's pyfunc despite a matching cache entry")

    monkeypatch.setattr(Registry, "_load_through_mlflow", refuse)


def test_a_hit_skips_pyfunc_and_a_new_version_under_the_alias_is_picked_up(
    private: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _fresh(private).predictor("models:/ride-duration@champion")
    identity = _fresh(private).identity("models:/ride-duration@champion")
    assert ModelCache(private.home / "cache" / "models").path(identity).is_file()

    with monkeypatch.context() as m:
        _no_pyfunc(m)
        cached = _fresh(private).predictor("models:/ride-duration@champion")
    assert cached.version == first.version == "1"
    assert cached.predict_rides(RIDE) == pytest.approx(first.predict_rides(RIDE), abs=1e-12)

    # Register a new version (the gbm's artifacts) and move the alias: the next job follows.
    registry = _fresh(private)
    v2 = registry.client.get_model_version("ride-duration", "2")
    v3 = registry.client.create_model_version("ride-duration", v2.source, run_id=v2.run_id)
    registry.set_alias("ride-duration", "champion", str(v3.version))
    moved = _fresh(private).predictor("models:/ride-duration@champion")
    assert moved.version == str(v3.version) == "3"
    assert moved.loaded.model.algorithm == "gbm"


def test_a_recreated_registry_never_gets_the_old_pickle(private: Trained) -> None:
    """Same URI, same name, same version number, but another model: the identity differs."""
    linear = _fresh(private).predictor("models:/ride-duration/1")
    assert linear.loaded.model.algorithm == "linear"
    registry = _fresh(private)
    gbm = registry.client.get_model_version("ride-duration", "2")
    registry.client.delete_registered_model("ride-duration")
    registry.client.create_registered_model("ride-duration")
    again = registry.client.create_model_version("ride-duration", gbm.source, run_id=gbm.run_id)
    assert str(again.version) == "1"
    reloaded = _fresh(private).predictor("models:/ride-duration/1")
    assert reloaded.loaded.model.algorithm == "gbm"
    assert reloaded.predict_rides(RIDE) != pytest.approx(linear.predict_rides(RIDE))


def test_an_entry_with_another_identity_is_never_served(private: Trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = _fresh(private)
    loaded = registry.load("models:/ride-duration@champion")
    identity = registry.identity("models:/ride-duration@champion")
    cache = ModelCache(tmp_path / "cache")
    cache.put(identity, loaded)
    assert cache.get(identity) is not None
    for field, value in (("run_id", "another-run"), ("created", 1), ("registry_uri", "x://y")):
        assert cache.get(replace(identity, **{field: value})) is None, field
    # A file copied over another identity's entry: its stored identity does not match.
    other = replace(identity, run_id="another-run")
    cache.path(other).parent.mkdir(parents=True, exist_ok=True)
    cache.path(other).write_bytes(cache.path(identity).read_bytes())
    assert cache.get(other) is None
    # A damaged entry is a miss, not an error.
    cache.path(identity).write_bytes(b"not a pickle")
    assert cache.get(identity) is None
    cache.put(identity, loaded)  # rewritten whole
    header = json.loads(cache.header(identity).read_text())
    assert header["identity"] == asdict(identity) and isinstance(identity, VersionIdentity)
    assert cache.get(identity) is not None


UNPICKLED: list[str] = []


def _ran_on_unpickle(marker: str) -> str:
    UNPICKLED.append(marker)
    return marker


class _Trap:
    """A pickle that runs code when it is loaded (as a swapped cache file could)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_ran_on_unpickle, ("trap",))


def test_a_changed_cache_file_is_never_unpickled(private: Trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = _fresh(private)
    identity = registry.identity("models:/ride-duration@champion")
    cache = ModelCache(tmp_path / "cache")
    cache.put(identity, registry.load("models:/ride-duration@champion"))
    cache.path(identity).write_bytes(pickle.dumps(_Trap()))  # same name, other bytes
    assert cache.get(identity) is None
    assert UNPICKLED == []  # refused on its checksum, before loading
    assert pickle.loads(cache.path(identity).read_bytes()) == "trap" and UNPICKLED == ["trap"]


def test_changed_artifacts_are_refused_before_loading(private: Trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ridecast import artifacts
    from ridecast.errors import ModelError

    registry = _fresh(private)
    v1 = registry.client.get_model_version("ride-duration", "1")
    recorded = v1.tags.get(artifacts.TAG)
    assert recorded, "training records the artifacts' checksum as a tag"
    # A version of its own over a copy of v1's files, so that changing them harms no other test.
    download = registry.client.get_model_version_download_uri("ride-duration", "1")
    copy = tmp_path / "artifacts"
    shutil.copytree(Path(urlparse(download).path), copy)
    assert artifacts.checksum(copy) == recorded
    registry.client.create_registered_model("ride-duration-copy")
    mv = registry.client.create_model_version("ride-duration-copy", str(copy))
    registry.client.set_model_version_tag("ride-duration-copy", mv.version, artifacts.TAG, recorded)
    uncached = private.settings.model_copy(update={"batch_model_cache": False})
    assert Registry(uncached).load("models:/ride-duration-copy/1").version == "1"

    pickled = next(copy.rglob("python_model.pkl"))
    pickled.write_bytes(pickled.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="changed since registration"):
        Registry(uncached).load("models:/ride-duration-copy/1")


def test_model_cache_off_always_loads_through_mlflow(private: Trained) -> None:
    _fresh(private).predictor("models:/ride-duration@champion")  # an entry exists now
    off = Registry(private.settings.model_copy(update={"batch_model_cache": False}))
    predictor = off.predictor("models:/ride-duration@champion")
    assert type(predictor.loaded.model).__name__ == "RideModel"
