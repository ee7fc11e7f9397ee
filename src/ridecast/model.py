"""The model package: one MLflow pyfunc class that serves every mode.

A :class:`RideModel` holds a fitted scikit-learn pipeline over the course's features and knows
how to predict from raw ride columns. MLflow stores it in the registry; any Python process with
ridecast installed can load it with ``mlflow.pyfunc.load_model("models:/ride-duration@champion")``.
Inside ridecast, :meth:`RideModel.predict_arrays` is the hot path: no DataFrame, no dicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline

from ridecast.compiled import AnswerOne, LinearRideModel
from ridecast.features import FEATURE_COLUMNS, PairEncoder, RideArrays

# What each registered model predicts, and the name of its output in the course's API.
TARGETS: dict[str, str] = {
    "ride-duration": "duration",
    "ride-tip": "tip",
    "ride-cost": "cost",
}


class RideModel(PythonModel):  # type: ignore[misc]
    """A fitted ride model. ``pipeline`` is either DictVectorizer → regressor (the course's shape)
    or, for tree ensembles, a regressor over the dense ``[PU, DO, distance]`` columns."""

    def __init__(self, pipeline: Any, target: str, algorithm: str) -> None:
        self.pipeline = pipeline
        self.target = target
        self.algorithm = algorithm
        self._encoder: PairEncoder | None = None
        self._compiled: LinearRideModel | None = None

    # Derived lookup tables are rebuilt after unpickling rather than stored in the artifact.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_encoder"] = None
        state["_compiled"] = None
        return state

    @property
    def uses_vectorizer(self) -> bool:
        return isinstance(self.pipeline, Pipeline) and isinstance(
            self.pipeline.steps[0][1], DictVectorizer
        )

    @property
    def encoder(self) -> PairEncoder:
        if self._encoder is None:
            self._encoder = PairEncoder(self.pipeline.steps[0][1])
        return self._encoder

    def compiled(self) -> LinearRideModel | None:
        """The numpy-only form of a linear model (None for other algorithms)."""
        if getattr(self, "_compiled", None) is None and self.uses_vectorizer:
            regressor = self.pipeline.steps[-1][1]
            if isinstance(regressor, LinearRegression | Ridge) and len(self.pipeline.steps) == 2:
                coef = np.asarray(regressor.coef_, dtype=np.float64).ravel()
                self._compiled = LinearRideModel(
                    target=self.target,
                    algorithm=self.algorithm,
                    pair_table=self.encoder.table,
                    pair_weights=np.append(coef, 0.0),
                    distance_weight=float(coef[self.encoder.distance_column]),
                    intercept=float(np.asarray(regressor.intercept_).ravel()[0]),
                )
        return getattr(self, "_compiled", None)

    def answer_one(self) -> AnswerOne | None:
        """A linear model's one-ride form (:meth:`LinearRideModel.answer_one`); None for other
        algorithms, which predict in batches."""
        compiled = self.compiled()
        return compiled.answer_one() if compiled is not None else None

    def predict_arrays(self, arrays: RideArrays) -> np.ndarray:
        """Predictions for validated rides, in order. The fast path every mode uses."""
        if len(arrays) == 0:
            return np.empty(0, dtype=np.float64)
        compiled = self.compiled()
        if compiled is not None:
            return compiled.predict_arrays(arrays)
        if self.uses_vectorizer:
            return np.asarray(self.pipeline.steps[-1][1].predict(self.encoder.encode(arrays)))
        dense = np.column_stack([arrays.pu, arrays.do, arrays.distance]).astype(np.float64)
        return np.asarray(self.pipeline.predict(dense))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """MLflow entry point: a DataFrame with PULocationID, DOLocationID, trip_distance."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [c for c in FEATURE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"model input lacks column(s) {missing}; expected {list(FEATURE_COLUMNS)}"
            )
        return self.predict_arrays(RideArrays.from_frame(frame))
