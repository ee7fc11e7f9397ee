"""A local copy of loaded model versions, so a process loading a version again skips pyfunc.

MLflow's pyfunc loading (artifact download, environment checks, unpickling through the wrapper,
importing scikit-learn) costs seconds in every new process. The registry still decides which
version a reference names, through MLflow's client; this cache only replaces the loading of that
version. An entry is keyed by everything that makes a version *that* version: the registry URI,
the model name, the version number, its run id and its creation time. A registry that was
recreated (same URI, a new ``v1``) or a version registered again therefore never gets an old
pickle: the identity differs, so the entry is not read, and the fresh load replaces it.

Entries live under ``<home>/cache/models``: a pickle and, beside it, a small JSON header with the
identity and the pickle's SHA-256. The header is read and checked first; the pickle is unpickled
only when its identity matches and its bytes hash to what the header says, so a file changed or
copied in by hand is never loaded. Both are written to temporary files and renamed into place,
the header last, so a reader sees a whole entry or none. Linear models are stored in their
numpy-only form (:class:`ridecast.compiled.LinearRideModel`), so a hit imports neither MLflow's
pyfunc nor scikit-learn. Anything unreadable counts as a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ridecast.predictor import LoadedModel

CACHE_FORMAT = 4  # 4: a JSON header (identity, SHA-256) checked before unpickling


@dataclass(frozen=True)
class VersionIdentity:
    """What the registry says a version is; a cached model is used only if it matches exactly."""

    registry_uri: str
    name: str
    version: str
    run_id: str | None
    created: int | None  # the version's creation timestamp (ms), as MLflow reports it
    checksum: str | None = None  # the artifacts' SHA-256 recorded at registration (a tag)

    @property
    def digest(self) -> str:
        text = "\x1f".join(str(v) for v in asdict(self).values())
        return hashlib.sha256(text.encode()).hexdigest()[:20]


class ModelCache:
    """Loaded versions on local disk, one file per identity."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, identity: VersionIdentity) -> Path:
        registry = hashlib.sha256(identity.registry_uri.encode()).hexdigest()[:16]
        return self.root / registry / identity.name

    def path(self, identity: VersionIdentity) -> Path:
        return self.folder(identity) / f"v{identity.version}-{identity.digest}.pkl"

    def header(self, identity: VersionIdentity) -> Path:
        return self.path(identity).with_suffix(".json")

    def get(self, identity: VersionIdentity) -> LoadedModel | None:
        """The cached version, or None when there is none with exactly this identity (checked,
        with the pickle's checksum, before anything is unpickled)."""
        try:
            header = json.loads(self.header(identity).read_text(encoding="utf-8"))
            if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
                return None
            if header.get("identity") != asdict(identity):
                return None  # a hash collision or a hand-copied file: never read it
            data = self.path(identity).read_bytes()
            if hashlib.sha256(data).hexdigest() != header.get("sha256"):
                return None  # changed since it was written: never unpickle it
            loaded = pickle.loads(data)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        if not isinstance(loaded, LoadedModel) or loaded.version != identity.version:
            return None
        return loaded

    def put(self, identity: VersionIdentity, loaded: LoadedModel) -> None:
        """Store ``loaded`` atomically and drop entries of the same version with another
        identity. Best effort: a cache that cannot be written only costs the next load time."""
        path, header = self.path(identity), self.header(identity)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial_header = header.with_name(f".{header.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = pickle.dumps(_light(loaded), protocol=pickle.HIGHEST_PROTOCOL)
            partial.write_bytes(data)
            partial_header.write_text(
                json.dumps(
                    {
                        "format": CACHE_FORMAT,
                        "identity": asdict(identity),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                ),
                encoding="utf-8",
            )
            os.replace(partial, path)
            os.replace(partial_header, header)
            for stale in path.parent.glob(f"v{identity.version}-*"):
                if stale not in (path, header):
                    stale.unlink(missing_ok=True)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            for leftover in (partial, partial_header):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _light(loaded: LoadedModel) -> LoadedModel:
    """A linear model's numpy-only form (other algorithms are stored as they are)."""
    compiled = getattr(loaded.model, "compiled", None)
    light = compiled() if callable(compiled) else None
    return replace(loaded, model=light) if light is not None else loaded
