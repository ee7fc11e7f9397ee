"""Web benchmark: ridecast serve vs. the course's Flask + gunicorn vs. a bare ASGI ceiling.

    .venv/bin/python bench/web.py [--duration 10] [--runs 2] [--concurrency 1,16,64]
        [--prediction-log postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--before /tmp/ridecast-before]

Each server gets the same trained model (ride-duration@champion, linear, in a bench registry under
``.ridecast/bench``), is started alone on 127.0.0.1, warmed up, and loaded with ``wrk -t1``
(keep-alive, single-ride POST bodies) at each concurrency. Servers are restarted for every run
and the runs are interleaved, so a noisy neighbour hurts all three alike. ridecast runs with its
defaults: 2 workers, micro-batching, metrics and the SQLite prediction log on.

``rollout`` is the same ridecast server while a rollout runs: a canary answering 50% of riders
plus a 100% shadow of the stable's traffic to the candidate, every answer (live and shadow)
logged. Both versions are linear models of the same data, so the figure is the cost of the
rollout machinery (routing, two batchers, the shadow queue and its thread, twice the log rows),
not of a slower model. ``--prediction-log URL`` adds a ``ridecast-pg`` run whose prediction log
is that database (PostgreSQL, as compose and Kubernetes run it). Each request carries a distinct
ride_id and user_id, so the router hashes every request as it would in production.

``--before DIR`` adds a ``before`` run: ``ridecast serve`` from another checkout of ridecast
(its ``src`` first on PYTHONPATH, the same venv otherwise), e.g. the last commit made with
``git worktree add /tmp/ridecast-before HEAD``. Its runs alternate with ridecast's, which goes
first every other run, and the verdict gives the ratio run by run: the cost of a change.
``--cpu-requests N`` adds what req/s on a shared machine cannot resolve: the CPU time one
``POST /predict`` costs, measured in-process (the ASGI app called directly, 64 requests at a
time, so micro-batching and the prediction log's writer thread run as they do when served;
``time.process_time`` counts every thread), for this checkout and ``--before``, alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RIDE = b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}'
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"PULocationID": 130, "DOLocationID": 205, ' ..
    '"trip_distance": 3.66, "ride_id": "r' .. n .. '", "user_id": "u' .. (n % 5000) .. '"}')
end
"""
SERVERS = ("before", "ridecast", "rollout", "ridecast-pg", "flask", "bare")
LABELS = {
    "before": "ridecast serve (2 workers), before the change",
    "ridecast": "ridecast serve (2 workers)",
    "rollout": "ridecast serve, canary 50% + shadow 100%",
    "ridecast-pg": "ridecast serve, PostgreSQL prediction log",
    "flask": "course Flask + gunicorn (2 sync workers)",
    "bare": "bare ASGI, uvicorn 2 workers (ceiling)",
}
BENCH_ROLLOUT = """model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 50
  - pause: {}
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def spread(self) -> str:
        low, high = min(r.rps for r in self.runs), max(r.rps for r in self.runs)
        return f"{low:,.0f}–{high:,.0f}"

    @property
    def p99_spread(self) -> str:
        low, high = min(r.p99_ms for r in self.runs), max(r.p99_ms for r in self.runs)
        return f"{low:.1f}–{high:.1f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_model(home: Path) -> dict[str, str]:
    """A bench registry with ride-duration@champion (linear, the course's model)."""
    from ridecast.errors import ModelError
    from ridecast.registry import ModelRef, Registry
    from ridecast.settings import Settings
    from ridecast.training import train_on_synthetic_months

    settings = Settings(home=home, tracking_uri=None, data_dir=None, prediction_log_url=None)
    registry = Registry(settings)
    try:
        registry.resolve(ModelRef("ride-duration", "champion"))
    except ModelError:
        print("training the bench model (once) ...", flush=True)
        plan: tuple[tuple[str, str, str], ...] = (
            ("ride-duration", "linear", "champion"),
            ("ride-duration", "linear", "challenger"),
        )
        train_on_synthetic_months(settings, registry, rows=60_000, plan=plan)
    try:
        registry.resolve(ModelRef("ride-duration", "challenger"))
    except ModelError:  # a bench registry from before the rollout run
        plan = (("ride-duration", "linear", "challenger"),)
        train_on_synthetic_months(settings, registry, rows=60_000, plan=plan)
    env = dict(os.environ)
    env.update(
        {
            "RIDECAST_HOME": str(home),
            "MLFLOW_TRACKING_URI": registry.tracking_uri,
            "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{home / 'bench-predictions.db'}",
            "RIDECAST_STATE_URL": f"sqlite:///{home / 'bench-rollouts.db'}",
        }
    )
    env.pop("RIDECAST_SERVE_WORKERS", None)
    return env


def command(server: str, port: int) -> list[str]:
    baselines = str(ROOT / "bench" / "baselines")
    if server in ("before", "ridecast", "rollout", "ridecast-pg"):
        return [str(BIN / "ridecast"), "serve", "--port", str(port), "--workers", "2"]
    if server == "flask":
        return [
            str(BIN / "gunicorn"),
            "--workers",
            "2",
            "--no-control-socket",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            baselines,
            "--log-level",
            "warning",
            "flask_predict:app",
        ]
    return [
        str(BIN / "uvicorn"),
        "--workers",
        "2",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--lifespan",
        "off",
        "--log-level",
        "warning",
        "--app-dir",
        baselines,
        "--port",
        str(port),
        "bare_asgi:app",
    ]


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(
                f"server exited with {process.returncode} before answering: {url}\n{tail}"
            )
        try:
            request = urllib.request.Request(
                url, RIDE, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"no answer from {url} within {timeout:.0f}s")


def parse_wrk(text: str) -> Run:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Run(rps, percentile("50"), percentile("99"), errors)


def wrk(url: str, concurrency: int, duration: float, script: Path) -> Run:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    )
    return parse_wrk(out.stdout)


def bench_server(
    server: str,
    env: dict[str, str],
    concurrencies: list[int],
    duration: float,
    script: Path,
    results: dict[tuple[str, int], Result],
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    if server == "rollout":
        start_rollout(env)
    # The server's output goes to a file: an unread pipe would fill and block the server.
    log = Path(env["RIDECAST_HOME"]) / f"bench-{server}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command(server, port),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(url, process, log)
        wrk(url, 16, 2, script)  # warm-up: every worker connected and jitted
        for c in concurrencies:
            run = wrk(url, c, duration, script)
            results.setdefault((server, c), Result()).runs.append(run)
            print(
                f"  {server:8s} c={c:<3d} {run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}",
                flush=True,
            )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if server == "rollout":
            stop_rollout(env)


def _ops_settings(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from ridecast.settings import Settings

    return Settings(
        home=Path(env["RIDECAST_HOME"]),
        tracking_uri=env["MLFLOW_TRACKING_URI"],
        prediction_log_url=env["RIDECAST_PREDICTION_LOG_URL"],
        state_url=env["RIDECAST_STATE_URL"],
    )


def start_rollout(env: dict[str, str]) -> None:
    """A canary held at 50% (its pause waits for a promotion) with a 100% shadow."""
    from ridecast.control import ops
    from ridecast.control.store import store_for

    settings = _ops_settings(env)
    store = store_for(settings)
    for active in store.all_active():
        ops.abort(settings, active.model, reason="bench: clean start", store=store)
    state = ops.start(settings, BENCH_ROLLOUT, store=store, actor="bench")
    store.save(state.evolve(shadow_percent=100), reason="bench: shadow every request")


def stop_rollout(env: dict[str, str]) -> None:
    from ridecast.control import ops

    ops.abort(_ops_settings(env), "ride-duration", reason="bench: run over")


# One process, one checkout: the app of `ridecast serve` called directly, as uvicorn calls it.
CPU_PROBE = """
import asyncio, json, sys, time
from ridecast.settings import get_settings
from ridecast.web.app import create_app

n = int(sys.argv[1])
app = create_app(get_settings())
app.service.start()
scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [
    (b"content-type", b"application/json")], "query_string": b""}

async def one(i):
    body = (b'{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66, "ride_id": "r%d", '
            b'"user_id": "u%d"}' % (i, i % 5000))
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    async def send(message):
        pass
    await app(scope, receive, send)

async def main():
    for k in range(50):  # warm-up
        await asyncio.gather(*(one(k * 64 + i) for i in range(64)))
    cpu, wall = time.process_time(), time.perf_counter()
    for k in range(n // 64):
        await asyncio.gather(*(one(k * 64 + i) for i in range(64)))
    app.service.prediction_log.flush()  # its writer's share of the work, inside the window
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6

cpu_us, wall_us = asyncio.run(main())
app.service.stop()
print(json.dumps({"cpu_us": cpu_us, "wall_us": wall_us}))
"""


CPU_LABELS = {
    "before": "ridecast app in one process, before the change",
    "ridecast": "ridecast app in one process (as a worker: multiprocess metrics)",
}


def cpu_per_request(env: dict[str, str], requests: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CPU_PROBE, str(requests)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the in-process probe failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu_us"])


def cpu_table(cpu: dict[str, list[float]]) -> list[str]:
    lines = [
        "| server | CPU µs per request (median) | spread (min–max) | runs |",
        "|---|---:|---:|---:|",
    ]
    for server, values in cpu.items():
        lines.append(
            f"| {CPU_LABELS[server]} | {statistics.median(values):.1f} | "
            f"{min(values):.1f}–{max(values):.1f} | {len(values)} |"
        )
    if len(cpu) == 2:
        before, after = cpu["before"], cpu["ridecast"]
        pairs = [a / b for a, b in zip(after, before, strict=True)]
        ratio = statistics.median(after) / statistics.median(before)
        lines += [
            "",
            f"change in CPU per request: {ratio:.3f}× of the medians; run by run "
            f"{', '.join(f'{r:.3f}' for r in pairs)} → "
            f"{'costs < 5%' if ratio <= 1.05 else 'COSTS ≥ 5%'} of the throughput a CPU-bound "
            "server has",
        ]
    return lines


def table(results: dict[tuple[str, int], Result], concurrencies: list[int]) -> str:
    lines = [
        "| server | concurrency | req/s (median) | req/s spread (min–max) | p50 ms | p99 ms "
        "| p99 spread | × Flask | × bare ASGI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in concurrencies:
        flask, bare = results.get(("flask", c)), results.get(("bare", c))
        for server in SERVERS:
            r = results.get((server, c))
            if r is None:
                continue
            vs_flask = f"{r.rps / flask.rps:.2f}" if flask else "–"
            vs_bare = f"{r.rps / bare.rps:.2f}" if bare else "–"
            lines.append(
                f"| {LABELS[server]} | {c} | {r.rps:,.0f} | {r.spread} | {r.p50:.2f} | "
                f"{r.p99:.2f} | {r.p99_spread} | {vs_flask} | {vs_bare} |"
            )
    return "\n".join(lines)


def verdict(results: dict[tuple[str, int], Result]) -> list[str]:
    out = []
    before, ours, rollout, pg, flask, bare = (results.get((s, 64)) for s in SERVERS)
    if before and ours:
        pairs = [a.rps / b.rps for a, b in zip(ours.runs, before.runs, strict=True)]
        ratio = ours.rps / before.rps
        out.append(
            f"change at c=64: ridecast {ours.rps:,.0f} req/s ({ours.spread}) vs before "
            f"{before.rps:,.0f} ({before.spread}): {ratio:.3f}× of the medians; run by run "
            f"{', '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f}); "
            f"p99 {ours.p99:.2f} ms vs {before.p99:.2f} ms → "
            f"{'costs < 5%' if ratio >= 0.95 else 'COSTS ≥ 5%'}"
        )
    if ours and flask:
        ratio = ours.rps / flask.rps
        worst = min(r.rps for r in ours.runs) / max(r.rps for r in flask.runs)
        out.append(
            f"goal ≥ 5× Flask at c=64: {ratio:.2f}× (worst run vs best run {worst:.2f}×) → "
            f"{'met' if ratio >= 5 else 'NOT met'}; p99 {ours.p99:.2f} ms vs {flask.p99:.2f} ms → "
            f"{'no worse' if ours.p99 <= flask.p99 else 'WORSE'}"
        )
    if ours and bare:
        ratio = ours.rps / bare.rps
        out.append(
            f"goal ≥ 0.5× bare ASGI at c=64: {ratio:.2f}× → {'met' if ratio >= 0.5 else 'NOT met'}"
        )
    if rollout and bare and ours:
        vs_bare, vs_ours = rollout.rps / bare.rps, rollout.rps / ours.rps
        p99_ok = flask is None or rollout.p99 <= flask.p99
        out.append(
            f"goal with a rollout (canary 50% + shadow 100%) at c=64: ≥ 0.6× bare ASGI: "
            f"{vs_bare:.2f}× → {'met' if vs_bare >= 0.6 else 'NOT met'}; ≥ 0.8× ridecast "
            f"without: {vs_ours:.2f}× → {'met' if vs_ours >= 0.8 else 'NOT met'}; p99 "
            f"{rollout.p99:.2f} ms vs Flask {flask.p99 if flask else float('nan'):.2f} ms → "
            f"{'no worse' if p99_ok else 'WORSE'}"
        )
    if pg and ours:
        ratio = pg.rps / ours.rps
        p99_ok = flask is None or pg.p99 <= flask.p99
        out.append(
            f"goal with the PostgreSQL prediction log at c=64: ≥ 0.9× the SQLite log: "
            f"{ratio:.2f}× → {'met' if ratio >= 0.9 else 'NOT met'}; p99 {pg.p99:.2f} ms vs "
            f"Flask {flask.p99 if flask else float('nan'):.2f} ms → "
            f"{'no worse' if p99_ok else 'WORSE'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=2, help="runs per server and concurrency")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--servers", default=",".join(SERVERS), help="subset to run")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".ridecast" / "bench")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another ridecast checkout (e.g. a git worktree of the last commit) to run as "
        "'before', interleaved with this one",
    )
    parser.add_argument(
        "--cpu-requests",
        type=int,
        default=0,
        help="also measure CPU µs per request in-process over this many requests per run",
    )
    parser.add_argument(
        "--prediction-log",
        default=None,
        help="SQLAlchemy URL of a PostgreSQL prediction log for an extra ridecast-pg run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.servers:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    servers = [s for s in SERVERS if s in args.servers.split(",")]  # "" for none (CPU only)
    if args.prediction_log is None:
        servers = [s for s in servers if s != "ridecast-pg"]
    if args.before is None:
        servers = [s for s in servers if s != "before"]
    elif not (args.before / "src" / "ridecast").is_dir():
        raise SystemExit(f"--before {args.before}: no src/ridecast there")

    env = ensure_model(args.workdir.resolve())
    log_db = Path(env["RIDECAST_PREDICTION_LOG_URL"].removeprefix("sqlite:///"))
    before_db = log_db.with_name("bench-before-predictions.db")
    before_state = log_db.with_name("bench-before-rollouts.db")
    for path in (log_db, before_db):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before the run; "
        f"{args.runs} runs × {args.duration:g}s per server and concurrency",
        flush=True,
    )

    def env_for(server: str) -> dict[str, str]:
        if server == "ridecast-pg":
            return {**env, "RIDECAST_PREDICTION_LOG_URL": args.prediction_log}
        if server == "before":  # its own databases: the checkouts' schemas may differ
            return {
                **env,
                "PYTHONPATH": str(args.before.resolve() / "src"),
                "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{before_db}",
                "RIDECAST_STATE_URL": f"sqlite:///{before_state}",
            }
        return env

    def alternated(order: list[str], run: int) -> list[str]:
        """``order`` with before and ridecast swapped every other run: neither always first."""
        order = list(order)
        if run % 2 and "before" in order and "ridecast" in order:
            i, j = order.index("before"), order.index("ridecast")
            order[i], order[j] = order[j], order[i]
        return order

    results: dict[tuple[str, int], Result] = {}
    cpu: dict[str, list[float]] = {}
    probed = ["before", "ridecast"] if args.before is not None else ["ridecast"]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", flush=True)
            for server in alternated(servers, run):
                bench_server(server, env_for(server), concurrencies, args.duration, script, results)
            for server in alternated(probed, run) if args.cpu_requests else []:
                fresh = f"sqlite:///{Path(tmp) / f'cpu-{server}-{run}.db'}"  # equal for both
                shared = Path(tmp) / f"prometheus-{server}-{run}"
                shared.mkdir()
                probe_env = {
                    **env_for(server),
                    "RIDECAST_PREDICTION_LOG_URL": fresh,
                    "RIDECAST_STATE_URL": fresh,
                    # As a worker of `ridecast serve --workers N` runs (a checkout that does not
                    # use prometheus_client in the web service ignores it).
                    "PROMETHEUS_MULTIPROC_DIR": str(shared),
                }
                cpu.setdefault(server, []).append(cpu_per_request(probe_env, args.cpu_requests))
                print(f"  {server:8s} in-process {cpu[server][-1]:7.1f} µs CPU per request")

    logged = 0
    if "ridecast" in servers and log_db.exists():
        import sqlite3

        with sqlite3.connect(log_db) as db:
            logged = int(db.execute("select count(*) from predictions").fetchone()[0])
    text = table(results, concurrencies)
    lines = [
        text,
        "",
        *verdict(results),
        *(["", *cpu_table(cpu), ""] if cpu else []),
        f"prediction log rows written by ridecast during the runs: {logged:,}",
        f"load average after: {os.getloadavg()[0]:.2f}",
    ]
    print("\n" + "\n".join(lines))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"web-{stamp}.md").write_text("\n".join(lines) + "\n")
    raw = {f"{s}@c{c}": [r.__dict__ for r in res.runs] for (s, c), res in sorted(results.items())}
    (out_dir / f"web-{stamp}.json").write_text(json.dumps(raw, indent=1))
    print(f"\nsaved bench/results/web-{stamp}.md")


if __name__ == "__main__":
    main()
