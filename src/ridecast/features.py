"""Ride → model features. One implementation, in two forms that give the same model input.

The course's features are ``PU_DO = f"{PULocationID}_{DOLocationID}"`` and ``trip_distance``.
:func:`prepare_features` is the per-ride form (a dict, as the course's ``predict.py`` builds it).
:class:`PairEncoder` is the vectorized form used on whole months and on micro-batches: it turns
zone-id and distance arrays straight into the sparse matrix a fitted ``DictVectorizer`` would
produce from those dicts, without building a dict or a string per ride.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # only a type here: predicting processes need not import scikit-learn
    from sklearn.feature_extraction import DictVectorizer

FEATURE_COLUMNS: tuple[str, str, str] = ("PULocationID", "DOLocationID", "trip_distance")
PAIR_FEATURE = "PU_DO"
DISTANCE_FEATURE = "trip_distance"
# Zone ids in TLC files are 1..265; the encoder's lookup table covers 0..MAX_ENCODED_ZONE so
# that any id a validated request may carry has a slot (unseen pairs map to "no pair column").
MAX_ENCODED_ZONE = 299


def prepare_features(ride: Mapping[str, Any]) -> dict[str, Any]:
    """The course's per-ride features: ``{"PU_DO": "10_50", "trip_distance": 40.0}``."""
    return {
        PAIR_FEATURE: f"{int(ride['PULocationID'])}_{int(ride['DOLocationID'])}",
        DISTANCE_FEATURE: float(ride["trip_distance"]),
    }


@dataclass(frozen=True)
class RideArrays:
    """The three model inputs of a set of rides as contiguous numpy arrays."""

    pu: np.ndarray  # int64
    do: np.ndarray  # int64
    distance: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.pu.shape[0])

    def take(self, index: np.ndarray) -> RideArrays:
        """The rides at ``index`` (positions), e.g. the ones a router sent to one version."""
        return RideArrays(pu=self.pu[index], do=self.do[index], distance=self.distance[index])

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> RideArrays:
        """Take the feature columns of a frame; the caller has dropped rows with null ids."""
        return cls(
            pu=np.asarray(df["PULocationID"], dtype=np.int64),
            do=np.asarray(df["DOLocationID"], dtype=np.int64),
            distance=np.asarray(df["trip_distance"], dtype=np.float64),
        )

    @classmethod
    def from_rides(cls, rides: Sequence[Mapping[str, Any]]) -> RideArrays:
        n = len(rides)
        pu = np.fromiter((r["PULocationID"] for r in rides), dtype=np.int64, count=n)
        do = np.fromiter((r["DOLocationID"] for r in rides), dtype=np.int64, count=n)
        dist = np.fromiter((r["trip_distance"] for r in rides), dtype=np.float64, count=n)
        return cls(pu=pu, do=do, distance=dist)


def rides_to_dicts(arrays: RideArrays) -> list[dict[str, Any]]:
    """The per-ride form applied to each ride (slow; for training's fit and for tests)."""
    return [
        prepare_features({"PULocationID": p, "DOLocationID": d, "trip_distance": x})
        for p, d, x in zip(
            arrays.pu.tolist(), arrays.do.tolist(), arrays.distance.tolist(), strict=True
        )
    ]


class PairEncoder:
    """Vectorized twin of a fitted ``DictVectorizer`` over the course's two features.

    ``encode(arrays)`` returns exactly ``dv.transform(rides_to_dicts(arrays))`` (a test proves
    it), in a few numpy operations.
    """

    def __init__(self, vectorizer: DictVectorizer) -> None:
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.n_features = len(vocabulary)
        if DISTANCE_FEATURE not in vocabulary:
            raise ValueError(f"vectorizer has no {DISTANCE_FEATURE!r} feature")
        self.distance_column = vocabulary[DISTANCE_FEATURE]
        size = MAX_ENCODED_ZONE + 1
        self.table = np.full(size * size, -1, dtype=np.int64)
        prefix = f"{PAIR_FEATURE}="
        for name, column in vocabulary.items():
            if not name.startswith(prefix):
                continue
            pu_text, _, do_text = name[len(prefix) :].partition("_")
            pu, do = int(pu_text), int(do_text)
            if 0 <= pu <= MAX_ENCODED_ZONE and 0 <= do <= MAX_ENCODED_ZONE:
                self.table[pu * size + do] = column

    def pair_columns(self, arrays: RideArrays) -> np.ndarray:
        """Column of each ride's PU_DO one-hot, or -1 where the pair was not seen in training."""
        return lookup_pair_columns(self.table, arrays)

    def encode(self, arrays: RideArrays) -> sp.csr_matrix:
        n = len(arrays)
        pair = self.pair_columns(arrays)
        known = pair >= 0
        per_row = known.astype(np.int64) + 1
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(per_row, out=indptr[1:])
        nnz = int(indptr[-1])
        indices = np.empty(nnz, dtype=np.int32)
        data = np.empty(nnz, dtype=np.float64)
        # Rows with a known pair: [pair, distance] (sorted, as the pair columns precede
        # "trip_distance" alphabetically); rows without: [distance].
        dist_pos = indptr[1:] - 1
        indices[dist_pos] = self.distance_column
        data[dist_pos] = arrays.distance
        pair_pos = indptr[:-1][known]
        indices[pair_pos] = pair[known]
        data[pair_pos] = 1.0
        return sp.csr_matrix((data, indices, indptr), shape=(n, self.n_features))


def lookup_pair_columns(table: np.ndarray, arrays: RideArrays) -> np.ndarray:
    """Each ride's entry in a flattened (zone × zone) ``table``; -1 for ids outside the table."""
    size = MAX_ENCODED_ZONE + 1
    pu = np.clip(arrays.pu, 0, MAX_ENCODED_ZONE)
    do = np.clip(arrays.do, 0, MAX_ENCODED_ZONE)
    columns = table[pu * size + do]
    # Ids outside the table are never in the vocabulary either.
    out_of_table = (arrays.pu != pu) | (arrays.do != do)
    if out_of_table.any():
        columns = np.where(out_of_table, -1, columns)
    return columns
