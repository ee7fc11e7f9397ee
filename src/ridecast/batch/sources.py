"""Where a month's rides come from: TLC parquet files (a file, a folder, a glob) or a SQL table.

A source yields :class:`TripChunk` objects of at most ``chunk_rows`` rows: the five columns the
scoring job needs, as numpy arrays, plus ``source_row``, the row's position in the input (counting
on across files in sorted file order), which makes ride ids stable. Parquet is read with pyarrow,
only the needed columns, one record batch at a time; SQL tables are read through
:func:`ridecast.data.readers.iter_trip_batches` (month filter, stable row order).
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ridecast.data.readers import find_month_file
from ridecast.data.schema import PICKUP_COLUMNS, Month, TaxiType
from ridecast.errors import DataError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = frozenset("*?[")
# Accepted spellings (lower case) of the columns the job reads; the taxi type's own comes first.
_TIME_NAMES = {
    "pickup": ("lpep_pickup_datetime", "tpep_pickup_datetime", "pickup_datetime"),
    "dropoff": ("lpep_dropoff_datetime", "tpep_dropoff_datetime", "dropoff_datetime"),
}
_PREFIX = {TaxiType.GREEN: "lpep_", TaxiType.YELLOW: "tpep_", TaxiType.FHV: "pickup"}


@dataclass(frozen=True)
class TripChunk:
    """Rides as read: nulls are NaT (times) or NaN (zone ids, distance); nothing is dropped."""

    source_row: np.ndarray  # int64
    pickup: np.ndarray  # datetime64[us]
    dropoff: np.ndarray  # datetime64[us]
    pu: np.ndarray  # float64, so a missing id can be NaN
    do: np.ndarray  # float64
    distance: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.source_row.shape[0])


class ParquetSource:
    """TLC parquet files, read in record batches of the needed columns only."""

    def __init__(self, files: list[Path], taxi_type: TaxiType) -> None:
        self.files = files
        self.taxi_type = taxi_type
        # Per file: the source names of pickup, dropoff, PU, DO and distance, and the row count.
        self.columns = [self._columns_of(path) for path in files]
        self.file_rows = [_open(p).metadata.num_rows for p in files]
        self.total_rows: int | None = sum(self.file_rows)

    def __str__(self) -> str:
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{len(self.files)} files ({self.files[0].parent})"

    def _columns_of(self, path: Path) -> list[str]:
        return trip_columns(_open(path).schema_arrow.names, self.taxi_type, str(path))

    def chunks(self, chunk_rows: int) -> Iterator[TripChunk]:
        offset = 0
        for path, columns in zip(self.files, self.columns, strict=True):
            batches = _open(path).iter_batches(batch_size=chunk_rows, columns=columns)
            while True:
                try:
                    batch = next(batches, None)
                except (OSError, pa.ArrowException) as exc:
                    raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc
                if batch is None:
                    break
                if batch.num_rows:
                    yield _chunk_from_arrow(batch, offset, path)
                    offset += batch.num_rows


class SqlSource:
    """A table with TLC columns in SQLite or PostgreSQL; only the month's pickups are read."""

    def __init__(self, url: str, table: str, taxi_type: TaxiType, month: Month) -> None:
        self.url, self.table, self.taxi_type, self.month = url, table, taxi_type, month
        self.total_rows: int | None = None

    def __str__(self) -> str:
        from ridecast.urls import mask_url

        return f"table {self.table} in {mask_url(self.url)}"

    def chunks(self, chunk_rows: int) -> Iterator[TripChunk]:
        from ridecast.data.readers import iter_trip_batches

        for frame in iter_trip_batches(
            self.url, self.taxi_type, self.month, table=self.table, batch_size=chunk_rows
        ):
            yield TripChunk(
                source_row=frame["source_row"].to_numpy(dtype=np.int64),
                pickup=frame["pickup_datetime"].to_numpy(dtype="datetime64[us]"),
                dropoff=frame["dropoff_datetime"].to_numpy(dtype="datetime64[us]"),
                pu=frame["PULocationID"].to_numpy(dtype=np.float64, na_value=np.nan),
                do=frame["DOLocationID"].to_numpy(dtype=np.float64, na_value=np.nan),
                distance=frame["trip_distance"].to_numpy(dtype=np.float64, na_value=np.nan),
            )


TripSource = ParquetSource | SqlSource


def trip_columns(names: list[str], taxi_type: TaxiType, path: str) -> list[str]:
    """Source names of pickup, dropoff, PU, DO and distance among a file's column ``names``;
    DataError naming ``path`` and any column missing."""
    by_lower = {name.lower(): name for name in names}
    kind = taxi_type
    other = next(
        (k for k, col in PICKUP_COLUMNS.items() if k is not kind and col.lower() in by_lower),
        None,
    )
    if other is not None and PICKUP_COLUMNS[kind].lower() not in by_lower:
        raise DataError(
            f"{path} holds {other.value} trips ({PICKUP_COLUMNS[other]}); "
            f"expected {kind.value} trips ({PICKUP_COLUMNS[kind]}); pass --taxi-type {other}"
        )
    found: list[str] = []
    missing: list[str] = []
    for role, spellings in _TIME_NAMES.items():
        ordered = sorted(spellings, key=lambda s: not s.startswith(_PREFIX[kind]))
        name = next((by_lower[s] for s in ordered if s in by_lower), None)
        if name is None:
            missing.append(ordered[0] if kind is not TaxiType.FHV else f"{role}_datetime")
        else:
            found.append(name)
    for wanted in ("pulocationid", "dolocationid", "trip_distance"):
        if wanted in by_lower:
            found.append(by_lower[wanted])
        else:
            missing.append(
                {"pulocationid": "PULocationID", "dolocationid": "DOLocationID"}.get(wanted, wanted)
            )
    if missing:
        hint = (
            "; fhv records have no trip_distance, which the duration model needs"
            if kind is TaxiType.FHV
            else ""
        )
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)} (any letter case){hint}; "
            f"found: {', '.join(names[:12]) or 'no columns'}"
        )
    return found


def open_source(
    spec: str | os.PathLike[str] | None,
    *,
    taxi_type: TaxiType,
    month: Month,
    data_dir: Path,
    table: str = "trips",
) -> TripSource:
    """The rides to score for ``month``.

    ``spec`` is None (the month's TLC file in ``data_dir``), a parquet file, a folder (its TLC file
    for the month), a glob pattern (every match, in sorted order), or a SQLAlchemy URL whose
    ``table`` has TLC columns. Raises DataError saying what was looked for.
    """
    if spec is None:
        return ParquetSource([find_month_file(data_dir, taxi_type, month)], taxi_type)
    text = os.fspath(spec)
    if _URL.match(text):
        if not text.startswith(("sqlite", "postgresql")):
            raise DataError(
                f"source {text!r} is not a supported database; expected sqlite:///FILE or "
                "postgresql+psycopg://USER@HOST/DB (or a parquet file, folder or glob)"
            )
        return SqlSource(text, table, taxi_type, month)
    path = Path(text)
    if _GLOB_CHARS & set(text) and not path.exists():
        files = sorted(Path(p) for p in globlib.glob(text) if Path(p).is_file())
        if not files:
            raise DataError(f"no files match {text!r}; expected TLC parquet files")
        return ParquetSource(files, taxi_type)
    if path.is_dir():
        return ParquetSource([find_month_file(path, taxi_type, month)], taxi_type)
    if not path.is_file():
        raise DataError(
            f"source {path} does not exist; expected a parquet file, a folder of TLC month "
            "files, a glob, or a database URL"
        )
    return ParquetSource([path], taxi_type)


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {path} as parquet: {_first_line(exc)}") from exc


def _chunk_from_arrow(batch: pa.RecordBatch, offset: int, path: Path) -> TripChunk:
    n = batch.num_rows
    try:
        pickup, dropoff = (
            _numpy(pc.cast(batch.column(i), pa.timestamp("us"), safe=False)) for i in (0, 1)
        )
        pu, do, distance = (_numpy(pc.cast(batch.column(i), pa.float64())) for i in (2, 3, 4))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"{path}: {_first_line(exc)}; expected timestamps, zone ids and distances as numbers"
        ) from exc
    return TripChunk(
        source_row=np.arange(offset, offset + n, dtype=np.int64),
        pickup=pickup,
        dropoff=dropoff,
        pu=pu,
        do=do,
        distance=distance,
    )


def _numpy(array: pa.Array) -> np.ndarray:
    """Arrow → numpy with nulls as NaN / NaT (zero-copy when there are none)."""
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
