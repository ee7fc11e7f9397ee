"""The Spark engine's benchmark (``bench/batch.py --engine spark``): side by side in one process,
on one ``local[2]`` session and one input month (default 15M rows: five 3M-row files, one glob):

1. ridecast's Spark engine (``score_month_spark``: predictions, rejects, staged commit);
2. the anchor: MLflow's ``mlflow.pyfunc.spark_udf`` over the same registered model, on the rows
   ridecast scores (the same checks as Spark SQL), writing the same columns;
3. ridecast's local engine (``score_month``, in this process, the session idle);
4. the floor: Spark reads the same columns, does arithmetic, and writes as many columns back.

Memory: while each contender runs, the resident memory of the JVM (driver and executors in local
mode) and of Spark's Python workers is sampled every 0.2 s; the peaks are printed. The Spark
engine is also run on one 3M-row file, to compare its peak with the 15M-row run's. Before the
first run the Spark engine scores the 3M-row file once, unmeasured: Python workers start and
import their modules once per session, which no contender should be charged for.

Each run prints its own ratios (contenders of one run share the machine's load of the moment);
the table at the end gives the median and the spread over the runs.

    .venv/bin/python bench/batch.py --engine spark --repeats 2
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

MONTH_TEXT = "2025-02"
PER_FILE = 3_000_000


class PeakMemory:
    """Peak RSS (MB), while running, of the JVM and of the Python workers that work for this job.

    Spark keeps idle Python workers for reuse, so a worker that ran an earlier contender (e.g.
    MLflow's spark_udf, which imports MLflow into it) stays alive; only workers whose CPU time
    grows during this job are counted: their sum, and the largest single one."""

    def __init__(self) -> None:
        self.jvm = self.workers = self.worker_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu: dict[int, float] = {}

    def _sample(self) -> None:
        me = psutil.Process()
        first = True
        while first or not self._stop.wait(0.2):
            jvm = workers = biggest = 0
            for child in me.children(recursive=True):
                try:
                    with child.oneshot():
                        rss = child.memory_info().rss
                        if child.name() == "java":
                            jvm += rss
                            continue
                        if "pyspark" not in " ".join(child.cmdline()):
                            continue
                        cpu = sum(child.cpu_times()[:2])
                except psutil.Error:
                    continue
                if first or cpu <= self._cpu.setdefault(child.pid, cpu):
                    self._cpu.setdefault(child.pid, cpu)
                    continue  # idle since the job started
                workers += rss
                biggest = max(biggest, rss)
            first = False
            self.jvm = max(self.jvm, jvm / 2**20)
            self.workers = max(self.workers, workers / 2**20)
            self.worker_max = max(self.worker_max, biggest / 2**20)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_spark_bench(rows: int, repeats: int, work: Path) -> None:
    from batch import prepare  # bench/batch.py: synthesize the month, train the champion

    files = max(1, math.ceil(rows / PER_FILE))
    per_file = min(rows, PER_FILE)
    total = per_file * files
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "RIDECAST_HOME": str(work / "home"),
        "RIDECAST_DATA_DIR": str(work / "home" / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'home' / 'mlflow.db'}",
    }
    os.environ.update(env)
    month_file, big_glob = prepare(work, per_file, files, dict(os.environ))

    from pyspark.sql import functions as F

    from ridecast.batch.job import score_month
    from ridecast.batch.sinks import DirectorySink
    from ridecast.batch.sources import open_source
    from ridecast.batch.spark_engine import read_rides, score_month_spark
    from ridecast.batch.spark_input import open_spark_input
    from ridecast.batch.spark_session import start_session
    from ridecast.data.schema import TaxiType, parse_month
    from ridecast.data.zones import VALID_ZONE_IDS
    from ridecast.registry import Registry
    from ridecast.settings import get_settings

    green, month = TaxiType.GREEN, parse_month(MONTH_TEXT)
    settings = get_settings()
    predictor = Registry(settings).predictor("models:/ride-duration@champion")
    spark = start_session("local[2]", app_name="ridecast bench")
    data_dir = settings.resolved_data_dir
    small = open_spark_input(
        spark, str(month_file), taxi_type=green, month=month, data_dir=data_dir
    )
    big = open_spark_input(spark, big_glob, taxi_type=green, month=month, data_dir=data_dir)
    out = work / "out"

    def ridecast_spark(trips: Any, name: str) -> Callable[[], int]:
        def run() -> int:
            sink = DirectorySink(out / name)
            return score_month_spark(spark, green, month, predictor, trips, sink).rows_read

        return run

    def local_engine() -> int:
        trips = open_source(big_glob, taxi_type=green, month=month, data_dir=data_dir)
        return score_month(green, month, predictor, trips, DirectorySink(out / "local")).rows_read

    import mlflow.pyfunc

    def spark_udf_of(model_uri: str) -> Any:
        return mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager="local")

    same_model = spark_udf_of("models:/ride-duration@champion")
    course_model = spark_udf_of(course_pyfunc_uri(work))
    base = 10**16 + month.year * 10**12 + month.month * 10**10  # ride_ids.month_base(green, …)

    def scoreable(frame: Any) -> Any:
        """The rows ridecast scores, by the same checks, in Spark SQL; with their duration."""
        minutes = (
            F.unix_micros(F.col("dropoff").cast("timestamp"))
            - F.unix_micros(F.col("pickup").cast("timestamp"))
        ) / 6e7
        zones = sorted(VALID_ZONE_IDS)
        start, end = str(month.start), str(month.end)
        return frame.withColumn("minutes", minutes).where(
            F.col("pickup").isNotNull()
            & F.col("dropoff").isNotNull()
            & (F.col("pickup") >= F.lit(start).cast("timestamp_ntz"))
            & (F.col("pickup") < F.lit(end).cast("timestamp_ntz"))
            & F.col("pu").isin(zones)
            & F.col("do").isin(zones)
            & F.col("distance").isNotNull()
            & ~F.isnan("distance")
            & (F.col("distance") >= 0)
            & F.col("minutes").between(1.0, 60.0)
        )

    def spark_udf(udf: Any, trips: Any, name: str) -> Callable[[], int]:
        return lambda: udf_job(udf, trips, name)

    def udf_job(udf: Any, trips: Any, name: str) -> int:
        rides = scoreable(read_rides(spark, trips))
        frame = rides.select(
            (F.lit(base) + F.col("source_row")).alias("ride_id"),
            F.col("pickup").alias("pickup_datetime"),
            F.col("pu").cast("int").alias("PULocationID"),
            F.col("do").cast("int").alias("DOLocationID"),
            F.col("minutes").alias("actual_duration"),
            F.col("distance").alias("trip_distance"),
        )
        predicted = udf("PULocationID", "DOLocationID", "trip_distance")
        frame = frame.withColumn("predicted_duration", predicted).drop("trip_distance")
        frame = frame.withColumn("diff", F.col("actual_duration") - F.col("predicted_duration"))
        frame = frame.withColumn("model_version", F.lit(predictor.version))
        frame = frame.withColumn("run_id", F.lit("spark-udf"))
        frame.write.mode("overwrite").parquet(str(out / name))
        return int(trips.total_rows)

    def floor() -> int:
        rides = read_rides(spark, big)
        minutes = (
            F.unix_micros(F.col("dropoff").cast("timestamp"))
            - F.unix_micros(F.col("pickup").cast("timestamp"))
        ) / 6e7
        frame = rides.select(
            (F.lit(base) + F.col("source_row")).alias("ride_id"),
            F.col("pickup").alias("pickup_datetime"),
            F.col("pu").cast("int").alias("PULocationID"),
            F.col("do").cast("int").alias("DOLocationID"),
            minutes.alias("actual_duration"),
            (F.col("distance") * 2.5 + 3.0).alias("predicted_duration"),
            (minutes - F.col("distance") * 2.5 - 3.0).alias("diff"),
            F.lit(predictor.version).alias("model_version"),
            F.lit("floor").alias("run_id"),
        )
        frame.write.mode("overwrite").parquet(str(out / "floor"))
        return big.total_rows

    small_name = f"ridecast Spark engine, {per_file // 10**6}M rows"
    course_name = f"MLflow spark_udf (course pipeline pyfunc), {per_file // 10**6}M rows"
    # The engine's two sizes first: in run 1 its Python workers have run nothing else yet
    # (spark_udf imports MLflow into the workers it uses, which Spark then reuses).
    contenders: list[tuple[str, Callable[[], int], Any]] = [
        (small_name, ridecast_spark(small, "spark-small"), small),
        (ENGINE, ridecast_spark(big, "spark"), big),
        (FLOOR, floor, big),
        (ANCHOR, spark_udf(same_model, big, "spark-udf"), big),
        (course_name, spark_udf(course_model, small, "course-udf"), small),
        (LOCAL, local_engine, big),
    ]
    print(f"warming up: ridecast Spark engine on one {per_file:,}-row file", flush=True)
    ridecast_spark(small, "spark-small")()
    results: dict[str, dict[str, Any]] = {}

    def measure(name: str, job: Callable[[], int], rows_in: int) -> None:
        with PeakMemory() as memory:
            started = time.perf_counter()
            read = job()
            wall = time.perf_counter() - started
        assert read == rows_in, f"{name} read {read:,} rows, expected {rows_in:,}"
        entry = results.setdefault(
            name, {"rows": rows_in, "walls": [], "jvm": [], "workers": [], "worker_max": []}
        )
        entry["walls"].append(wall)
        entry["jvm"].append(memory.jvm)
        entry["workers"].append(memory.workers)
        entry["worker_max"].append(memory.worker_max)
        print(
            f"  {name:36} {wall:7.2f} s  {rows_in / wall:>11,.0f} rows/s  "
            f"JVM {memory.jvm:5.0f} MB  Python workers {memory.workers:5.0f} MB "
            f"(largest {memory.worker_max:4.0f} MB)",
            flush=True,
        )

    for repeat in range(repeats):
        print(f"run {repeat + 1} of {repeats}, {total:,} rows", flush=True)
        for name, job, trips in contenders:
            measure(name, job, trips.total_rows)
        _print_ratios(results, repeat, small_name, course_name)
    spark.stop()
    _print_results(results, total, small_name, course_name)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    (work / "results-spark.json").write_text(json.dumps({"date": stamp} | results, indent=1))


ENGINE, ANCHOR = "ridecast Spark engine", "MLflow spark_udf (same model)"
FLOOR, LOCAL = "Spark read+arithmetic+write floor", "ridecast local engine"


def _print_ratios(results: dict[str, dict[str, Any]], run: int, small: str, course: str) -> None:
    def rate(name: str) -> float:
        return float(results[name]["rows"] / results[name]["walls"][run])

    engine = rate(ENGINE)
    print(
        f"  run {run + 1}: engine ÷ spark_udf {engine / rate(ANCHOR):.2f}×, floor ÷ engine "
        f"{rate(FLOOR) / engine:.2f}×, engine ÷ local engine {engine / rate(LOCAL):.2f}×, "
        f"engine ÷ course pyfunc spark_udf (3M) {rate(small) / rate(course):.2f}×",
        flush=True,
    )


def course_pyfunc_uri(work: Path) -> str:
    """The course's pipeline as a pyfunc (bench/baselines/course_pyfunc.py), logged once."""
    marker = work / "home" / "course-pyfunc.txt"  # wiped with the home it was logged in
    if not marker.exists():
        sys.path.insert(0, str(Path(__file__).parent / "baselines"))
        from course_pyfunc import log_course_pyfunc

        artifacts = work / "home" / "course-pyfunc"
        marker.write_text(log_course_pyfunc("models:/ride-duration@champion", artifacts))
    return marker.read_text().strip()


def _print_results(
    results: dict[str, dict[str, Any]], total: int, small_name: str, course_name: str
) -> None:
    def rate(name: str) -> float:
        return float(results[name]["rows"] / statistics.median(results[name]["walls"]))

    print(f"\n| contender ({total:,}-row month unless said, local[2]) | runs "
          "| wall s, median (min–max) | rows/s | JVM peak MB | busy Python workers peak MB "
          "(largest one) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, entry in results.items():
        walls = entry["walls"]
        print(
            f"| {name} | {len(walls)} | {statistics.median(walls):.2f} "
            f"({min(walls):.2f}–{max(walls):.2f}) | {rate(name):,.0f} | "
            f"{max(entry['jvm']):.0f} | {max(entry['workers']):.0f} "
            f"({max(entry['worker_max']):.0f}) |"
        )

    def per_run(top: str, bottom: str) -> str:
        ratios = [
            (results[bottom]["walls"][i] / results[top]["walls"][i])
            for i in range(len(results[top]["walls"]))
        ]
        return f"{statistics.median(ratios):.2f}× (runs {min(ratios):.2f}–{max(ratios):.2f})"

    big, small = results[ENGINE], results[small_name]
    print("\ngoals (ratios of rows/s within each run; median and spread over the runs):")
    print(f"  Spark engine ÷ spark_udf: {per_run(ENGINE, ANCHOR)} (goal ≥ 5×)")
    print(f"  floor ÷ Spark engine: {per_run(FLOOR, ENGINE)} (goal ≤ 3×)")
    print(f"  Spark engine ÷ local engine: {per_run(ENGINE, LOCAL)}")
    print(
        f"  Spark engine ÷ spark_udf over the course's pipeline pyfunc, both "
        f"{small_name.split(', ')[1]}: {per_run(small_name, course_name)} (the goal's anchor)"
    )
    names = {"worker_max": "largest Python worker", "workers": "busy Python workers", "jvm": "JVM"}
    for what, label in names.items():
        print(
            f"  peak {label} memory in run 1 (workers that ran only the engine), "
            f"{total // 10**6}M vs {small_name.split(', ')[1]}: {big[what][0]:.0f} MB vs "
            f"{small[what][0]:.0f} MB ({big[what][0] / max(small[what][0], 1):.2f}×; goal flat)"
        )
