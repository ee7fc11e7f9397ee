"""Where a month's predictions go: a partitioned parquet folder or a SQL table, written atomically.

Every sink stages the whole month first and makes it visible in one step, so readers see either
the previous results or the complete new ones, never a part, even if the job is killed:

- a folder gets ``taxi_type=green/year=2025/month=02/<model>-v<version>.parquet`` (rejects under
  ``rejects/`` with the same layout), written under ``.staging/<run_id>/`` and then renamed into
  place; a record of the finished run goes to ``_runs/``;
- a database (SQLite or PostgreSQL) gets rows in a table keyed by ``(ride_id, model_version)``:
  chunks go to a temporary staging table, then one transaction deletes the month's previous rows
  of that version, inserts the new ones, and records the run in ``ride_batch_runs``.

Scoring a month again with the same model version replaces its rows; other versions' rows stay.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ridecast.batch import ride_ids
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError

_TS = pa.timestamp("us")
PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("ride_id", pa.int64(), nullable=False),
        ("pickup_datetime", _TS),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("actual_duration", pa.float64()),
        ("predicted_duration", pa.float64()),
        ("diff", pa.float64()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
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
RUNS_TABLE = "ride_batch_runs"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


@dataclass(frozen=True)
class MonthKey:
    """One scoring of one month: what is replaced together, and what a rerun is compared with."""

    taxi_type: TaxiType
    month: Month
    model_name: str
    model_version: str
    run_id: str


class MonthWriter(Protocol):
    def write(self, predictions: pa.Table, rejects: pa.Table) -> None: ...
    def commit(self, record: dict[str, Any]) -> None: ...
    def abort(self) -> None: ...


class Sink(Protocol):
    def open_month(self, key: MonthKey) -> MonthWriter: ...
    def completed(self, key: MonthKey) -> dict[str, Any] | None: ...


def open_sink(
    spec: str | os.PathLike[str],
    *,
    table: str = "ride_predictions",
    rejects_table: str = "ride_rejects",
) -> DirectorySink | SqlSink:
    """A folder path, or a SQLAlchemy URL (``sqlite:///scores.db``, ``postgresql+psycopg://…``)."""
    text = os.fspath(spec)
    if "://" in text:
        return SqlSink(text, table=table, rejects_table=rejects_table)
    return DirectorySink(Path(text))


# --------------------------------------------------------------------------- parquet folder


class DirectorySink:
    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise DataError(f"sink {root} is a file; expected a folder (or a database URL)")
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def partition(self, key: MonthKey, *, rejects: bool = False) -> Path:
        base = self.root / "rejects" if rejects else self.root
        return (
            base
            / f"taxi_type={key.taxi_type.value}"
            / f"year={key.month.year:04d}"
            / f"month={key.month.month:02d}"
        )

    def path(self, key: MonthKey, *, rejects: bool = False) -> Path:
        return (
            self.partition(key, rejects=rejects) / f"{key.model_name}-v{key.model_version}.parquet"
        )

    def _record_path(self, key: MonthKey) -> Path:
        name = f"{key.taxi_type.value}-{key.month}-{key.model_name}-v{key.model_version}.json"
        return self.root / "_runs" / name

    def completed(self, key: MonthKey) -> dict[str, Any] | None:
        record = self._record_path(key)
        if not (record.is_file() and self.path(key).is_file()):
            return None
        try:
            return dict(json.loads(record.read_text()))
        except (OSError, ValueError):
            return None

    def open_month(self, key: MonthKey) -> MonthWriter:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_staging(self.root / ".staging")
            return _DirectoryMonthWriter(self, key)
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {self.root}: {exc}") from exc


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # Dictionary-encode only the text columns: trying it on ids and float columns (which fall back
    # to plain encoding anyway) costs more time than the rest of the write.
    text = [f.name for f in schema if f.type == pa.string()]
    return pq.ParquetWriter(path, schema, use_dictionary=text)


def _remove_abandoned_staging(staging_root: Path) -> None:
    """Delete staging folders of runs whose process is gone (killed mid-month)."""
    if not staging_root.is_dir():
        return
    for folder in staging_root.iterdir():
        try:
            pid = int((folder / "pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)


class _DirectoryMonthWriter:
    def __init__(self, sink: DirectorySink, key: MonthKey) -> None:
        self.sink, self.key = sink, key
        self.staging = sink.root / ".staging" / key.run_id
        self.staging.mkdir(parents=True)
        (self.staging / "pid").write_text(str(os.getpid()))
        self._predictions = _parquet_writer(self.staging / "predictions.parquet", PREDICTION_SCHEMA)
        self._rejects = _parquet_writer(self.staging / "rejects.parquet", REJECT_SCHEMA)

    def write(self, predictions: pa.Table, rejects: pa.Table) -> None:
        if predictions.num_rows:
            self._predictions.write_table(predictions)
        if rejects.num_rows:
            self._rejects.write_table(rejects)

    def commit(self, record: dict[str, Any]) -> None:
        self._predictions.close()
        self._rejects.close()
        try:
            for rejects, staged in ((True, "rejects.parquet"), (False, "predictions.parquet")):
                final = self.sink.path(self.key, rejects=rejects)
                final.parent.mkdir(parents=True, exist_ok=True)
                # A rename within one file system is atomic: the old file or the new, never half.
                os.replace(self.staging / staged, final)
            record_path = self.sink._record_path(self.key)
            record_path.parent.mkdir(parents=True, exist_ok=True)
            partial = record_path.with_suffix(".partial")
            partial.write_text(json.dumps(record, indent=1))
            os.replace(partial, record_path)
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {self.sink.root}: {exc}") from exc
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        for writer in (self._predictions, self._rejects):
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)


# --------------------------------------------------------------------------- SQL table

_SQL_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE PRECISION",
    pa.string(): "TEXT",
    _TS: "TIMESTAMP",
}


def _quote(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


def _table_ddl(name: str, schema: pa.Schema) -> str:
    columns = ", ".join(
        f"{_quote(f.name)} {_SQL_TYPES[f.type]}"
        + (" NOT NULL" if f.name in ("ride_id", "model_version") else "")
        for f in schema
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {_quote(name)} ({columns}, "
        f"PRIMARY KEY (ride_id, model_version))"
    )


_RUNS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (sink_table TEXT NOT NULL, taxi_type TEXT NOT NULL, "
    "month TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, "
    "run_id TEXT NOT NULL, record TEXT NOT NULL, "
    "PRIMARY KEY (sink_table, taxi_type, month, model_name, model_version))"
)


class SqlSink:
    """Rows in ``table`` and ``rejects_table`` of a SQLite or PostgreSQL database."""

    def __init__(self, url: str, *, table: str, rejects_table: str) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        for what, name in (("--sink-table", table), ("--rejects-table", rejects_table)):
            if not _IDENTIFIER.match(name):
                raise DataError(
                    f"{what} {name!r} is not a plain table name; expected letters, digits and _ "
                    "(optionally schema.table)"
                )
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DataError(
                f"cannot parse sink URL {url!r}; expected e.g. sqlite:///scores.db"
            ) from exc
        self.backend = parsed.get_backend_name()
        self.shown = parsed.render_as_string(hide_password=True)
        if self.backend == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise DataError(f"sink {self.shown} needs a file, e.g. sqlite:///scores.db")
            self.target = parsed.database
            parent = Path(parsed.database).resolve().parent
            if not parent.is_dir():
                raise DataError(f"sink {self.shown}: folder {parent} does not exist")
        elif self.backend == "postgresql":
            self.target = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        else:
            raise DataError(
                f"sink {self.shown} is not supported; expected sqlite:///FILE, "
                "postgresql+psycopg://USER@HOST/DB or a folder"
            )
        self.table, self.rejects_table = table, rejects_table

    def __str__(self) -> str:
        return f"table {self.table} in {self.shown}"

    def _connect(self) -> Any:
        try:
            if self.backend == "sqlite":
                # The job's writer thread uses it, one call at a time.
                connection = sqlite3.connect(
                    self.target, isolation_level=None, timeout=60, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                return connection
            import psycopg

            return psycopg.connect(self.target)
        except Exception as exc:
            raise DataError(f"cannot open sink {self.shown}: {_first_line(exc)}") from exc

    def _create_tables(self, connection: Any) -> None:
        statements = [
            _table_ddl(self.table, PREDICTION_SCHEMA),
            _table_ddl(self.rejects_table, REJECT_SCHEMA),
            _RUNS_DDL,
        ]
        for statement in statements:
            connection.execute(statement)
        if self.backend == "postgresql":
            connection.commit()

    def completed(self, key: MonthKey) -> dict[str, Any] | None:
        connection = self._connect()
        try:
            self._create_tables(connection)
            mark = "?" if self.backend == "sqlite" else "%s"
            row = connection.execute(
                f"SELECT record FROM {RUNS_TABLE} WHERE sink_table = {mark} AND taxi_type = {mark} "
                f"AND month = {mark} AND model_name = {mark} AND model_version = {mark}",
                (
                    self.table,
                    key.taxi_type.value,
                    str(key.month),
                    key.model_name,
                    key.model_version,
                ),
            ).fetchone()
            return dict(json.loads(row[0])) if row else None
        except (sqlite3.Error, _pg_error()) as exc:
            raise DataError(f"cannot read runs from {self.shown}: {_first_line(exc)}") from exc
        finally:
            connection.close()

    def open_month(self, key: MonthKey) -> MonthWriter:
        connection = self._connect()
        try:
            self._create_tables(connection)
            return _SqlMonthWriter(self, connection, key)
        except (sqlite3.Error, _pg_error()) as exc:
            connection.close()
            raise DataError(f"cannot prepare {self}: {_first_line(exc)}") from exc


def _pg_error() -> type[Exception]:
    try:
        import psycopg

        return psycopg.Error
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return sqlite3.Error


class _SqlMonthWriter:
    """Writes one month in one transaction, so a killed job leaves nothing behind.

    PostgreSQL: the month's previous rows of this version are deleted and the new rows COPY'd
    straight into the tables inside one transaction; until it commits, readers keep seeing the
    old rows. SQLite: chunks go to TEMP staging tables (a file of this connection, gone if the
    job dies); one short transaction then swaps them in, so the database's single write lock is
    held for the swap only.
    """

    def __init__(self, sink: SqlSink, connection: Any, key: MonthKey) -> None:
        self.sink, self.connection, self.key = sink, connection, key
        self.pg = sink.backend == "postgresql"
        targets = (sink.table, sink.rejects_table)
        if self.pg:
            self.stages = {target: _quote(target) for target in targets}
            for target in targets:
                connection.execute(*self._delete_month(target))
            return
        self.stages = {
            sink.table: "temp.ridecast_stage_predictions",
            sink.rejects_table: "temp.ridecast_stage_rejects",
        }
        for target, stage in self.stages.items():
            connection.execute(f"DROP TABLE IF EXISTS {stage}")
            connection.execute(
                f"CREATE TEMP TABLE {stage.removeprefix('temp.')} AS "
                f"SELECT * FROM {_quote(target)} WHERE 0"
            )

    def _delete_month(self, target: str) -> tuple[str, tuple[Any, ...]]:
        low, high = ride_ids.month_range(self.key.taxi_type, self.key.month)
        mark = "%s" if self.pg else "?"
        return (
            f"DELETE FROM {_quote(target)} WHERE model_version = {mark} "
            f"AND ride_id >= {mark} AND ride_id < {mark}",
            (self.key.model_version, low, high),
        )

    def write(self, predictions: pa.Table, rejects: pa.Table) -> None:
        try:
            for target, table in (
                (self.sink.table, predictions),
                (self.sink.rejects_table, rejects),
            ):
                if table.num_rows:
                    (self._copy if self.pg else self._insert)(self.stages[target], table)
        except (sqlite3.Error, _pg_error()) as exc:
            raise DataError(f"cannot write to {self.sink}: {_first_line(exc)}") from exc

    def _copy(self, stage: str, table: pa.Table) -> None:
        columns = ", ".join(_quote(name) for name in table.column_names)
        payload = _pg_binary(table)
        if payload is None:
            import pyarrow.csv as pacsv

            buffer = io.BytesIO()
            pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
            payload, form = buffer.getvalue(), "csv"
        else:
            form = "binary"
        with (
            self.connection.cursor() as cursor,
            cursor.copy(f"COPY {stage} ({columns}) FROM STDIN (FORMAT {form})") as copy,
        ):
            copy.write(payload)

    def _insert(self, stage: str, table: pa.Table) -> None:
        columns = [
            pc.strftime(column, format="%Y-%m-%d %H:%M:%S.%f") if column.type == _TS else column
            for column in table.columns
        ]
        rows = zip(*(column.to_pylist() for column in columns), strict=True)
        marks = ", ".join("?" * table.num_columns)
        self.connection.execute("BEGIN")
        self.connection.executemany(f"INSERT INTO {stage} VALUES ({marks})", rows)
        self.connection.execute("COMMIT")

    def commit(self, record: dict[str, Any]) -> None:
        mark = "%s" if self.pg else "?"
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if not self.pg:
            for target, stage in self.stages.items():
                statements.append(self._delete_month(target))
                statements.append((f"INSERT INTO {_quote(target)} SELECT * FROM {stage}", ()))
        run_key = (
            self.sink.table,
            self.key.taxi_type.value,
            str(self.key.month),
            self.key.model_name,
            self.key.model_version,
        )
        statements.append(
            (
                f"DELETE FROM {RUNS_TABLE} WHERE sink_table = {mark} AND taxi_type = {mark} "
                f"AND month = {mark} AND model_name = {mark} AND model_version = {mark}",
                run_key,
            )
        )
        statements.append(
            (
                f"INSERT INTO {RUNS_TABLE} VALUES ({', '.join([mark] * 7)})",
                (*run_key, self.key.run_id, json.dumps(record)),
            )
        )
        try:
            if not self.pg:
                self.connection.execute("BEGIN IMMEDIATE")
            for statement, params in statements:
                self.connection.execute(statement, params)
            if self.pg:
                self.connection.commit()
            else:
                self.connection.execute("COMMIT")
        except (sqlite3.Error, _pg_error()) as exc:
            with contextlib.suppress(Exception):
                self.connection.rollback()
            raise DataError(f"cannot commit to {self.sink}: {_first_line(exc)}") from exc
        finally:
            self.connection.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.rollback()
        with contextlib.suppress(Exception):
            self.connection.close()


# PostgreSQL's binary COPY: a timestamp is microseconds since 2000-01-01, numbers big-endian.
_PG_EPOCH_US = 946_684_800_000_000
_PG_FIXED = {pa.int64(): ">i8", pa.int32(): ">i4", pa.float64(): ">f8", _TS: ">i8"}


def _pg_binary(table: pa.Table) -> bytes | None:
    """The table in COPY's binary format, built as one numpy record per row (each row has the
    same layout: no nulls, and text columns holding one value each); None if that does not hold,
    and the caller falls back to CSV. Several times faster for the server to load than CSV."""
    fields: list[tuple[str, str]] = [("count", ">i2")]
    values: list[tuple[str, Any, int]] = []
    for index, column in enumerate(table.columns):
        if column.null_count:
            return None
        name = f"c{index}"
        if column.type == pa.string():
            distinct = pc.unique(column)
            if len(distinct) != 1:
                return None
            text = str(distinct[0].as_py()).encode()
            fields += [(f"n{index}", ">i4"), (name, f"S{len(text)}")]
            values.append((name, text, len(text)))
        elif column.type in _PG_FIXED:
            fields += [(f"n{index}", ">i4"), (name, _PG_FIXED[column.type])]
            array = column.to_numpy()
            if column.type == _TS:
                array = array.view(np.int64) - _PG_EPOCH_US
            values.append((name, array, np.dtype(_PG_FIXED[column.type]).itemsize))
        else:
            return None
    rows = np.empty(table.num_rows, dtype=np.dtype(fields))
    rows["count"] = table.num_columns
    for index, (name, value, size) in enumerate(values):
        rows[f"n{index}"] = size
        rows[name] = value
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
