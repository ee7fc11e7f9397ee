"""A linear ride model compiled to lookup tables: predicting it needs numpy and nothing else.

For the course's DictVectorizer + linear regression, a ride's prediction is
``intercept + weight[PU_DO] + weight[trip_distance] * distance``. :class:`RideModel` predicts
through this form, and a process that only predicts (a batch job with a cached model) can load
it without importing scikit-learn or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ridecast.features import RideArrays, lookup_pair_columns


@dataclass(frozen=True, eq=False)
class LinearRideModel:
    target: str
    algorithm: str
    pair_table: np.ndarray  # flattened zone × zone → weight index; -1 → the trailing 0 weight
    pair_weights: np.ndarray  # one per PU_DO column, then 0.0 for pairs unseen in training
    distance_weight: float
    intercept: float

    def predict_arrays(self, arrays: RideArrays) -> np.ndarray:
        if len(arrays) == 0:
            return np.empty(0, dtype=np.float64)
        pair = lookup_pair_columns(self.pair_table, arrays)
        # Same summation order as sparse X @ coef + intercept, so results match scikit-learn.
        return (self.pair_weights[pair] + arrays.distance * self.distance_weight) + self.intercept
