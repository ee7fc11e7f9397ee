"""A loaded model version that predicts rides: the one object every mode calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ridecast.features import RideArrays


@dataclass
class LoadedModel:
    """One registered version, loaded and ready to predict.

    ``model`` is a :class:`ridecast.model.RideModel`, or its numpy-only
    :class:`ridecast.compiled.LinearRideModel` form; both have ``target``, ``algorithm`` and
    ``predict_arrays``. This module imports neither MLflow nor scikit-learn.
    """

    name: str
    version: str
    model: Any
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return str(self.model.target)


@dataclass(frozen=True)
class Predictor:
    """Predicts with one registered version. Immutable: a new version is a new Predictor, so a
    swap is one reference assignment."""

    loaded: LoadedModel

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def target(self) -> str:
        """The output's name in the course's API: duration, tip or cost."""
        return self.loaded.target

    def predict_arrays(self, arrays: RideArrays) -> np.ndarray:
        return self.loaded.model.predict_arrays(arrays)

    def answer_one(self) -> Callable[[int, int, float], float] | None:
        """The model's one-ride form in plain Python, if it has one (a linear model): the
        same floats as :meth:`predict_arrays`, for a caller that answers rides one at a time."""
        make = getattr(self.loaded.model, "answer_one", None)
        return make() if make is not None else None

    def predict_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Predict a frame with PULocationID, DOLocationID, trip_distance (no nulls)."""
        return self.predict_arrays(RideArrays.from_frame(df))

    def predict_rides(self, rides: Sequence[Mapping[str, Any]]) -> list[float]:
        return self.predict_arrays(RideArrays.from_rides(rides)).tolist()

    def warm(self) -> None:
        """Run one prediction so lazy tables are built before the first real request."""
        self.predict_arrays(
            RideArrays(
                pu=np.array([1], dtype=np.int64),
                do=np.array([1], dtype=np.int64),
                distance=np.array([1.0]),
            )
        )
