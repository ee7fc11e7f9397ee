"""Where a Spark run builds a month's output before it is swapped in whole.

The local folder sink's layout, lock and swap, with Spark's files put in place:

    <sink>/.staging/<run_id>/
        pid                    who runs it, touched while it runs (for the staging clean-up)
        spark-predictions/     Spark's writer output (part-*.parquet, its own _temporary/)
        rejects/               one file per task: part-<partition>.parquet
        output=<stem>/         what is swapped in: part-<n>.parquet, _rejects.parquet, _run.json

The month lock (:mod:`ridecast.batch.month_lock`) is held from the start to the swap
(:func:`ridecast.batch.swap.swap_in`), exactly as the local engine's folder sink holds it, so
the two engines never write the same month of the same version at once. The staging folder must
be a path the driver and every executor see (local mode, or a mount shared on a cluster).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ridecast.batch.month_lock import FileLock, lock_name
from ridecast.batch.outputs import REJECT_SCHEMA, MonthKey
from ridecast.batch.sinks import (
    PREDICTIONS_FILE,
    RECORD_FILE,
    REJECTS_FILE,
    DirectorySink,
    StagingHeartbeat,
    remove_abandoned_staging,
)
from ridecast.batch.swap import swap_in
from ridecast.errors import DataError


class SparkStaging:
    """One run's staging folder, with the month lock held until :meth:`commit` or
    :meth:`abort`."""

    def __init__(self, sink: DirectorySink, key: MonthKey) -> None:
        self.sink, self.key = sink, key
        try:
            sink.root.mkdir(parents=True, exist_ok=True)
            self.lock: FileLock | None = FileLock(
                sink.root,
                lock_name(key),
                f"{key.taxi_type.value} {key.month} ({key.stem}) in {sink.root}",
                key.run_id,
            )
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {sink.root}: {exc}") from exc
        self.heartbeat: StagingHeartbeat | None = None
        try:
            remove_abandoned_staging(sink.root / ".staging")
            self.folder = (sink.root / ".staging" / key.run_id).resolve()
            self.folder.mkdir(parents=True)
            self.heartbeat = StagingHeartbeat(self.folder)  # its owner file, touched while it runs
            self.predictions = self.folder / "spark-predictions"
            self.rejects = self.folder / "rejects"
            self.rejects.mkdir()
            self.staged = self.folder / sink.output(key).name
            self.staged.mkdir()
        except BaseException as exc:
            self._release()
            if isinstance(exc, OSError):
                raise DataError(f"cannot write to sink folder {sink.root}: {exc}") from exc
            raise

    @property
    def rejects_file(self) -> Path:
        return self.staged / REJECTS_FILE

    def prediction_files(self) -> list[Path]:
        return sorted(self.staged.glob("part-*.parquet"))

    def collect_files(self) -> None:
        """Spark's part files become ``part-<n>.parquet`` (its ``_SUCCESS`` and checksum files
        are dropped) and the tasks' rejects one ``_rejects.parquet`` in ride id order, so
        readers see the local engine's layout."""
        parts = sorted(self.predictions.glob("part-*.parquet"))
        for index, part in enumerate(parts):
            part.rename(self.staged / f"part-{index}.parquet")
        if not parts:
            pq.write_table(self.key.schema.empty_table(), self.staged / PREDICTIONS_FILE)
        tables = [pq.read_table(p, schema=REJECT_SCHEMA) for p in self.rejects.glob("part-*")]
        rejects = pa.concat_tables(tables) if tables else REJECT_SCHEMA.empty_table()
        pq.write_table(rejects.sort_by("ride_id"), self.rejects_file)
        shutil.rmtree(self.predictions, ignore_errors=True)
        shutil.rmtree(self.rejects, ignore_errors=True)

    def commit(self, record: dict[str, Any]) -> None:
        """Write the run's record and swap the month's folder in; the lock is released."""
        try:
            (self.staged / RECORD_FILE).write_text(json.dumps(record, indent=1))
            swap_in(self.staged, self.sink.output(self.key))
        except OSError as exc:
            raise DataError(f"cannot write to sink folder {self.sink.root}: {exc}") from exc
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._release()

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
