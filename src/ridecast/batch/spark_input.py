"""Where the Spark engine's rides come from: TLC parquet files, local or on any Hadoop file
system the cluster reads (``hdfs://``, ``s3a://``, ``gs://``, ``abfs://``, ``file://``…).

A source is named as for the local engine: a file, a folder holding the month's TLC file (or a
``<taxi type>/`` folder that does), or a glob. The driver resolves it to files in sorted order and
counts each file's rows from its parquet footer, so row ``r`` of the ``i``-th file is the month's
row ``first_rows[i] + r``: the local engine's ``source_row``, hence the same ride ids.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ridecast.batch.sources import ParquetSource, open_source, trip_columns
from ridecast.data.readers import month_file_name
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SQL = ("sqlite", "postgresql", "mysql")


@dataclass(frozen=True)
class SparkInput:
    paths: list[str]  # URIs, as Spark reads them, in the month's row order
    columns: list[list[str]]  # per file: pickup, dropoff, PU, DO and distance, as spelled there
    first_rows: list[int]  # per file: the month's row number of its first row
    total_rows: int

    def __str__(self) -> str:
        first = self.paths[0].removeprefix("file://")
        if len(self.paths) == 1:
            return first
        return f"{len(self.paths)} files ({first.rsplit('/', 1)[0]})"


def is_hadoop_path(spec: str) -> bool:
    return bool(_URL.match(spec)) and not spec.startswith(_SQL)


def from_parquet_source(source: ParquetSource) -> SparkInput:
    starts = [sum(source.file_rows[:i]) for i in range(len(source.file_rows))]
    return SparkInput(
        # As URIs: a bare path would be read from the cluster's default file system (HDFS).
        [path.resolve().as_uri() for path in source.files],
        source.columns,
        starts,
        sum(source.file_rows),
    )


def open_spark_input(
    spark: SparkSession | None,
    spec: str | None,
    *,
    taxi_type: TaxiType,
    month: Month,
    data_dir: Path,
) -> SparkInput:
    """The month's files; DataError naming what was looked for. ``spark`` is needed only for a
    Hadoop path (listing and footers go through the cluster's file systems)."""
    text = os.fspath(spec) if spec is not None else None
    if text is not None and _URL.match(text) and text.startswith(_SQL):
        raise DataError(
            f"source {text!r} is a database; the Spark engine reads TLC parquet files or folders "
            "(local or on a Hadoop file system); score a SQL table with --engine local"
        )
    if text is not None and is_hadoop_path(text):
        if spark is None:
            raise DataError(f"source {text!r} needs a Spark session to be listed")
        return _hadoop_input(spark, text, taxi_type, month)
    source = open_source(text, taxi_type=taxi_type, month=month, data_dir=data_dir)
    assert isinstance(source, ParquetSource)  # a URL was handled above
    return from_parquet_source(source)


def _hadoop_input(spark: SparkSession, spec: str, taxi_type: TaxiType, month: Month) -> SparkInput:
    context = spark.sparkContext
    jvm = context._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path
    path = hadoop_path(spec)
    try:
        fs = path.getFileSystem(context._jsc.hadoopConfiguration())
        statuses = list(fs.globStatus(path) or [])
        if len(statuses) == 1 and statuses[0].isDirectory():
            name = month_file_name(taxi_type, month)
            found = [
                hadoop_path(spec.rstrip("/") + "/" + inner)
                for inner in (name, f"{taxi_type.value}/{name}")
            ]
            statuses = [fs.getFileStatus(p) for p in found if fs.isFile(p)][:1]
            if not statuses:
                raise DataError(
                    f"no {taxi_type.value} trip file for {month} in {spec}: looked for "
                    f"{spec.rstrip('/')}/{name} and {spec.rstrip('/')}/{taxi_type.value}/{name}"
                )
    except DataError:
        raise
    except Exception as exc:  # py4j errors: unknown scheme, no credentials, unreachable
        raise DataError(f"cannot list source {spec}: {str(exc).strip().splitlines()[0]}") from exc
    files = sorted(str(s.getPath().toString()) for s in statuses if s.isFile())
    if not files:
        raise DataError(f"no files at {spec!r}; expected TLC parquet files")
    columns, counts = [], []
    for file in files:
        try:
            frame = spark.read.parquet(file)
            columns.append(trip_columns(frame.schema.names, taxi_type, file))
            counts.append(frame.count())  # answered from the footers
        except DataError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read {file} as parquet: {first}") from exc
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return SparkInput(files, columns, starts, sum(counts))
