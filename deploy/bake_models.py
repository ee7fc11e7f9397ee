"""Bake model versions into an image: register MLflow model folders in a local SQLite registry.

An air-gapped site has no registry to reach at run time, so ``deploy/Dockerfile`` (build arg
``BAKE_MODELS``) runs this at build time. ``SOURCE`` is either one MLflow model folder (it holds
an ``MLmodel`` file; registered as ``--name``, default ride-duration) or a folder of such
folders, each registered under its folder's name (``ride-duration/``, ``ride-tip/``,
``ride-cost/``). A folder comes from a registry with MLflow's own command::

    mlflow artifacts download -u models:/ride-duration@champion -d baked-models/ride-duration

Each model is copied under ``REGISTRY/models/NAME``, registered as version 1 of ``NAME`` in
``REGISTRY/mlflow.db`` with the alias ``champion`` and the checksum tag that ridecast verifies
before it unpickles anything, then loaded once through ridecast, so a folder that is not a
ridecast model fails the build rather than the first request. The image then points
``MLFLOW_TRACKING_URI`` at ``sqlite:///REGISTRY/mlflow.db`` and every mode finds
``models:/NAME@champion`` there. Registry paths are absolute: run it at the path the registry
will have in the image.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ALIAS = "champion"


def model_folders(source: Path, name: str) -> dict[str, Path]:
    """``{registered name: model folder}`` found in ``source``."""
    from ridecast.errors import ModelError

    if not source.is_dir():
        raise ModelError(f"BAKE_MODELS: {source} is not a folder of the build context")
    if (source / "MLmodel").is_file():
        return {name: source}
    found = {d.name: d for d in sorted(source.iterdir()) if (d / "MLmodel").is_file()}
    if not found:
        raise ModelError(
            f"BAKE_MODELS: {source} holds no MLflow model (no MLmodel file in it or in a folder "
            "below it); name a folder made by `mlflow artifacts download -u "
            "models:/ride-duration@champion -d baked-models/ride-duration`"
        )
    return found


def bake(source: Path, registry_dir: Path, name: str) -> list[str]:
    """Register every model of ``source`` in a new registry at ``registry_dir``."""
    from ridecast.errors import ModelError

    folders = model_folders(source, name)
    if (registry_dir / "mlflow.db").exists():
        raise ModelError(f"{registry_dir / 'mlflow.db'} exists already; bake into a new folder")
    # MLflow and scikit-learn load only once there is something to bake.
    from ridecast.registry import Registry
    from ridecast.settings import Settings
    from ridecast.training import record_checksum

    settings = Settings(
        home=registry_dir, tracking_uri=None, prediction_log_url=None, batch_model_cache=False
    )
    registry = Registry(settings)
    baked = []
    for model_name, folder in folders.items():
        target = (registry_dir / "models" / model_name).resolve()
        # MLflow's note of the folder's former name and version does not belong to the new one.
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("registered_model_meta"))
        registry.client.create_registered_model(model_name)
        version = str(registry.client.create_model_version(model_name, target.as_uri()).version)
        record_checksum(registry, model_name, version)
        registry.set_alias(model_name, ALIAS, version)
        registry.predictor(f"models:/{model_name}@{ALIAS}")  # loads, checks and warms it
        baked.append(f"models:/{model_name}@{ALIAS}")
    return baked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an MLflow model folder, or a folder of them")
    parser.add_argument("registry", type=Path, help="new registry folder (mlflow.db, models/)")
    parser.add_argument("--name", default="ride-duration", help="name of a single model folder")
    args = parser.parse_args(argv)
    from ridecast.errors import RidecastError

    try:
        baked = bake(args.source, args.registry, args.name)
    except RidecastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for uri in baked:
        print(f"baked {uri} into sqlite:///{(args.registry / 'mlflow.db').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
