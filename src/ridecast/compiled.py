"""A linear ride model compiled to lookup tables: predicting it needs numpy and nothing else.

For the course's DictVectorizer + linear regression, a ride's prediction is
``intercept + weight[PU_DO] + weight[trip_distance] * distance``. :class:`RideModel` predicts
through this form, and a process that only predicts (a batch job with a cached model) can load
it without importing scikit-learn or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ridecast.features import MAX_ENCODED_ZONE, RideArrays, lookup_pair_columns

# One ride's prediction from its pickup zone, drop-off zone and distance.
AnswerOne = Callable[[int, int, float], float]


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

    def answer_one(self) -> AnswerOne:
        """One ride's prediction in plain Python: the same lookup and the same operations in the
        same order as :meth:`predict_arrays` (so the same float), without numpy's per-call cost.
        The tables become lists once, here; keep what this returns."""
        table: list[int] = self.pair_table.tolist()
        weights: list[float] = self.pair_weights.tolist()
        distance_weight, intercept = self.distance_weight, self.intercept
        size = MAX_ENCODED_ZONE + 1

        def answer(pu: int, do: int, distance: float) -> float:
            column = table[pu * size + do] if 0 <= pu < size and 0 <= do < size else -1
            return (weights[column] + distance * distance_weight) + intercept

        return answer
