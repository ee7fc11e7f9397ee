"""Read TLC trip data (parquet files or a SQL table) into one canonical frame.

Whatever the source, callers get the columns of ``CANONICAL_COLUMNS`` plus ``source_row``:

============================  =====================  ==========================================
column                        dtype                  meaning
============================  =====================  ==========================================
``pickup_datetime``           ``datetime64[us]``     naive local time, as in TLC files
``dropoff_datetime``          ``datetime64[us]``
``PULocationID``              ``Int64`` (nullable)   zone id, ``<NA>`` where the record has none
``DOLocationID``              ``Int64`` (nullable)
``trip_distance``             ``float64``            miles; NaN for fhv (no such column)
``duration``                  ``float64``            minutes, dropoff - pickup (may be negative)
``fare_amount``               ``float64``            NaN where the source has no fares (fhv)
``tip_amount``                ``float64``
``total_amount``              ``float64``
``payment_type``              ``Int64`` (nullable)
``source_row``                ``int64``              position of the row in its input
============================  =====================  ==========================================

Zone ids are nullable integers (not float64) so ``str(PULocationID)`` is ``"130"``, as the
course's ``PU_DO`` feature expects; use ``.to_numpy("float64", na_value=np.nan)`` for arithmetic.
Dirty rows are kept: :func:`filter_training` applies the course's cleaning, and
:func:`filter_training_rows` adds the model's input limits (both zone ids in the zone table,
0-100 miles).

Column names are matched whatever their letter case (``PUlocationID``, ``airport_fee``,
``dropOff_datetime``); older files' dtypes (double zone ids, nanosecond timestamps) are converted.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ridecast.data.schema import (
    CANONICAL_COLUMNS,
    DROPOFF_COLUMNS,
    PICKUP_COLUMNS,
    Month,
    TaxiType,
    month_file_name,
    parse_month,
    parse_taxi_type,
)
from ridecast.errors import DataError
from ridecast.rides import in_zone_table
from ridecast.urls import mask_url

Source = str | os.PathLike[str]

# Candidate source names (lower case) for each canonical column, in order of preference.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "pickup_datetime": ("tpep_pickup_datetime", "lpep_pickup_datetime", "pickup_datetime"),
    "dropoff_datetime": ("tpep_dropoff_datetime", "lpep_dropoff_datetime", "dropoff_datetime"),
    "PULocationID": ("pulocationid",),
    "DOLocationID": ("dolocationid",),
    "trip_distance": ("trip_distance",),
    "fare_amount": ("fare_amount",),
    "tip_amount": ("tip_amount",),
    "total_amount": ("total_amount",),
    "payment_type": ("payment_type",),
}
_TIME_COLUMNS = ("pickup_datetime", "dropoff_datetime")
_INT_COLUMNS = ("PULocationID", "DOLocationID", "payment_type")
_FLOAT_COLUMNS = ("trip_distance", "fare_amount", "tip_amount", "total_amount")
_ALWAYS_REQUIRED = ("pickup_datetime", "dropoff_datetime", "PULocationID", "DOLocationID")
# A taxi type is recognised by its pickup column.
_TYPE_BY_PICKUP = {name.lower(): kind for kind, name in PICKUP_COLUMNS.items()}
_OUTPUT_COLUMNS = [*CANONICAL_COLUMNS, "source_row"]
_US_PER_MINUTE = 60_000_000
# Integer key columns a SQL table may carry; the first one found orders the rows.
_SQL_KEYS = ("source_row", "ride_id", "id", "index")
_DTYPES_EXPECTED = "expected TLC dtypes (timestamps for times, numbers for ids and amounts)"
# Miles; longer "rides" in TLC files are mostly odometer glitches, and would dominate a
# least-squares fit. Narrower on purpose than what a model scores (rides.MAX_TRIP_DISTANCE).
MAX_TRIP_MILES = 100.0
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------- public API


def find_month_file(data_dir: Path, taxi_type: TaxiType | str, month: Month | str) -> Path:
    """The TLC file of one month in ``data_dir`` (or ``data_dir/<taxi_type>/``).

    Raises DataError naming the path looked for and how to make the file.
    """
    kind, when = parse_taxi_type(taxi_type), parse_month(month)
    name = month_file_name(kind, when)
    data_dir = Path(data_dir)
    for candidate in (data_dir / name, data_dir / kind.value / name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"no {kind.value} trip file for {when}: looked for {data_dir / name}; make one with "
        f"`ridecast data synth --taxi-type {kind.value} --month {when} --out {data_dir}` "
        f"or put TLC's {name} there"
    )


def read_trips(
    source: Source,
    taxi_type: TaxiType | str | None = None,
    month: Month | str | None = None,
    *,
    table: str = "trips",
) -> pd.DataFrame:
    """All rides of ``source`` as one canonical frame (see the module docstring for columns).

    ``source`` is a parquet file; a directory (the month's TLC file if ``month`` is given, else
    every ``<taxi_type>_tripdata_*.parquet``, else every ``*.parquet``); a glob pattern; or a
    SQLAlchemy URL (``sqlite:///trips.db``, ``postgresql+psycopg://...``) whose ``table`` has TLC
    columns, where ``month`` keeps the rides picked up in that month.

    With several files, ``source_row`` counts on across them in sorted file order. ``taxi_type``,
    when given, is checked against the columns found. Raises DataError for a missing source, a
    table without the required columns, or values of the wrong type.
    """
    kind = parse_taxi_type(taxi_type) if taxi_type is not None else None
    when = parse_month(month) if month is not None else None
    if _is_url(source):
        return _concat(list(_SqlSource.open(str(source), kind, when, table).frames(None)))
    frames = []
    offset = 0
    for path in _parquet_files(source, kind, when):
        parquet = _open_parquet(path)
        mapping = _resolve(parquet.schema_arrow.names, kind, str(path))
        try:
            data = parquet.read(columns=list(mapping.values()))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc
        frames.append(_from_arrow(data, mapping, offset, str(path)))
        offset += data.num_rows
    return _concat(frames)


def iter_trip_batches(
    source: Source,
    taxi_type: TaxiType | str | None = None,
    month: Month | str | None = None,
    *,
    table: str = "trips",
    batch_size: int = 500_000,
) -> Iterator[pd.DataFrame]:
    """The rides of ``source`` (as for :func:`read_trips`) in frames of at most ``batch_size`` rows.

    Only the needed columns are read, one batch at a time, so memory stays bounded whatever the
    size of the month. ``source_row`` continues across batches (and files); concatenating the
    batches gives exactly ``read_trips(...)``. An empty source yields no batch. SQL rows are
    ordered by an integer key column (``source_row``, ``ride_id``, ``id`` or pandas' ``index``),
    else by SQLite's rowid, else by all the columns read.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    kind = parse_taxi_type(taxi_type) if taxi_type is not None else None
    when = parse_month(month) if month is not None else None
    # Sources are opened and checked now, so a bad source fails at the call, not mid-iteration.
    if _is_url(source):
        return _SqlSource.open(str(source), kind, when, table).frames(batch_size)
    inputs = []
    for path in _parquet_files(source, kind, when):
        parquet = _open_parquet(path)
        inputs.append((path, parquet, _resolve(parquet.schema_arrow.names, kind, str(path))))
    return _parquet_batches(inputs, batch_size)


def _parquet_batches(
    inputs: list[tuple[Path, pq.ParquetFile, dict[str, str]]], batch_size: int
) -> Iterator[pd.DataFrame]:
    offset = 0
    for path, parquet, mapping in inputs:
        batches = parquet.iter_batches(batch_size=batch_size, columns=list(mapping.values()))
        try:
            for batch in batches:
                if batch.num_rows:
                    yield _from_arrow(pa.Table.from_batches([batch]), mapping, offset, str(path))
                    offset += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {path}: {_first_line(exc)}") from exc


def filter_training(df: pd.DataFrame) -> pd.DataFrame:
    """The course's cleaning: ``1 <= duration <= 60`` minutes, both zone ids present, and a
    distance present when the data has distances at all (fhv has none). Keeps index and columns."""
    keep = df["duration"].between(1.0, 60.0) & df["PULocationID"].notna()
    keep &= df["DOLocationID"].notna()
    if "trip_distance" in df.columns and df["trip_distance"].notna().any():
        keep &= df["trip_distance"].notna()
    return df.loc[keep.fillna(False).to_numpy(dtype=bool)]


def filter_model_inputs(df: pd.DataFrame) -> pd.DataFrame:
    """Rides whose inputs a model is trained for: both zone ids in the zone table (the rule of
    :mod:`ridecast.rides`, which every mode scores by) and ``0 <= trip_distance <=
    MAX_TRIP_MILES``. Needs no duration, so it fits logged requests as well as trip files.
    Keeps index and columns."""

    def floats(column: str) -> np.ndarray:
        return df[column].to_numpy(dtype=np.float64, na_value=np.nan)

    miles = floats("trip_distance")
    keep = in_zone_table(floats("PULocationID")) & in_zone_table(floats("DOLocationID"))
    keep &= (miles >= 0.0) & (miles <= MAX_TRIP_MILES)
    return df.loc[keep]


def filter_training_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rides a model trains on: :func:`filter_training`, then :func:`filter_model_inputs`."""
    return filter_model_inputs(filter_training(df))


# --------------------------------------------------------------------------- sources


def _is_url(source: Source) -> bool:
    return isinstance(source, str) and _URL_RE.match(source) is not None


def _parquet_files(source: Source, kind: TaxiType | None, when: Month | None) -> list[Path]:
    text = os.fspath(source)
    if isinstance(source, str) and _GLOB_CHARS & set(text) and not Path(text).exists():
        files = sorted(Path(p) for p in globlib.glob(text) if Path(p).is_file())
        if not files:
            raise DataError(f"no files match {text!r}; expected parquet trip files")
        return files
    path = Path(text)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"no such file or directory: {path}; expected a parquet file or a folder")
    if when is not None:
        if kind is not None:
            return [find_month_file(path, kind, when)]
        matches = sorted(path.glob(f"*_tripdata_{when}.parquet"))
        if len(matches) == 1:
            return matches
        if not matches:
            expected = f"<type>_tripdata_{when}.parquet"
            raise DataError(f"no trip file for {when} in {path}; expected {expected}")
        names = ", ".join(m.name for m in matches)
        raise DataError(f"several trip files for {when} in {path} ({names}); pass a taxi type")
    pattern = f"{kind.value}_tripdata_*.parquet" if kind is not None else "*.parquet"
    files = sorted(p for p in path.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"no {pattern} files in {path}; expected TLC month files")
    return files


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {path} as parquet: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- columns


def _resolve(names: Sequence[str], kind: TaxiType | None, where: str) -> dict[str, str]:
    """Map canonical column -> the source's column name; DataError if required ones are missing."""
    by_lower = {name.lower(): name for name in names}
    found_kind = next((k for low, k in _TYPE_BY_PICKUP.items() if low in by_lower), None)
    if kind is not None and found_kind is not None and found_kind is not kind:
        raise DataError(
            f"{where} holds {found_kind.value} trips ({PICKUP_COLUMNS[found_kind]}); "
            f"expected {kind.value} trips ({PICKUP_COLUMNS[kind]})"
        )
    effective = kind or found_kind
    mapping: dict[str, str] = {}
    for canonical, candidates in _CANDIDATES.items():
        # The type's own spelling first, so a file with several time columns reads the right one.
        own = _prefix(effective) if effective else "\0"
        ordered = sorted(candidates, key=lambda c: not c.startswith(own))
        for candidate in ordered:
            if candidate in by_lower:
                mapping[canonical] = by_lower[candidate]
                break
    required = list(_ALWAYS_REQUIRED)
    if effective in (TaxiType.GREEN, TaxiType.YELLOW):
        required.append("trip_distance")
    missing = [c for c in required if c not in mapping]
    if missing:
        expected = ", ".join(_expected_names(effective, required))
        found = ", ".join(list(names)[:12]) or "none"
        raise DataError(
            f"{where} lacks columns {', '.join(_expected_names(effective, missing))}; "
            f"expected {effective.value + ' ' if effective else ''}trip columns "
            f"{expected} (any letter case); found {found}"
        )
    return mapping


def _prefix(kind: TaxiType) -> str:
    return {TaxiType.GREEN: "lpep_", TaxiType.YELLOW: "tpep_", TaxiType.FHV: "pickup"}[kind]


def _expected_names(kind: TaxiType | None, canonical: Sequence[str]) -> list[str]:
    """How a type's files spell canonical columns, for error messages."""
    if kind is None:
        spell = {
            "pickup_datetime": "tpep_/lpep_pickup_datetime",
            "dropoff_datetime": "tpep_/lpep_dropoff_datetime",
        }
    else:
        spell = {"pickup_datetime": PICKUP_COLUMNS[kind], "dropoff_datetime": DROPOFF_COLUMNS[kind]}
    return [spell.get(c, c) for c in canonical]


# --------------------------------------------------------------------------- parquet -> frame


def _from_arrow(data: pa.Table, mapping: dict[str, str], offset: int, where: str) -> pd.DataFrame:
    """Canonical frame from an arrow table holding the mapped source columns."""
    n = data.num_rows
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    try:
        for canonical in _TIME_COLUMNS:
            arrays[canonical] = pc.cast(data[mapping[canonical]], pa.timestamp("us"))
        pickup, dropoff = arrays["pickup_datetime"], arrays["dropoff_datetime"]
        elapsed_us = pc.cast(pc.subtract(dropoff, pickup), pa.int64())
        arrays["duration"] = pc.divide(pc.cast(elapsed_us, pa.float64()), float(_US_PER_MINUTE))
        for canonical in _INT_COLUMNS:
            arrays[canonical] = (
                pc.cast(data[mapping[canonical]], pa.int64())
                if canonical in mapping
                else pa.nulls(n, pa.int64())
            )
        for canonical in _FLOAT_COLUMNS:
            arrays[canonical] = (
                pc.cast(data[mapping[canonical]], pa.float64())
                if canonical in mapping
                else pa.nulls(n, pa.float64())
            )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{where}: {_first_line(exc)}; {_DTYPES_EXPECTED}") from exc
    canonical_table = pa.table({name: arrays[name] for name in CANONICAL_COLUMNS})
    frame = canonical_table.to_pandas(types_mapper=_INT_TO_NULLABLE.get)
    frame["source_row"] = np.arange(offset, offset + n, dtype=np.int64)
    return frame


_INT_TO_NULLABLE = {pa.int64(): pd.Int64Dtype()}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return _empty_frame()
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _empty_frame() -> pd.DataFrame:
    """Zero rows with the canonical columns and dtypes."""
    empty = pa.table(
        {
            "pickup_datetime": pa.array([], pa.timestamp("us")),
            "dropoff_datetime": pa.array([], pa.timestamp("us")),
            "PULocationID": pa.array([], pa.int64()),
            "DOLocationID": pa.array([], pa.int64()),
        }
    )
    return _from_arrow(empty, {name: name for name in empty.column_names}, 0, "empty input")


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class _SqlSource:
    """A checked query over a SQL table: the columns exist, the rows have a stable order."""

    engine: Any
    query: Any
    where: str

    @classmethod
    def open(cls, url: str, kind: TaxiType | None, when: Month | None, table: str) -> _SqlSource:
        import sqlalchemy as sa

        engine, shown = _engine(url)
        schema, _, name = table.rpartition(".")
        where = f"table {table!r} in {shown}"
        try:
            inspector = sa.inspect(engine)
            if not inspector.has_table(name, schema=schema or None):
                tables = ", ".join(inspector.get_table_names(schema=schema or None)) or "none"
                raise DataError(f"no table {table!r} in {shown}; tables there: {tables}")
            names = [c["name"] for c in inspector.get_columns(name, schema=schema or None)]
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise DataError(f"cannot read {where}: {_first_line(exc)}") from exc
        except DataError:
            engine.dispose()
            raise
        mapping = _resolve(names, kind, where)
        selected: list[Any] = [
            sa.column(source).label(canonical) for canonical, source in mapping.items()
        ]
        query = sa.select(*selected).select_from(sa.table(name, schema=schema or None))
        if when is not None:
            pickup = sa.column(mapping["pickup_datetime"], sa.DateTime())
            query = query.where(pickup >= when.start, pickup < when.end)
        by_lower = {n.lower(): n for n in names}
        key = next((by_lower[k] for k in _SQL_KEYS if k in by_lower), None)
        if key is not None:
            order: list[Any] = [sa.column(key)]
        elif engine.dialect.name == "sqlite":
            order = [sa.literal_column("rowid")]
        else:
            # No key: order by everything read; rows equal in all of it are interchangeable.
            order = [sa.column(source) for source in mapping.values()]
        return cls(engine, query.order_by(*order), where)

    def frames(self, batch_size: int | None) -> Iterator[pd.DataFrame]:
        """Canonical frames of at most ``batch_size`` rows (one frame if None)."""
        import sqlalchemy as sa

        offset = 0
        try:
            with self.engine.connect() as connection:
                streaming = connection.execution_options(stream_results=True)
                if batch_size is None:
                    chunks: Iterator[pd.DataFrame] = iter([pd.read_sql(self.query, streaming)])
                else:
                    chunks = pd.read_sql(self.query, streaming, chunksize=batch_size)
                for chunk in chunks:
                    if chunk.empty:
                        continue
                    yield _from_sql_chunk(chunk, offset, self.where)
                    offset += len(chunk)
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"cannot read {self.where}: {_first_line(exc)}") from exc
        finally:
            self.engine.dispose()


def _engine(url: str) -> tuple[Any, str]:
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        expected = "expected e.g. sqlite:///trips.db"
        raise DataError(f"cannot parse database URL {mask_url(url)!r}; {expected}") from exc
    shown = mask_url(url)
    # SQLite would silently create an empty database for a mistyped path.
    database = parsed.database
    is_file_db = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if is_file_db and not Path(str(database)).is_file():
        raise DataError(f"no SQLite database file at {database} (from {shown})")
    try:
        return sa.create_engine(parsed), shown
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        raise DataError(
            f"cannot open {shown}: {_first_line(exc)}; expected sqlite:///... or postgresql+psycopg://..."
        ) from exc


def _from_sql_chunk(chunk: pd.DataFrame, offset: int, where: str) -> pd.DataFrame:
    chunk = chunk.reset_index(drop=True)
    n = len(chunk)
    out: dict[str, pd.Series] = {}
    try:
        for name in _TIME_COLUMNS:
            times = pd.to_datetime(chunk[name], format="ISO8601")
            if isinstance(times.dtype, pd.DatetimeTZDtype):
                times = times.dt.tz_localize(None)
            out[name] = times.astype("datetime64[us]")
        elapsed = out["dropoff_datetime"] - out["pickup_datetime"]
        out["duration"] = elapsed.dt.total_seconds() / 60.0
        for name in (*_INT_COLUMNS, *_FLOAT_COLUMNS):
            dtype: Any = pd.Int64Dtype() if name in _INT_COLUMNS else np.dtype("float64")
            values = chunk[name] if name in chunk.columns else pd.Series(np.full(n, np.nan))
            out[name] = pd.to_numeric(values).astype(dtype)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: {_first_line(exc)}; {_DTYPES_EXPECTED}") from exc
    out["source_row"] = pd.Series(np.arange(offset, offset + n, dtype=np.int64))
    return pd.DataFrame({name: out[name] for name in _OUTPUT_COLUMNS})
