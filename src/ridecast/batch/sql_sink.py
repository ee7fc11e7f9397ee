"""The SQL sink: a month's rows in a SQLite or PostgreSQL table, replaced in one transaction.

Chunks go to a staging area (PostgreSQL: the target tables themselves, inside the transaction
that first deleted the month's previous rows; SQLite: TEMP tables of the job's connection), then
one transaction swaps them in and records the run in ``ride_batch_runs``. Readers see the old
rows until it commits; a killed job leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ridecast.batch import ride_ids
from ridecast.batch.month_lock import FileLock, lock_name, lock_postgres
from ridecast.batch.outputs import REJECT_SCHEMA, MonthKey
from ridecast.errors import DataError
from ridecast.urls import mask_url

_TS = pa.timestamp("us")
RUNS_TABLE = "ride_batch_runs"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

_SQL_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE PRECISION",
    pa.string(): "TEXT",
    _TS: "TIMESTAMP",
}


def _quote(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


def _table_ddl(name: str, schema: pa.Schema, key: tuple[str, ...]) -> str:
    columns = ", ".join(
        f"{_quote(f.name)} {_SQL_TYPES[f.type]}"
        + (" NOT NULL" if f.name in ("ride_id", "model_version", *key) else "")
        for f in schema
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {_quote(name)} ({columns}, "
        f"PRIMARY KEY (ride_id, {', '.join(key)}))"
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
                f"cannot parse sink URL {mask_url(url)!r}; expected e.g. sqlite:///scores.db"
            ) from exc
        self.backend = parsed.get_backend_name()
        self.shown = mask_url(url)
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

    def _create_tables(self, connection: Any, key: MonthKey | None = None) -> None:
        statements = [_table_ddl(self.rejects_table, REJECT_SCHEMA, ("model_version",)), _RUNS_DDL]
        if key is not None:
            statements.insert(0, _table_ddl(self.table, key.schema, tuple(key.match)))
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
                    key.slot,
                ),
            ).fetchone()
            return dict(json.loads(row[0])) if row else None
        except (sqlite3.Error, _pg_error()) as exc:
            raise DataError(f"cannot read runs from {self.shown}: {_first_line(exc)}") from exc
        finally:
            connection.close()

    def open_month(self, key: MonthKey) -> _SqlMonthWriter:
        what = f"{key.taxi_type.value} {key.month} ({key.stem}) in {self}"
        lock: FileLock | None = None
        if self.backend == "sqlite":
            database = Path(self.target).resolve()
            folder = database.parent / f".{database.name}.locks"
            lock = FileLock(folder, lock_name(key), what, key.run_id)
        connection = None
        try:
            connection = self._connect()
            if self.backend == "postgresql":
                lock_postgres(connection, f"{self.table}/{lock_name(key)}", what)
            self._create_tables(connection, key)
            return _SqlMonthWriter(self, connection, key, lock)
        except BaseException as exc:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()  # and with it PostgreSQL's lock
            if lock is not None:
                lock.release()
            if isinstance(exc, (sqlite3.Error, _pg_error())):
                raise DataError(f"cannot prepare {self}: {_first_line(exc)}") from exc
            raise


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

    def __init__(
        self, sink: SqlSink, connection: Any, key: MonthKey, lock: FileLock | None
    ) -> None:
        self.sink, self.connection, self.key, self.lock = sink, connection, key, lock
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
        """The month's rows of this run's slot (a version, a comparison or a rollout)."""
        low, high = ride_ids.month_range(self.key.taxi_type, self.key.month)
        mark = "%s" if self.pg else "?"
        match = self.key.match if target == self.sink.table else {"model_version": self.key.slot}
        where = " AND ".join(f"{_quote(column)} = {mark}" for column in match)
        return (
            f"DELETE FROM {_quote(target)} WHERE {where} "
            f"AND ride_id >= {mark} AND ride_id < {mark}",
            (*match.values(), low, high),
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
            self.key.slot,
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
            if self.lock is not None:
                self.lock.release()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.rollback()
        with contextlib.suppress(Exception):
            self.connection.close()
        if self.lock is not None:
            self.lock.release()


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
