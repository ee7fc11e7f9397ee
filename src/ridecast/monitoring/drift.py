"""Drift: how far what a model sees has moved from the data it was trained on.

Each input (``PULocationID``, ``DOLocationID``, ``trip_distance``) and the prediction of a month,
or of the last N logged requests, is compared with the model's reference month: by default the
month its training run validated on (recorded with the run, like the training month). There the
model meets rides it was not fitted to, as it does in service; on its own training month a model
that learns each zone pair predicts fitted values, whose spread no later month shows (0.13 to
0.14 normed Wasserstein on every unshifted synthetic month: prediction drift everywhere).
Methods and thresholds are Evidently's defaults, so a score reads as it would in an Evidently
report:

======================================  ==================================  =================
column                                  both samples > 1,000 rows           otherwise
======================================  ==================================  =================
numeric, more than 5 distinct values    Wasserstein distance / reference    K-S, p < 0.05
                                        std (``np.std``), drift at >= 0.1
categorical (the zones), or numeric     Jensen-Shannon distance (natural    chi-square,
with at most 5 distinct values          log, shares over the union of the   p < 0.05
                                        categories), drift at >= 0.1
======================================  ==================================  =================

The dataset drifts when at least half of its columns do (Evidently's ``drift_share``, 0.5).
Where this differs from Evidently, and why (docs/monitoring.md has the measurements):

- The tests replace the distances when *either* sample has at most 1,000 rows; Evidently looks at
  the reference only. The last 200 requests are a small sample too, whatever the reference.
- Chi-square tests whether the two samples share one distribution (a 2 x k table; categories
  too rare for the approximation are pooled into one). Evidently tests the current counts
  against the reference shares as if those were exact, which flags most same-city samples of
  similar size as drifted. On two categories this test is Evidently's two-proportion z-test.
- A categorical column gets the chi-square test, not Jensen-Shannon, when sampling alone would
  carry the distance to 3/4 of its threshold: ``sqrt((k - 1) / 8 * (1/n_ref + 1/n_cur))`` for k
  categories, about 0.13 for 2,000 requests over 240 zones.
- K-S flags at p < 0.05 like the others (Evidently's K-S flags at p <= 0.05).

Only the rows a model would see count: both zone ids in the zone table and 0-100 miles
(:func:`ridecast.data.readers.filter_model_inputs`; for trip files, the whole training filter).
Real TLC files carry odometer readings of thousands of miles; they would inflate the reference
std that the Wasserstein distance is divided by, and hide a 1.5x shift of every distance.

This module is the core of drift for every caller (the CLI, the dashboard): it imports no
deployment mode. :func:`compare` is pure; :func:`month_drift` and :func:`recent_drift` read the
data and get the model through the registry.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from ridecast.data.readers import (
    filter_model_inputs,
    filter_training_rows,
    find_month_file,
    read_trips,
)
from ridecast.data.schema import Month, TaxiType, parse_month, parse_taxi_type
from ridecast.errors import DataError, ModelError
from ridecast.features import FEATURE_COLUMNS
from ridecast.modelref import ModelRef, parse_model_uri

if TYPE_CHECKING:
    from ridecast.predictor import Predictor
    from ridecast.registry import Registry
    from ridecast.settings import Settings

PREDICTION_COLUMN = "prediction"
DRIFT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, PREDICTION_COLUMN)
CATEGORICAL_COLUMNS = frozenset({"PULocationID", "DOLocationID"})
DEFAULT_MODEL = "models:/ride-duration@champion"

NUMERIC, CATEGORICAL = "numeric", "categorical"
WASSERSTEIN, JENSEN_SHANNON, KS, CHI_SQUARE = (
    "wasserstein_normed",
    "jensen_shannon",
    "ks",
    "chi_square",
)
METHOD_LABELS = {
    WASSERSTEIN: "Wasserstein distance (normed)",
    JENSEN_SHANNON: "Jensen-Shannon distance",
    KS: "K-S p-value",
    CHI_SQUARE: "chi-square p-value",
}
P_VALUE_METHODS = frozenset({KS, CHI_SQUARE})

# Evidently's defaults.
DISTANCE_THRESHOLD = 0.1
P_VALUE_THRESHOLD = 0.05
DRIFT_SHARE = 0.5
SMALL_SAMPLE_ROWS = 1_000
FEW_VALUES = 5  # a numeric column with this many distinct values or fewer is compared as categories
MIN_STD = 0.001  # Evidently's floor for the std that Wasserstein is divided by
# Ours: Jensen-Shannon is read against its threshold only while sampling noise stays below this.
NOISE_SHARE_OF_THRESHOLD = 0.75
# Chi-square needs about 5 expected rows per cell; rarer categories are pooled into one.
MIN_EXPECTED_COUNT = 5.0
HISTOGRAM_BINS = 24
TOP_CATEGORIES = 12


@dataclass(frozen=True)
class Histogram:
    """Shares of each sample in equal-width bins between the pooled 0.5th and 99.5th percentiles;
    the end bins also hold what lies beyond them, so each side sums to 1."""

    edges: tuple[float, ...]  # len(reference) + 1 bin edges
    reference: tuple[float, ...]
    current: tuple[float, ...]


@dataclass(frozen=True)
class CategoryShare:
    """One category's share of each sample; ``category`` "other" holds every category not shown."""

    category: str  # "74", or "other"
    label: str  # "74 East Harlem North" for zones, else the category
    reference: float
    current: float


@dataclass(frozen=True)
class ColumnDrift:
    """The drift of one column. ``drifted`` is ``score >= threshold`` for the distances
    (``wasserstein_normed``, ``jensen_shannon``) and ``score < threshold`` for the p-values
    (``ks``, ``chi_square``). Numeric columns compared as values carry a ``histogram``; columns
    compared as categories carry ``categories`` (the most common ones, then "other")."""

    column: str
    kind: str  # "numeric" | "categorical"
    method: str  # "wasserstein_normed" | "jensen_shannon" | "ks" | "chi_square"
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    reference_mean: float | None = None  # numeric columns only
    current_mean: float | None = None
    # Columns compared as categories: the Jensen-Shannon distance that two samples of these
    # sizes from one distribution would typically show (see the module docstring).
    noise: float | None = None
    histogram: Histogram | None = None
    categories: tuple[CategoryShare, ...] = ()

    @property
    def is_p_value(self) -> bool:
        return self.method in P_VALUE_METHODS

    @property
    def rule(self) -> str:
        """When this column counts as drifted: ``"p < 0.05"`` or ``">= 0.1"``."""
        return f"p < {self.threshold:g}" if self.is_p_value else f">= {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "method_label": METHOD_LABELS[self.method],
            "score": self.score,
            "threshold": self.threshold,
            "rule": self.rule,
            "drifted": self.drifted,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "reference_mean": self.reference_mean,
            "current_mean": self.current_mean,
            "noise": self.noise,
            "histogram": None
            if self.histogram is None
            else {
                "edges": list(self.histogram.edges),
                "reference": list(self.histogram.reference),
                "current": list(self.histogram.current),
            },
            "categories": [
                {
                    "category": c.category,
                    "label": c.label,
                    "reference": c.reference,
                    "current": c.current,
                }
                for c in self.categories
            ],
        }


@dataclass(frozen=True)
class DriftReport:
    """Drift of every compared column, and the dataset's verdict:
    ``dataset_drifted`` is ``share_drifted >= drift_share``."""

    reference_label: str
    current_label: str
    columns: tuple[ColumnDrift, ...]
    share_drifted: float
    dataset_drifted: bool
    drift_share: float = DRIFT_SHARE
    model: str | None = None  # "ride-duration v1": the version that made the predictions
    notes: tuple[str, ...] = field(default=())  # for people: rows left out, samples used

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns if c.drifted)

    def column(self, name: str) -> ColumnDrift:
        for result in self.columns:
            if result.column == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (``json.dumps`` takes it as it is)."""
        return {
            "reference_label": self.reference_label,
            "current_label": self.current_label,
            "model": self.model,
            "dataset_drifted": self.dataset_drifted,
            "share_drifted": self.share_drifted,
            "drift_share": self.drift_share,
            "drifted_columns": list(self.drifted_columns),
            "columns": [c.to_dict() for c in self.columns],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- the arithmetic


def wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance between the samples, divided by the reference's population std
    (at least 0.001): how far the values moved, in reference standard deviations."""
    norm = max(float(np.std(reference)), MIN_STD)
    return float(stats.wasserstein_distance(reference, current)) / norm


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon *distance* (the square root of the divergence, natural log, so at most
    sqrt(ln 2) = 0.83) between two count vectors over the same categories. A category absent from
    one side has share 0 there: no smoothing."""
    return float(distance.jensenshannon(reference_counts, current_counts))


def ks_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-sided two-sample Kolmogorov-Smirnov p-value."""
    return float(stats.ks_2samp(reference, current).pvalue)


def chi_square_p_value(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """p-value of Pearson's chi-square test that both samples come from one distribution, over
    a 2 x k table of counts (no continuity correction, so two categories give exactly the
    two-proportion z-test). Categories expected fewer than 5 times in the smaller sample are
    pooled into one, with the next rarest added until the pool is expected 5 times; with fewer
    than two columns left there is nothing to test (p = 1)."""
    table = np.vstack([reference_counts, current_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    totals = table.sum(axis=1)
    expected_in_smaller = table.sum(axis=0) * totals.min() / totals.sum()
    order = np.argsort(expected_in_smaller, kind="stable")
    pooled = int((expected_in_smaller < MIN_EXPECTED_COUNT).sum())
    if pooled:
        in_pool = np.cumsum(expected_in_smaller[order])
        while pooled < order.size and in_pool[pooled - 1] < MIN_EXPECTED_COUNT:
            pooled += 1
        pool = table[:, order[:pooled]].sum(axis=1, keepdims=True)
        table = np.hstack([table[:, order[pooled:]], pool])
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def sampling_noise(categories: int, reference_rows: int, current_rows: int) -> float:
    """The Jensen-Shannon distance two samples of these sizes drawn from one distribution over
    ``categories`` categories show on average (a second-order expansion of the divergence:
    ``(k - 1) / 8 * (1/n_ref + 1/n_cur)``, then its square root)."""
    return math.sqrt(max(categories - 1, 0) / 8.0 * (1.0 / reference_rows + 1.0 / current_rows))


# --------------------------------------------------------------------------- compare


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    reference_label: str,
    current_label: str,
    columns: Sequence[str] = DRIFT_COLUMNS,
) -> DriftReport:
    """Drift of ``columns`` from ``reference`` to ``current``.

    Frames that have the three feature columns are first cut to the rows a model would see
    (both zone ids in the zone table, 0-100 miles); then each column drops its NaN and infinite
    values.
    The zone columns are categorical, every other column numeric. Raises DataError when a frame
    lacks a column or has no rows left to compare.
    """
    if not columns:
        raise DataError("no columns to compare; expected some of " + ", ".join(DRIFT_COLUMNS))
    reference = _model_rows(reference, columns, reference_label)
    current = _model_rows(current, columns, current_label)
    results = tuple(
        _column_drift(
            name,
            _values(reference[name], name, reference_label),
            _values(current[name], name, current_label),
        )
        for name in columns
    )
    share = sum(r.drifted for r in results) / len(results)
    return DriftReport(
        reference_label=reference_label,
        current_label=current_label,
        columns=results,
        share_drifted=share,
        dataset_drifted=share >= DRIFT_SHARE,
    )


def _model_rows(frame: pd.DataFrame, columns: Sequence[str], label: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{label}: no {' or '.join(missing)} column; found {', '.join(map(str, frame.columns))}"
        )
    if all(c in frame.columns for c in FEATURE_COLUMNS):
        frame = filter_model_inputs(frame)
    return frame


def _values(series: pd.Series, name: str, label: str) -> np.ndarray:
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise DataError(f"{label}: no rows with a {name} to compare (after the training filters)")
    return values


def _column_drift(name: str, reference: np.ndarray, current: np.ndarray) -> ColumnDrift:
    kind = CATEGORICAL if name in CATEGORICAL_COLUMNS else NUMERIC
    small = min(reference.size, current.size) <= SMALL_SAMPLE_ROWS
    categories = np.union1d(reference, current)
    noise: float | None = None
    histogram: Histogram | None = None
    chart: tuple[CategoryShare, ...] = ()
    if kind == CATEGORICAL or categories.size <= FEW_VALUES:
        reference_counts = _counts(categories, reference)
        current_counts = _counts(categories, current)
        noise = sampling_noise(categories.size, reference.size, current.size)
        chart = _top_categories(name, categories, reference_counts, current_counts)
        if small or noise >= NOISE_SHARE_OF_THRESHOLD * DISTANCE_THRESHOLD:
            method, score = CHI_SQUARE, chi_square_p_value(reference_counts, current_counts)
        else:
            method, score = JENSEN_SHANNON, jensen_shannon(reference_counts, current_counts)
    else:
        histogram = _histogram(reference, current)
        if small:
            method, score = KS, ks_p_value(reference, current)
        else:
            method, score = WASSERSTEIN, wasserstein_normed(reference, current)
    is_p_value = method in P_VALUE_METHODS
    threshold = P_VALUE_THRESHOLD if is_p_value else DISTANCE_THRESHOLD
    numeric = kind == NUMERIC
    return ColumnDrift(
        column=name,
        kind=kind,
        method=method,
        score=score,
        threshold=threshold,
        drifted=bool(score < threshold if is_p_value else score >= threshold),
        reference_rows=int(reference.size),
        current_rows=int(current.size),
        reference_mean=float(reference.mean()) if numeric else None,
        current_mean=float(current.mean()) if numeric else None,
        noise=noise,
        histogram=histogram,
        categories=chart,
    )


def _counts(categories: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(categories, values), minlength=categories.size)


def _histogram(reference: np.ndarray, current: np.ndarray) -> Histogram:
    low, high = np.quantile(np.concatenate([reference, current]), [0.005, 0.995])
    if not high > low:  # one value (nearly) everywhere: one unit-wide bin around it
        low, high = low - 0.5, low + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)

    def shares(values: np.ndarray) -> tuple[float, ...]:
        counts = np.histogram(np.clip(values, low, high), edges)[0]
        return tuple(float(s) for s in counts / values.size)

    return Histogram(tuple(float(e) for e in edges), shares(reference), shares(current))


def _top_categories(
    name: str, categories: np.ndarray, reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[CategoryShare, ...]:
    reference_shares = reference_counts / reference_counts.sum()
    current_shares = current_counts / current_counts.sum()
    order = np.argsort(-np.maximum(reference_shares, current_shares), kind="stable")
    shown, rest = order[:TOP_CATEGORIES], order[TOP_CATEGORIES:]
    names = _zone_names() if name in CATEGORICAL_COLUMNS else {}
    result = []
    for i in shown:
        value = float(categories[i])
        category = str(int(value)) if value.is_integer() else f"{value:g}"
        zone = names.get(int(value)) if value.is_integer() else None
        result.append(
            CategoryShare(
                category,
                f"{category} {zone}" if zone else category,
                float(reference_shares[i]),
                float(current_shares[i]),
            )
        )
    if rest.size:
        result.append(
            CategoryShare(
                "other",
                f"{rest.size} others",
                float(reference_shares[rest].sum()),
                float(current_shares[rest].sum()),
            )
        )
    return tuple(result)


@lru_cache(maxsize=1)
def _zone_names() -> dict[int, str]:
    from ridecast.data.zones import load_zones

    zones = load_zones()
    return dict(zip(zones["LocationID"].tolist(), zones["Zone"].tolist(), strict=True))


# --------------------------------------------------------------------------- months and the log


def month_drift(
    settings: Settings,
    taxi_type: TaxiType | str,
    month: Month | str,
    reference_month: Month | str | None = None,
    model_ref: ModelRef | str | None = None,
    *,
    registry: Registry | None = None,
) -> DriftReport:
    """Drift of one TLC month (``<data dir>/<taxi_type>_tripdata_<month>.parquet``) from the
    reference: ``reference_month`` of the same taxi type, or by default the model's
    validation month (its run's ``taxi_type`` and ``valid_month``; ``train_month`` for runs that
    recorded none). Both months are cut to the rows training keeps, and both get their
    ``prediction`` from the version ``model_ref`` (default ``models:/ride-duration@champion``)
    names now. Pass the caller's ``registry`` to reuse its loaded models; month files are read
    once per file and version in a process.

    Raises DataError for a bad month or taxi type or a missing file (naming the path and how
    to make it), ModelError for a model the registry cannot give.
    """
    kind, when = _taxi_type(taxi_type), parse_month(month)
    current_path = find_month_file(settings.resolved_data_dir, kind, when)
    source = _Reference.find(settings, kind, reference_month, model_ref, registry)
    reference, reference_note = source.rows()
    current, read = _month_rows(current_path, kind, when, source.predictor())
    label = f"{kind.value} {when}"
    report = compare(reference, current, reference_label=source.label, current_label=label)
    notes = (reference_note, _kept_note(label, len(current), read))
    return replace(report, model=source.model_label, notes=notes)


def recent_drift(
    settings: Settings,
    last_n: int,
    reference_month: Month | str | None = None,
    model_ref: ModelRef | str | None = None,
    *,
    taxi_type: TaxiType | str | None = None,
    registry: Registry | None = None,
) -> DriftReport:
    """Drift of the last ``last_n`` answers of the model in the prediction log (table
    ``predictions`` at ``settings.resolved_prediction_log_url``; shadow answers, which no caller
    saw, left out) from the model's validation month (as for :func:`month_drift`), or from
    ``reference_month`` of ``taxi_type`` (default: the taxi type the model was trained on). The
    current predictions are the logged ones, whichever version gave them; the reference's come
    from ``model_ref``.

    Raises DataError when the log is missing or holds none of the model's predictions.
    """
    if last_n < 1:
        raise DataError(f"--last must be at least 1, got {last_n}")
    ref = _model_ref(model_ref)
    kind = _taxi_type(taxi_type) if taxi_type is not None else None
    current, recent_note = _logged_predictions(settings, ref.name, last_n)
    source = _Reference.find(settings, kind, reference_month, ref, registry)
    reference, reference_note = source.rows()
    label = f"last {len(current):,} logged {ref.name} predictions"
    report = compare(reference, current, reference_label=source.label, current_label=label)
    return replace(report, model=source.model_label, notes=(reference_note, recent_note))


def _taxi_type(value: TaxiType | str) -> TaxiType:
    kind = parse_taxi_type(value)
    if kind is TaxiType.FHV:
        raise DataError(
            "fhv trip files have no trip_distance, which the ride models need; "
            "use --taxi-type green or yellow"
        )
    return kind


def _model_ref(value: ModelRef | str | None) -> ModelRef:
    if isinstance(value, ModelRef):
        return value
    return parse_model_uri(value or DEFAULT_MODEL)


def _kept_note(label: str, kept: int, read: int) -> str:
    return (
        f"{label}: {kept:,} of {read:,} rides kept by the training filters "
        "(1-60 minutes, both zones, 0-100 miles)"
    )


@dataclass
class _Reference:
    """The reference month of a comparison and the model version that predicts it."""

    registry: Registry
    ref: ModelRef  # pinned to one version
    kind: TaxiType
    month: Month
    path: Path
    label: str
    _predictor: Predictor | None = None

    @classmethod
    def find(
        cls,
        settings: Settings,
        kind: TaxiType | None,
        reference_month: Month | str | None,
        model_ref: ModelRef | str | None,
        registry: Registry | None,
    ) -> _Reference:
        """Resolve the model and its reference file without loading the model yet, so a
        missing file is reported before the seconds a first load takes."""
        ref = _model_ref(model_ref)
        if registry is None:
            from ridecast.registry import Registry

            registry = Registry(settings)
        version = registry.resolve(ref)
        pinned = ModelRef(ref.name, version=version)
        if reference_month is not None:
            month = parse_month(reference_month)
            kind = kind or _training_run(registry, pinned).kind
            label = f"{kind.value} {month}"
        else:
            run = _training_run(registry, pinned)
            kind = kind or run.kind
            if run.valid_month is not None:
                month = run.valid_month
                label = f"{kind.value} {month} (validation month of {ref.name} v{version})"
            else:
                month = run.train_month
                label = f"{kind.value} {month} (training month of {ref.name} v{version})"
        try:
            path = find_month_file(settings.resolved_data_dir, kind, month)
        except DataError as exc:
            raise DataError(f"reference {label}: {exc}") from None
        return cls(registry, pinned, kind, month, path, label)

    @property
    def model_label(self) -> str:
        return f"{self.ref.name} v{self.ref.version}"

    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = self.registry.predictor(self.ref)
        return self._predictor

    def rows(self) -> tuple[pd.DataFrame, str]:
        """The reference's model rows with their predictions, and a note on the rows kept."""
        frame, read = _month_rows(self.path, self.kind, self.month, self.predictor())
        return frame, _kept_note(f"reference {self.kind.value} {self.month}", len(frame), read)


class _TrainingRun(NamedTuple):
    kind: TaxiType
    train_month: Month
    valid_month: Month | None


def _training_run(registry: Registry, ref: ModelRef) -> _TrainingRun:
    """The taxi type and months the version's training run recorded (``ridecast train`` logs
    them as run parameters)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = registry.client.get_model_version(ref.name, str(ref.version)).run_id
        params = dict(registry.client.get_run(run_id).data.params) if run_id else {}
    except MlflowException as exc:
        raise ModelError(f"{ref.uri}: cannot read its training run: {exc}") from exc
    taxi_type, train_month = params.get("taxi_type"), params.get("train_month")
    if not taxi_type or not train_month:
        raise ModelError(
            f"{ref.uri} records no training data (run params taxi_type and train_month); "
            "name the reference with --reference YYYY-MM and --taxi-type"
        )
    valid_month = params.get("valid_month")
    return _TrainingRun(
        _taxi_type(taxi_type),
        parse_month(train_month),
        parse_month(valid_month) if valid_month else None,
    )


# Frames of model rows with their predictions, by file (with its size and mtime) and version:
# the dashboard asks for the same months again and again.
_MONTH_CACHE: OrderedDict[tuple[Any, ...], tuple[pd.DataFrame, int]] = OrderedDict()
_MONTH_CACHE_SIZE = 4
_MONTH_CACHE_LOCK = threading.Lock()


def _month_rows(
    path: Path, kind: TaxiType, month: Month, predictor: Predictor
) -> tuple[pd.DataFrame, int]:
    """The month's rows that training keeps, with the model's ``prediction``; and the number of
    rows read. Callers must not modify the frame (it is shared through the cache)."""
    stat = path.stat()
    model = (predictor.name, predictor.version, predictor.loaded.run_id)  # run ids are unique
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, *model)
    with _MONTH_CACHE_LOCK:
        cached = _MONTH_CACHE.get(key)
        if cached is not None:
            _MONTH_CACHE.move_to_end(key)
            return cached
    trips = read_trips(path, kind, month)
    rows = filter_training_rows(trips)
    frame = pd.DataFrame(
        {
            "PULocationID": rows["PULocationID"].to_numpy(dtype=np.int64),
            "DOLocationID": rows["DOLocationID"].to_numpy(dtype=np.int64),
            "trip_distance": rows["trip_distance"].to_numpy(dtype=np.float64),
        }
    )
    frame[PREDICTION_COLUMN] = predictor.predict_frame(frame)
    result = (frame, len(trips))
    with _MONTH_CACHE_LOCK:
        _MONTH_CACHE[key] = result
        while len(_MONTH_CACHE) > _MONTH_CACHE_SIZE:
            _MONTH_CACHE.popitem(last=False)
    return result


def _logged_predictions(settings: Settings, model: str, last_n: int) -> tuple[pd.DataFrame, str]:
    """The model's last ``last_n`` live answers in the prediction log, newest first, and a note
    saying when they were given and by which versions."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from ridecast.monitoring import schema
    from ridecast.monitoring.database import first_line, mask_url, shared_engine
    from ridecast.rollout.state import SHADOW_ARM

    url = settings.resolved_prediction_log_url
    shown = mask_url(url)
    fix = "serve requests first (`ridecast serve`), or set RIDECAST_PREDICTION_LOG_URL to the log"
    parsed = make_url(url)
    database = parsed.database
    is_file = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    # Connecting would create an empty SQLite file where a path was mistyped.
    if is_file and not Path(str(database)).is_file():
        raise DataError(f"no prediction log at {database}; {fix}")
    table = schema.predictions
    query = (
        select(
            table.c.pu_location_id,
            table.c.do_location_id,
            table.c.trip_distance,
            table.c.prediction,
            table.c.version,
            table.c.ts,
        )
        .where(table.c.model == model, table.c.arm != SHADOW_ARM)
        .order_by(table.c.id.desc())
        .limit(last_n)
    )
    try:
        with shared_engine(url).connect() as connection:
            rows = connection.execute(query).all()
    except SQLAlchemyError as exc:
        raise DataError(f"cannot read the prediction log at {shown}: {first_line(exc)}") from exc
    if not rows:
        raise DataError(f"the prediction log at {shown} holds no {model} predictions yet; {fix}")
    frame = pd.DataFrame(
        rows,
        columns=[
            "PULocationID",
            "DOLocationID",
            "trip_distance",
            PREDICTION_COLUMN,
            "version",
            "ts",
        ],
    )
    versions = sorted(set(frame["version"]), key=lambda v: (len(v), v))
    first, last = _when(frame["ts"].iloc[-1]), _when(frame["ts"].iloc[0])
    note = (
        f"current: the last {len(frame):,} {model} answers in the log "
        f"(asked for {last_n:,}), {first} to {last}, by version {', '.join(versions)}"
    )
    return frame.drop(columns=["version", "ts"]), note


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
