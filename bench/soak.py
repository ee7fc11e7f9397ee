"""Soak: ridecast serve under steady load for minutes; memory per worker, failures, log rows.

    .venv/bin/python bench/soak.py [--minutes 10] [--load 0.7] [--workers 2]
        [--prediction-log postgresql+psycopg://postgres@127.0.0.1:5432/test]

The server runs with its defaults (micro-batching, metrics, the prediction log on a fresh
database) and the bench model of ``bench/web.py``. The run:

1. measures capacity: ``wrk`` unthrottled at 64 connections for ``--capacity-seconds``;
2. holds ``--load`` × that capacity for ``--minutes``, in 30-second ``wrk`` rounds whose per-request
   delay is re-tuned after each round to stay on the target rate; every request carries a new
   ride_id, so every answer is a new prediction-log row;
3. samples each worker's resident memory every 5 seconds;
4. stops the server with SIGTERM (which drains and flushes the log) and counts the log's rows.

It prints one line per round and a verdict on the soak goals:
- zero failed requests (wrk's socket errors and non-2xx answers, and the server's own error
  counter);
- each worker's memory grows less than 10% from the end of the warm-up (the first fifth of the
  run) to the end;
- the prediction log holds exactly one row per answered prediction (the server's own count of
  200 answers on /predict), with none dropped.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from web import ROOT, command, ensure_model, free_port, parse_wrk, wait_ready

ROUND_SECONDS = 30.0
SAMPLE_SECONDS = 5.0
CONNECTIONS = 64
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local prefix = "__ROUND__"
local low, high, p_high = __LOW__, __HIGH__, __PHIGH__
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"PULocationID": 130, "DOLocationID": 205, ' ..
    '"trip_distance": 3.66, "ride_id": "' .. prefix .. '-' .. n .. '", "user_id": "u' ..
    (n % 5000) .. '"}')
end
delay = function()
  if math.random() < p_high then return high end
  return low
end
"""


@dataclass
class Memory:
    """Resident memory samples of each worker, by pid: (seconds since start, bytes)."""

    samples: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    def growth(self, warm_up: float) -> dict[int, tuple[float, float, float]]:
        """Per worker: MiB at the end of the warm-up, MiB at the end, and the growth."""
        out = {}
        for pid, points in self.samples.items():
            after = [m for t, m in points if t >= warm_up]
            if len(after) < 4:
                continue
            window = max(2, len(after) // 10)  # medians over the first and last tenth
            start = statistics.median(after[:window]) / 2**20
            end = statistics.median(after[-window:]) / 2**20
            out[pid] = (start, end, end / start - 1)
        return out


def workers(server_pid: int) -> list[int]:
    """The serving worker processes under the supervisor (multiprocessing children)."""
    import psutil

    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmdline:
            found.append(child.pid)
    return found


def sample_memory(server_pid: int, memory: Memory, start: float, stop: threading.Event) -> None:
    import psutil

    while not stop.wait(SAMPLE_SECONDS):
        for pid in workers(server_pid):
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            memory.samples.setdefault(pid, []).append((time.monotonic() - start, rss))


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def wrk_round(url: str, script: Path, seconds: float, connections: int = CONNECTIONS):  # type: ignore[no-untyped-def]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    answered = re.search(r"(\d+) requests in", out.stdout)
    return parse_wrk(out.stdout), int(answered.group(1)) if answered else 0


def write_script(path: Path, round_name: str, delay_ms: float) -> None:
    """A wrk script whose mean delay between a connection's requests is ``delay_ms`` (wrk takes
    whole milliseconds, so each request draws the floor or the ceiling)."""
    delay_ms = max(0.0, delay_ms)
    low = math.floor(delay_ms)
    lua = (
        LUA.replace("__ROUND__", round_name)
        .replace("__LOW__", str(low))
        .replace("__HIGH__", str(low + 1))
        .replace("__PHIGH__", f"{delay_ms - low:.4f}")
    )
    path.write_text(lua)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load")
    parser.add_argument("--load", type=float, default=0.7, help="share of measured capacity")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".ridecast" / "bench")
    parser.add_argument(
        "--prediction-log",
        default=None,
        help="SQLAlchemy URL of the prediction log (default: a fresh SQLite file); its "
        "predictions table is emptied first",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    if not 0 < args.load <= 1:
        raise SystemExit(f"--load {args.load} must be in (0, 1]")

    env = ensure_model(args.workdir.resolve())
    home = Path(env["RIDECAST_HOME"])
    log_url = args.prediction_log or f"sqlite:///{home / 'soak-predictions.db'}"
    if args.prediction_log is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{home / 'soak-predictions.db'}{suffix}").unlink(missing_ok=True)
    else:
        from sqlalchemy import create_engine, inspect, text

        engine = create_engine(log_url)
        with engine.begin() as db:
            if inspect(db).has_table("predictions"):
                db.execute(text("delete from predictions"))
        engine.dispose()
    env = {**env, "RIDECAST_PREDICTION_LOG_URL": log_url}
    from ridecast.monitoring.database import mask_url

    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    cmd = command("ridecast", port)
    cmd[cmd.index("--workers") + 1] = str(args.workers)
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f}; {args.workers} workers, log "
        f"{mask_url(log_url)}; {args.minutes:g} min at {args.load:.0%} of capacity",
        flush=True,
    )
    server_log = home / "bench-soak.log"
    with server_log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    memory = Memory()
    stop = threading.Event()
    failed = sent = 0
    rounds: list[tuple[float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "soak.lua"
            wait_ready(url, process, server_log)
            write_script(script, "warm", 0)
            warm, sent = wrk_round(url, script, 3, 16)
            failed += warm.errors
            write_script(script, "capacity", 0)
            capacity, n = wrk_round(url, script, args.capacity_seconds)
            failed += capacity.errors
            sent += n
            target = args.load * capacity.rps
            print(
                f"capacity {capacity.rps:,.0f} req/s (p99 {capacity.p99_ms:.1f} ms); "
                f"target {target:,.0f} req/s",
                flush=True,
            )
            worker_pids = set(workers(process.pid))
            start = time.monotonic()
            sampler = threading.Thread(
                target=sample_memory, args=(process.pid, memory, start, stop), daemon=True
            )
            sampler.start()
            # A connection's period is its latency plus the delay: CONNECTIONS / target.
            delay = max(0.0, CONNECTIONS / target * 1000 - capacity.p50_ms / 2)
            n_rounds = max(1, round(args.minutes * 60 / ROUND_SECONDS))
            for i in range(n_rounds):
                write_script(script, f"r{i}", delay)
                run, n = wrk_round(url, script, ROUND_SECONDS)
                failed += run.errors
                sent += n
                rounds.append((run.rps, run.p50_ms, run.p99_ms))
                rss = {p: pts[-1][1] / 2**20 for p, pts in memory.samples.items() if pts}
                print(
                    f"  {time.monotonic() - start:5.0f}s  {run.rps:>7,.0f} req/s "
                    f"({run.rps / capacity.rps:.0%})  p50 {run.p50_ms:5.2f} ms  p99 "
                    f"{run.p99_ms:6.2f} ms  errors {run.errors}  RSS MiB "
                    + " ".join(f"{v:.0f}" for v in rss.values()),
                    flush=True,
                )
                latency = max(0.0, CONNECTIONS / max(run.rps, 1.0) * 1000 - delay)
                # Half-way to the computed delay: a noisy round does not swing the next one.
                delay = (delay + max(0.0, CONNECTIONS / target * 1000 - latency)) / 2
            elapsed = time.monotonic() - start
            stop.set()
            sampler.join()
            replaced = set(workers(process.pid)) != worker_pids
            time.sleep(2.5)  # every worker has exported its counters (each second)
            metrics = scrape(port)
    finally:
        stop.set()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
    answered = int(metric_sum(metrics, "ridecast_http_requests_total", endpoint="/predict",
                              status="200"))  # fmt: skip
    server_errors = int(metric_sum(metrics, "ridecast_http_request_errors_total"))
    dropped = int(metric_sum(metrics, "ridecast_prediction_log_rows_total", state="dropped"))
    from sqlalchemy import create_engine, text

    engine = create_engine(log_url)
    with engine.connect() as db:
        logged = int(db.execute(text("select count(*) from predictions")).scalar_one())
    engine.dispose()

    rps = [r[0] for r in rounds]
    growth = memory.growth(warm_up=elapsed / 5)
    print(
        f"\nsteady load: {statistics.median(rps):,.0f} req/s median per round "
        f"({min(rps):,.0f}–{max(rps):,.0f}), {statistics.median(rps) / capacity.rps:.0%} of "
        f"capacity, p99 median {statistics.median(r[2] for r in rounds):.2f} ms, worst "
        f"{max(r[2] for r in rounds):.2f} ms; server exit {code}"
    )
    for pid, (begin, end, g) in sorted(growth.items()):
        print(f"worker {pid}: {begin:.1f} MiB after warm-up → {end:.1f} MiB at the end ({g:+.1%})")
    worst = max((g for _, _, g in growth.values()), default=float("nan"))
    print(
        f"goal zero failed requests: {failed} failed by wrk, {server_errors} server errors "
        f"→ {'met' if failed == 0 and server_errors == 0 else 'NOT met'}"
    )
    print(
        f"goal memory growth < 10% per worker after warm-up: worst {worst:+.1%}"
        f"{', a worker was replaced' if replaced else ''} → "
        f"{'met' if growth and worst < 0.10 and not replaced else 'NOT met'}"
    )
    print(
        f"goal prediction-log rows = answered requests: {logged:,} rows, {answered:,} answered "
        f"(wrk saw {sent:,} complete), {dropped} dropped → "
        f"{'met' if logged == answered and dropped == 0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
