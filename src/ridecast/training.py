"""Fit a ride model on one month, evaluate it on the next, log it to MLflow and register it."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ridecast import __version__
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError, RidecastError
from ridecast.features import (
    DISTANCE_FEATURE,
    FEATURE_COLUMNS,
    PAIR_FEATURE,
    PairEncoder,
    RideArrays,
)
from ridecast.model import TARGETS, RideModel
from ridecast.registry import Registry, ensure_experiment
from ridecast.settings import Settings

ALGORITHMS = ("linear", "ridge", "gbm")
# Column of the canonical trip frame that each model learns, and its sane range for training.
TARGET_COLUMNS: dict[str, tuple[str, float, float]] = {
    "duration": ("duration", 1.0, 60.0),
    "tip": ("tip_amount", 0.0, 100.0),
    "cost": ("total_amount", 0.0, 500.0),
}


@dataclass(frozen=True)
class TrainResult:
    name: str
    version: str
    run_id: str
    alias: str | None
    metrics: dict[str, float]


def _training_frame(df: pd.DataFrame, target: str) -> tuple[RideArrays, np.ndarray]:
    from ridecast.data.readers import filter_training_rows

    column, low, high = TARGET_COLUMNS[target]
    df = filter_training_rows(df)
    y = df[column].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(y) & (y >= low) & (y <= high)
    df = df[keep]
    return RideArrays.from_frame(df), y[keep]


def build_model(algorithm: str, arrays: RideArrays, y: np.ndarray, target: str) -> RideModel:
    """Fit the pipeline. Vectorizer models learn their vocabulary from the distinct zone pairs,
    which gives the same vocabulary as fitting on every ride's dict, in a fraction of the time."""
    if algorithm in ("linear", "ridge"):
        pairs = np.unique(arrays.pu * 1000 + arrays.do)
        vocabulary_rows = [
            {PAIR_FEATURE: f"{p // 1000}_{p % 1000}", DISTANCE_FEATURE: 1.0} for p in pairs
        ]
        vectorizer = DictVectorizer().fit(vocabulary_rows)
        regressor = LinearRegression() if algorithm == "linear" else Ridge(alpha=5.0)
        regressor.fit(PairEncoder(vectorizer).encode(arrays), y)
        return RideModel(
            Pipeline([("vectorizer", vectorizer), ("regressor", regressor)]), target, algorithm
        )
    if algorithm == "gbm":
        dense = np.column_stack([arrays.pu, arrays.do, arrays.distance]).astype(np.float64)
        regressor = HistGradientBoostingRegressor(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=31, random_state=0
        )
        # OpenMP threads spin against other busy processes (a 1 s fit took 25 s under load).
        with threadpool_limits(limits=1, user_api="openmp"):
            regressor.fit(dense, y)
        return RideModel(regressor, target, algorithm)
    raise RidecastError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")


def evaluate(model: RideModel, arrays: RideArrays, y: np.ndarray) -> dict[str, float]:
    pred = model.predict_arrays(arrays)
    err = pred - y
    std = float(np.std(y))
    rmse = float(np.sqrt(np.mean(err**2)))
    return {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - np.sum(err**2) / max(np.sum((y - y.mean()) ** 2), 1e-12)),
        "target_std": std,
        "rmse_over_std": rmse / std if std > 0 else float("nan"),
        "valid_rows": float(len(y)),
    }


def train_model(
    name: str,
    taxi_type: TaxiType,
    train_month: Month,
    valid_month: Month,
    *,
    settings: Settings,
    data_dir: Path,
    algorithm: str = "linear",
    alias: str | None = None,
    registry: Registry | None = None,
    on_step: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``name`` (ride-duration, ride-tip or ride-cost); register a version; set ``alias``."""
    if name not in TARGETS:
        raise RidecastError(f"unknown model {name!r}; expected one of {', '.join(TARGETS)}")
    if algorithm not in ALGORITHMS:
        raise RidecastError(
            f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
        )
    if taxi_type is TaxiType.FHV:
        raise DataError("fhv files have no trip_distance or fares; train on green or yellow months")
    from ridecast.data.readers import find_month_file, read_trips

    step = on_step or (lambda _msg: None)
    target = TARGETS[name]
    registry = registry or Registry(settings)

    step(f"reading {taxi_type.value} {train_month} and {valid_month}")
    train_df = read_trips(find_month_file(data_dir, taxi_type, train_month), taxi_type, train_month)
    valid_df = read_trips(find_month_file(data_dir, taxi_type, valid_month), taxi_type, valid_month)
    x_train, y_train = _training_frame(train_df, target)
    x_valid, y_valid = _training_frame(valid_df, target)
    if len(x_train) == 0 or len(x_valid) == 0:
        raise DataError(
            f"no usable rides for {target} in {train_month} or {valid_month} after cleaning"
        )

    step(f"fitting {algorithm} on {len(x_train):,} rides")
    started = time.perf_counter()
    model = build_model(algorithm, x_train, y_train, target)
    fit_seconds = time.perf_counter() - started
    metrics = evaluate(model, x_valid, y_valid)
    metrics["fit_seconds"] = fit_seconds
    metrics["train_rows"] = float(len(y_train))

    step("logging to MLflow and registering")
    experiment_id = ensure_experiment(settings)
    sample = pd.DataFrame(
        {
            "PULocationID": x_valid.pu[:5],
            "DOLocationID": x_valid.do[:5],
            "trip_distance": x_valid.distance[:5],
        }
    )
    signature = infer_signature(
        sample[list(FEATURE_COLUMNS)], model.predict_arrays(RideArrays.from_frame(sample))
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-{train_month}") as run:
        mlflow.log_params(
            {
                "model": name,
                "target": target,
                "algorithm": algorithm,
                "taxi_type": taxi_type.value,
                "train_month": str(train_month),
                "valid_month": str(valid_month),
                "features": "PU_DO,trip_distance",
            }
        )
        mlflow.log_metrics(metrics)
        # MLflow prints "Successfully registered model ..." straight to stderr; we report instead.
        with contextlib.redirect_stderr(io.StringIO()):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                signature=signature,
                registered_model_name=name,
                pip_requirements=[
                    f"ridecast=={__version__}",
                    f"scikit-learn=={sklearn.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
            )
    version = str(info.registered_model_version)
    record_checksum(registry, name, version)
    if alias:
        registry.set_alias(name, alias, version)
    return TrainResult(name, version, run.info.run_id, alias, metrics)


def record_checksum(registry: Registry, name: str, version: str) -> str:
    """Tag the version with the SHA-256 of its artifacts, as the registry will hand them out;
    loading checks the files against it before unpickling anything."""
    import tempfile

    import mlflow.artifacts

    from ridecast import artifacts

    with tempfile.TemporaryDirectory(prefix="ridecast-register-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=tmp
        )
        digest = artifacts.checksum(Path(local))
    registry.client.set_model_version_tag(name, version, artifacts.TAG, digest)
    return digest


# The models `ridecast demo`, the test suite and the benchmarks start from.
DEMO_PLAN: tuple[tuple[str, str, str], ...] = (
    ("ride-duration", "linear", "champion"),
    ("ride-duration", "gbm", "challenger"),
    ("ride-tip", "ridge", "champion"),
    ("ride-cost", "ridge", "champion"),
)


def train_on_synthetic_months(
    settings: Settings,
    registry: Registry,
    *,
    rows: int,
    plan: tuple[tuple[str, str, str], ...] = DEMO_PLAN,
    taxi_type: TaxiType = TaxiType.GREEN,
    train_month: Month = Month(2025, 1),
    valid_month: Month = Month(2025, 2),
) -> dict[str, TrainResult]:
    """Synthesize a training and a validation month (seeds 1 and 2) into the data directory,
    then train each ``(name, algorithm, alias)`` of ``plan``. Returns results by ``name@alias``."""
    from ridecast.data.synth import synthesize_month, write_month

    for month, seed in ((train_month, 1), (valid_month, 2)):
        table = synthesize_month(taxi_type, month, rows, seed=seed)
        write_month(table, settings.resolved_data_dir, taxi_type, month)
    return {
        f"{name}@{alias}": train_model(
            name,
            taxi_type,
            train_month,
            valid_month,
            settings=settings,
            data_dir=settings.resolved_data_dir,
            algorithm=algorithm,
            alias=alias,
            registry=registry,
        )
        for name, algorithm, alias in plan
    }
