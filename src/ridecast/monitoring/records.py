"""What the hot path hands to the prediction log: whole model calls, never per-row objects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PredictionBatch:
    """Predictions of one model call, as the hot path hands them over (no per-row objects)."""

    model: str
    version: str
    source: str
    pu: np.ndarray
    do: np.ndarray
    distance: np.ndarray
    predictions: np.ndarray
    latency_ms: Sequence[float] | float
    ride_ids: Sequence[Any] | None = None
    user_ids: Sequence[Any] | None = None
    at: float = 0.0
    arm: str = "stable"  # stable, canary, shadow, a, b, blue, green, candidate
    rollout_id: str | None = None
    # Pairs a shadow answer with the live one (per row; default: the ride id).
    request_ids: Sequence[Any] | None = None


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def rows_of(b: PredictionBatch, ts: Any) -> list[tuple[Any, ...]]:
    """The batch as table rows, in the order of ``schema.PREDICTION_COLUMNS``. Raises on a
    malformed batch (wrong lengths, lists for arrays), which the writer then drops alone."""
    n = len(b.predictions)
    nones = [None] * n
    latency = (
        [float(b.latency_ms)] * n
        if isinstance(b.latency_ms, int | float)
        else [float(x) for x in b.latency_ms]
    )
    return list(
        zip(
            [ts] * n,
            [b.model] * n,
            [b.version] * n,
            map(_optional_text, b.ride_ids) if b.ride_ids is not None else nones,
            map(_optional_text, b.user_ids) if b.user_ids is not None else nones,
            b.pu.tolist(),
            b.do.tolist(),
            b.distance.tolist(),
            b.predictions.tolist(),
            latency,
            [b.source] * n,
            [b.arm] * n,
            [b.rollout_id] * n,
            map(_optional_text, b.request_ids) if b.request_ids is not None else nones,
            strict=True,
        )
    )
