"""Where a month's predictions go: a partitioned parquet folder or a SQL table, written atomically.

Every sink stages the whole month first and makes it visible in one step, so readers see either
the previous results or the complete new ones, never a part, even if the job is killed:

- a folder gets ``taxi_type=green/year=2025/month=02/output=<model>-v<version>/``, holding the
  predictions (``part-0.parquet``), the rejects (``_rejects.parquet``) and the run's record
  (``_run.json``). It is written under ``.staging/<run_id>/`` and swapped into place as one
  folder (:func:`ridecast.batch.swap.swap_in`), so predictions, rejects and record always belong
  to the same run;
- a database (SQLite or PostgreSQL) gets rows in a table keyed by ``(ride_id, model_version)``:
  chunks go to a temporary staging table, then one transaction deletes the month's previous rows
  of that version, inserts the new ones, and records the run in ``ride_batch_runs``.

Scoring a month again with the same model version replaces its rows; other versions' rows stay.
A comparison (``--candidate``) or a run that followed a rollout has its own columns and its own
place (``comparisons/`` and ``rollouts/`` in a folder, its own table in a database), keyed by its
versions or its rollout id (:class:`ridecast.batch.outputs.MonthKey`), so it replaces only itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ridecast.batch.month_lock import FileLock, lock_name
from ridecast.batch.outputs import (
    PREDICTION_SCHEMA,
    REJECT_SCHEMA,
    MonthKey,
)
from ridecast.batch.sql_sink import SqlSink
from ridecast.batch.swap import swap_in
from ridecast.errors import DataError

__all__ = [
    "PREDICTION_SCHEMA",
    "REJECT_SCHEMA",
    "DirectorySink",
    "MonthKey",
    "SqlSink",
    "open_sink",
]

# Where each kind of run goes in a folder sink.
_FOLDERS = {"score": "", "compare": "comparisons", "rollout": "rollouts"}
# A run's folder: readers of the dataset (pyarrow, pandas, Spark) skip names starting with "_".
PREDICTIONS_FILE, REJECTS_FILE, RECORD_FILE = "part-0.parquet", "_rejects.parquet", "_run.json"


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

    def partition(self, key: MonthKey) -> Path:
        """The month's folder, which holds one ``output=<stem>`` folder per version (or
        comparison, or rollout run) scored."""
        return (
            self.root
            / _FOLDERS[key.kind]
            / f"taxi_type={key.taxi_type.value}"
            / f"year={key.month.year:04d}"
            / f"month={key.month.month:02d}"
        )

    def output(self, key: MonthKey) -> Path:
        """The run's folder: its predictions, rejects and record, swapped in as one."""
        return self.partition(key) / f"output={key.stem}"

    def path(self, key: MonthKey, *, rejects: bool = False) -> Path:
        return self.output(key) / (REJECTS_FILE if rejects else PREDICTIONS_FILE)

    def completed(self, key: MonthKey) -> dict[str, Any] | None:
        record = self.output(key) / RECORD_FILE
        if not (record.is_file() and self.path(key).is_file()):
            return None
        try:
            return dict(json.loads(record.read_text()))
        except (OSError, ValueError):
            return None

    def open_month(self, key: MonthKey) -> MonthWriter:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.root, lock_name(key), self._described(key), key.run_id)
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {self.root}: {exc}") from exc
        try:
            remove_abandoned_staging(self.root / ".staging")
            return _DirectoryMonthWriter(self, key, lock)
        except BaseException as exc:
            lock.release()
            if isinstance(exc, OSError):
                raise DataError(f"cannot write to sink folder {self.root}: {exc}") from exc
            raise

    def _described(self, key: MonthKey) -> str:
        return f"{key.taxi_type.value} {key.month} ({key.stem}) in {self.root}"


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # Dictionary-encode only the text columns: trying it on ids and float columns (which fall back
    # to plain encoding anyway) costs more time than the rest of the write.
    text = [f.name for f in schema if f.type == pa.string()]
    return pq.ParquetWriter(path, schema, use_dictionary=text)


# A staging folder that says nothing of its owner, or whose owner is on another host (a volume
# shared between machines), is removed only once nothing in it has been touched for this long: a
# job there may be alive, and this process cannot see its pid. A live job touches its owner file
# every HEARTBEAT_SECONDS, however long it computes without writing.
STALE_STAGING_SECONDS = 24 * 3600.0
HEARTBEAT_SECONDS = 60.0


def owner_tag() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


class StagingHeartbeat:
    """Writes a staging folder's owner file (``host pid``) and touches it every ``interval``
    seconds until :meth:`stop`, so that a clean-up on another host sees the folder in use."""

    def __init__(self, folder: Path, interval: float = HEARTBEAT_SECONDS) -> None:
        self.path = folder / "pid"
        self.path.write_text(owner_tag())
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(interval,), name="ridecast-staging-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            with contextlib.suppress(OSError):  # the folder is being removed: nothing to keep
                os.utime(self.path)

    def stop(self) -> None:
        self._stopped.set()


def _last_touched(folder: Path) -> float:
    """The newest modification time of ``folder`` and everything under it (OSError if it goes)."""
    newest = folder.stat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):  # removed while we look
                newest = max(newest, os.stat(os.path.join(parent, name)).st_mtime)
    return newest


def remove_abandoned_staging(staging_root: Path) -> None:
    """Delete staging folders of runs that are certainly gone: started on this host by a
    process that no longer exists, or with nothing in them (its owner's heartbeat included)
    touched for :data:`STALE_STAGING_SECONDS`."""
    if not staging_root.is_dir():
        return
    host = socket.gethostname()
    now = time.time()
    for folder in staging_root.iterdir():
        try:
            idle = now - _last_touched(folder)
        except OSError:
            continue  # removed meanwhile, or being created: leave it
        try:
            owner_host, _, pid_text = (folder / "pid").read_text().strip().rpartition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            owner_host, pid = "", None
        if pid is not None and owner_host in (host, ""):  # "": a folder from before hosts
            try:
                os.kill(pid, 0)
                continue  # its job runs
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            except OSError:  # alive, but not ours to signal
                continue
        if idle > STALE_STAGING_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)


class _DirectoryMonthWriter:
    def __init__(self, sink: DirectorySink, key: MonthKey, lock: FileLock) -> None:
        self.sink, self.key, self.lock = sink, key, lock
        self.staging = sink.root / ".staging" / key.run_id
        self.staging.mkdir(parents=True)
        self.heartbeat = StagingHeartbeat(self.staging)
        try:
            self.staged = self.staging / sink.output(key).name
            self.staged.mkdir()
            self._predictions = _parquet_writer(self.staged / PREDICTIONS_FILE, key.schema)
            self._rejects = _parquet_writer(self.staged / REJECTS_FILE, REJECT_SCHEMA)
        except BaseException:
            self.heartbeat.stop()
            raise

    def write(self, predictions: pa.Table, rejects: pa.Table) -> None:
        if predictions.num_rows:
            self._predictions.write_table(predictions)
        if rejects.num_rows:
            self._rejects.write_table(rejects)

    def commit(self, record: dict[str, Any]) -> None:
        self._predictions.close()
        self._rejects.close()
        try:
            (self.staged / RECORD_FILE).write_text(json.dumps(record, indent=1))
            swap_in(self.staged, self.sink.output(self.key))
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {self.sink.root}: {exc}") from exc
        finally:
            self.heartbeat.stop()
            shutil.rmtree(self.staging, ignore_errors=True)
            self.lock.release()

    def abort(self) -> None:
        for writer in (self._predictions, self._rejects):
            with contextlib.suppress(Exception):
                writer.close()
        self.heartbeat.stop()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.release()
