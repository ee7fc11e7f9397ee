"""Batch scoring benchmark: ridecast against the course's score.py approach and the I/O floor.

Every contender runs as its own process, start-up included; wall time is measured around the
process and peak RSS is the process's own (``os.wait4``'s ``ru_maxrss``). Scenarios:

1. a 3-million-row synthetic green month, parquet → parquet: ridecast, the course's approach
   (``bench/baselines/score_course.py``, same registered model) and the floor (pyarrow reads the
   columns ridecast reads and writes them back, no model);
2. a 15-million-row input (five 3M-row files of the month, one glob), parquet → parquet: ridecast
   and the floor;
3. parquet → PostgreSQL (127.0.0.1 only) for the 3M and the 15M input.

Each contender runs ``--repeats`` times (interleaved); the table shows the median and the spread
(min–max). The predictions of ridecast and the baseline are joined on ride_id and must agree
within 1e-9.

    .venv/bin/python bench/batch.py                  # everything (about 10 minutes on 2 cores)
    .venv/bin/python bench/batch.py --no-postgres --repeats 2
    .venv/bin/python bench/batch.py --engine spark [--rows 3000000]   # bench/batch_spark.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MONTH = "2025-02"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FLOOR_COLUMNS = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
]


@dataclass
class Result:
    scenario: str
    contender: str
    rows: int
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss(self) -> float:
        return statistics.median(self.rss_mb)

    @property
    def rate(self) -> float:
        return self.rows / self.wall


def run_measured(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process; raises if it fails."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); see {log}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def floor_main(sources: list[str], out: str) -> None:
    """The I/O floor: read the scoring columns of each file with pyarrow, write them back."""
    import pyarrow.parquet as pq

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(sources):
        table = pq.read_table(source, columns=FLOOR_COLUMNS)
        pq.write_table(table, target / f"part-{index}.parquet")


def prepare(work: Path, rows: int, big_files: int, env: dict[str, str]) -> tuple[Path, str]:
    """Synthesize the months and train the champion once; later runs reuse them."""
    data = work / "home" / "data"
    month_file = data / f"green_tripdata_{MONTH}.parquet"
    marker = work / f"prepared-{rows}.json"
    if not marker.exists():
        shutil.rmtree(work / "home", ignore_errors=True)
        steps = [
            ["data", "synth", "--month", "2025-01", "--rows", "200000", "--seed", "1"],
            ["data", "synth", "--month", MONTH, "--rows", str(rows), "--seed", "2"],
            ["train", "ride-duration", "--train", "2025-01", "--valid", "2025-01"],
        ]
        steps[-1] += ["--alias", "champion"]
        for step in steps:
            print("setup: ridecast", " ".join(step), flush=True)
            subprocess.run([PYTHON, "-m", "ridecast", *step], env=env, check=True, cwd=ROOT)
        marker.write_text(json.dumps({"rows": rows}))
    big = work / "big"
    big.mkdir(exist_ok=True)
    for index in range(big_files):
        part = big / f"part-{index}.parquet"
        if not part.exists():
            os.link(month_file, part)
    return month_file, str(big / "part-*.parquet")


def check_agreement(ridecast_file: Path, baseline_file: Path) -> tuple[int, float, int, int]:
    import pandas as pd

    ours = pd.read_parquet(ridecast_file, columns=["ride_id", "predicted_duration"])
    theirs = pd.read_parquet(baseline_file, columns=["ride_id", "predicted_duration"])
    joined = ours.merge(theirs, on="ride_id", suffixes=("_ridecast", "_course"))
    diff = (joined["predicted_duration_ridecast"] - joined["predicted_duration_course"]).abs()
    return len(joined), float(diff.max()), len(ours) - len(joined), len(theirs) - len(joined)


def drop_pg_tables(table: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("+psycopg", "")) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(f"DROP TABLE IF EXISTS {table}_rejects")
        if connection.execute("SELECT to_regclass('ride_batch_runs')").fetchone()[0]:
            connection.execute("DELETE FROM ride_batch_runs WHERE sink_table = %s", (table,))


def main() -> None:
    parser = argparse.ArgumentParser(description="ridecast batch scoring benchmark")
    parser.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="spark: the Spark engine against MLflow's spark_udf (bench/batch_spark.py)",
    )
    parser.add_argument("--rows", type=int, help="default 3M rows; with --engine spark 15M")
    parser.add_argument("--big-files", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "batch")
    parser.add_argument("--floor", nargs="+", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        floor_main(args.floor, args.out)
        return
    if args.engine == "spark":
        from batch_spark import run_spark_bench

        repeats = 1 if "--repeats" not in sys.argv else args.repeats
        run_spark_bench(
            args.rows or 15_000_000, repeats, ROOT / "bench" / "results" / "batch-spark"
        )
        return
    args.rows = args.rows or 3_000_000

    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        {
            "RIDECAST_HOME": str(work / "home"),
            "RIDECAST_DATA_DIR": str(work / "home" / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'home' / 'mlflow.db'}",
            # Compiled bytecode is cached (as in any normal install), outside the venv.
            "PYTHONPYCACHEPREFIX": str(work / "pycache"),
        }
    )
    month_file, big_glob = prepare(work, args.rows, args.big_files, env)
    big_rows = args.rows * args.big_files
    big_files = sorted(map(str, Path(big_glob).parent.glob("part-*.parquet")))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    out = work / "out"

    def ridecast(source: str, sink: str, *extra: str) -> list[str]:
        command = [PYTHON, "-m", "ridecast", "batch", "score", "--month", MONTH]
        return [*command, "--source", source, "--sink", sink, *extra]

    baseline_out = out / "baseline.parquet"
    contenders: list[tuple[str, str, int, list[str], int]] = [
        ("3M parquet→parquet", "ridecast", args.rows,
         ridecast(str(month_file), str(out / "ridecast-3m")), args.repeats),
        ("3M parquet→parquet", "course score.py", args.rows,
         [PYTHON, "bench/baselines/score_course.py", "--input", str(month_file),
          "--output", str(baseline_out), "--month", MONTH], args.baseline_repeats),
        ("3M parquet→parquet", "pyarrow floor", args.rows,
         [PYTHON, "bench/batch.py", "--floor", str(month_file), "--out", str(out / "floor-3m")],
         args.repeats),
        ("15M parquet→parquet", "ridecast", big_rows,
         ridecast(big_glob, str(out / "ridecast-15m")), args.repeats),
        ("15M parquet→parquet", "pyarrow floor", big_rows,
         [PYTHON, "bench/batch.py", "--floor", *big_files,
          "--out", str(out / "floor-15m")], args.repeats),
    ]  # fmt: skip
    pg_table = "ride_predictions_bench"
    if not args.no_postgres:
        pg = ["--sink-table", pg_table, "--rejects-table", f"{pg_table}_rejects"]
        contenders += [
            ("3M parquet→PostgreSQL", "ridecast", args.rows,
             ridecast(str(month_file), PG_URL, *pg), max(2, args.repeats - 1)),
            ("15M parquet→PostgreSQL", "ridecast", big_rows, ridecast(big_glob, PG_URL, *pg), 1),
        ]  # fmt: skip

    print("warming the bytecode cache and the model cache (not measured)", flush=True)
    subprocess.run(
        [PYTHON, "-c", "import mlflow.pyfunc, pandas, sklearn.pipeline, ridecast.batch.cli"],
        env=env,
        check=True,
        cwd=ROOT,
    )
    cold_wall, cold_rss = run_measured(
        ridecast(str(month_file), str(out / "ridecast-cold"), "--no-model-cache"),
        env,
        logs / "ridecast-cold.log",
    )
    subprocess.run(
        ridecast(str(month_file), str(out / "ridecast-warm")), env=env, check=True, cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip

    results: dict[tuple[str, str], Result] = {}
    started = time.perf_counter()
    for repeat in range(max(c[4] for c in contenders)):
        for scenario, name, rows, command, repeats in contenders:
            if repeat >= repeats:
                continue
            if "PostgreSQL" in scenario:
                drop_pg_tables(pg_table)  # every run loads an empty table
            slug = f"{scenario}-{name}".replace("→", "-to-").replace(" ", "-").replace(".", "")
            log = logs / f"{slug}-{repeat}.log"
            wall, rss = run_measured(command, env, log)
            result = results.setdefault((scenario, name), Result(scenario, name, rows))
            result.walls.append(wall)
            result.rss_mb.append(rss)
            print(f"  {scenario:24} {name:16} run {repeat + 1}: {wall:7.2f} s  {rss:7.0f} MB",
                  flush=True)  # fmt: skip
    if not args.no_postgres:
        drop_pg_tables(pg_table)

    checked, max_diff, only_ours, only_theirs = check_agreement(
        out / "ridecast-3m" / "taxi_type=green/year=2025/month=02/output=ride-duration-v1"
        / "part-0.parquet",
        baseline_out,
    )  # fmt: skip
    print_table(results, cold_wall, cold_rss, args.rows)
    print(
        f"\npredictions: {checked:,} rides in both outputs, max |ridecast - course| = "
        f"{max_diff:.2e} ({'OK' if max_diff <= 1e-9 else 'MISMATCH'}, limit 1e-9); "
        f"{only_ours:,} only in ridecast, {only_theirs:,} only in the course's output "
        "(the course keeps pickups outside the month; ridecast rejects them)"
    )
    print_goals(results)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s (plus setup)")
    (work / "results.json").write_text(
        json.dumps(
            [{"scenario": r.scenario, "contender": r.contender, "rows": r.rows,
              "walls": r.walls, "rss_mb": r.rss_mb} for r in results.values()]
            + [{"cold_model_cache_wall": cold_wall, "cold_rss_mb": cold_rss},
               {"agreement_rows": checked, "max_abs_diff": max_diff}],
            indent=1,
        )
    )  # fmt: skip


def _spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    low, mid, high = (format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}–{high})"


def print_table(
    results: dict[tuple[str, str], Result], cold_wall: float, cold_rss: float, rows: int
) -> None:
    print(
        "\n| scenario | contender | runs | wall s, median (min–max) | rows/s "
        "| peak RSS MB, median (min–max) | rows/s vs course | RSS vs course | wall vs floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (scenario, name), r in results.items():
        course = results.get((scenario, "course score.py"))
        floor = results.get((scenario.replace("PostgreSQL", "parquet"), "pyarrow floor"))
        vs_course = f"{r.rate / course.rate:.1f}×" if course else "—"
        rss_course = f"{r.rss / course.rss:.2f}×" if course else "—"
        vs_floor = f"{r.wall / floor.wall:.2f}×" if floor else "—"
        walls, rss = _spread(r.walls, ".2f"), _spread(r.rss_mb, ".0f")
        print(f"| {scenario} | {name} | {len(r.walls)} | {walls} | {r.rate:,.0f} | "
              f"{rss} | {vs_course} | {rss_course} | {vs_floor} |")  # fmt: skip
    print(f"| 3M parquet→parquet | ridecast, model cache cold | 1 | {cold_wall:.2f} | "
          f"{rows / cold_wall:,.0f} | {cold_rss:.0f} | | | |")  # fmt: skip


def print_goals(results: dict[tuple[str, str], Result]) -> None:
    ours3 = results[("3M parquet→parquet", "ridecast")]
    course = results[("3M parquet→parquet", "course score.py")]
    ours15 = results[("15M parquet→parquet", "ridecast")]
    floor15 = results[("15M parquet→parquet", "pyarrow floor")]
    goals = [
        ("3M: ridecast rows/s ≥ 5× the course's", ours3.rate / course.rate, 5.0, True),
        ("3M: ridecast peak RSS ≤ 0.5× the course's", ours3.rss / course.rss, 0.5, False),
        ("15M: ridecast wall ≤ 3× the I/O floor", ours15.wall / floor15.wall, 3.0, False),
        ("15M: ridecast peak RSS ≤ 1.25× its 3M peak", ours15.rss / ours3.rss, 1.25, False),
    ]
    print()
    for label, value, limit, at_least in goals:
        met = value >= limit if at_least else value <= limit
        print(f"goal {label}: {value:.2f}× → {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
