"""What a batch run writes: its columns, and the key that names one month's output in a sink.

A run is one of three kinds, each with its own columns and its own place in the sink, so a
comparison or a rollout's split never overwrites (or mixes into) a plain run of one version:

- ``score``: every row by one version (the design's contract);
- ``compare``: every row by the stable version *and* a candidate (``--candidate``);
- ``rollout``: each row by the version the active rollout's router gives its ride id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ridecast.data.schema import Month, TaxiType

_TS = pa.timestamp("us")
_CONTRACT = [
    pa.field("ride_id", pa.int64(), nullable=False),
    pa.field("pickup_datetime", _TS),
    pa.field("PULocationID", pa.int32()),
    pa.field("DOLocationID", pa.int32()),
    pa.field("actual_duration", pa.float64()),
    pa.field("predicted_duration", pa.float64()),
    pa.field("diff", pa.float64()),
    pa.field("model_version", pa.string()),
]
PREDICTION_SCHEMA = pa.schema([*_CONTRACT, pa.field("run_id", pa.string())])
COMPARISON_SCHEMA = pa.schema(
    [
        *_CONTRACT,
        pa.field("abs_error", pa.float64()),
        pa.field("candidate_predicted_duration", pa.float64()),
        pa.field("candidate_model_version", pa.string()),
        pa.field("candidate_abs_error", pa.float64()),
        pa.field("prediction_diff", pa.float64()),
        pa.field("run_id", pa.string()),
    ]
)
ROLLOUT_SCHEMA = pa.schema(
    [
        *_CONTRACT,
        pa.field("arm", pa.string()),
        pa.field("rollout_id", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)
# Rejected rows keep their raw values (zone ids as read, so possibly missing or out of range).
REJECT_SCHEMA = pa.schema(
    [
        pa.field("ride_id", pa.int64(), nullable=False),
        ("reason", pa.string()),
        ("pickup_datetime", _TS),
        ("dropoff_datetime", _TS),
        ("PULocationID", pa.float64()),
        ("DOLocationID", pa.float64()),
        ("trip_distance", pa.float64()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
    ]
)
SCHEMAS = {"score": PREDICTION_SCHEMA, "compare": COMPARISON_SCHEMA, "rollout": ROLLOUT_SCHEMA}
DEFAULT_TABLES = {
    "score": "ride_predictions",
    "compare": "ride_comparisons",
    "rollout": "ride_rollout_predictions",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class MonthKey:
    """One scoring of one month: what is replaced together, and what a rerun is compared with."""

    taxi_type: TaxiType
    month: Month
    model_name: str
    model_version: str  # the stable version (the alias's, or the rollout's stable)
    run_id: str
    candidate_version: str | None = None  # compare runs
    rollout_id: str | None = None  # runs that followed a rollout

    @property
    def kind(self) -> str:
        if self.rollout_id is not None:
            return "rollout"
        return "compare" if self.candidate_version is not None else "score"

    @property
    def slot(self) -> str:
        """What the run replaces in a sink: ``1``, ``1-vs-2`` or ``rollout-<id>``. Stored as the
        rejects' and the run record's ``model_version``."""
        if self.rollout_id is not None:
            return f"rollout-{_UNSAFE.sub('_', self.rollout_id)}"
        if self.candidate_version is not None:
            return f"{self.model_version}-vs-{self.candidate_version}"
        return self.model_version

    @property
    def stem(self) -> str:
        """The file name of the month's output in a folder sink, without ``.parquet``."""
        if self.rollout_id is not None:
            return f"{self.model_name}-{self.slot}"
        if self.candidate_version is not None:
            return f"{self.model_name}-v{self.model_version}-vs-v{self.candidate_version}"
        return f"{self.model_name}-v{self.model_version}"

    @property
    def schema(self) -> pa.Schema:
        return SCHEMAS[self.kind]

    @property
    def match(self) -> dict[str, str]:
        """The columns (and values) that pick this run's rows of a month in a predictions table."""
        if self.rollout_id is not None:
            return {"rollout_id": self.rollout_id}
        if self.candidate_version is not None:
            return {
                "model_version": self.model_version,
                "candidate_model_version": self.candidate_version,
            }
        return {"model_version": self.model_version}


def constant(text: str, n: int) -> pa.Array:
    """``n`` copies of ``text`` as a string array, built from its buffers in one go."""
    data = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def choose(labels: list[str], index: np.ndarray) -> pa.Array:
    """Per row, ``labels[index[row]]`` as a string array (a dictionary decoded once)."""
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(index.astype(np.int32)), pa.array(labels, type=pa.string())
    )
    return dictionary.cast(pa.string())


def prediction_table(
    key: MonthKey,
    ids: np.ndarray,
    pickup: np.ndarray,
    pu: np.ndarray,
    do: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    *,
    candidate: np.ndarray | None = None,
    version_index: np.ndarray | None = None,
    versions: list[str] | None = None,
    arms: list[str] | None = None,
) -> pa.Table:
    """One chunk's scored rows in the columns of ``key``'s kind."""
    n = int(predicted.shape[0])
    if version_index is not None and versions is not None:
        model_version = choose(versions, version_index)
    else:
        model_version = constant(key.model_version, n)
    columns: list[pa.Array] = [
        pa.array(ids),
        pa.array(pickup),
        pa.array(pu.astype(np.int32)),
        pa.array(do.astype(np.int32)),
        pa.array(actual),
        pa.array(predicted),
        pa.array(actual - predicted),
        model_version,
    ]
    if key.kind == "compare":
        assert candidate is not None and key.candidate_version is not None
        columns += [
            pa.array(np.abs(actual - predicted)),
            pa.array(candidate),
            constant(key.candidate_version, n),
            pa.array(np.abs(actual - candidate)),
            pa.array(candidate - predicted),
        ]
    elif key.kind == "rollout":
        assert version_index is not None and arms is not None and key.rollout_id is not None
        columns += [choose(arms, version_index), constant(key.rollout_id, n)]
    columns.append(constant(key.run_id, n))
    return pa.Table.from_arrays(columns, schema=key.schema)
