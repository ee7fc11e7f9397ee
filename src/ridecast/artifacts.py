"""Checksums of a model version's artifacts: recorded when the version is registered, verified
before anything of it is unpickled.

A pickle runs code when it is loaded, so a model whose files were changed after registration (a
shared artifact store, a copied folder) must be refused before it is loaded, not after. Training
records the SHA-256 of the version's artifact files as the registry tag
``ridecast.artifact_sha256``; :class:`ridecast.registry.Registry` downloads the files, checks them
against the tag and only then lets MLflow load them. The local model cache keeps the same checksum
in its key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

TAG = "ridecast.artifact_sha256"
# MLflow's own note of the registered name and version, rewritten whenever a version is downloaded
# (so it differs between two versions of the same files); it holds no code and is not unpickled.
_BOOKKEEPING = frozenset({"registered_model_meta"})


def checksum(folder: Path) -> str:
    """SHA-256 over every file below ``folder`` (but MLflow's ``registered_model_meta``):
    relative path and contents, in path order."""
    digest = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file() and p.name not in _BOOKKEEPING)
    for path in sorted(files):
        relative = path.relative_to(folder).as_posix()
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
