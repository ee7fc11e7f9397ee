"""Streaming benchmark: ridecast's duration consumer (1 and 2 processes, and 1 process under a
canary at 50% plus a 100% shadow) vs the course's per-event Lambda loop, all over the same Redis,
in the same run.

    .venv/bin/python bench/stream.py [--events 200000] [--runs 2] [--rate 2000] [--paced-seconds 10]

Two phases per contender, with fresh streams each time:

1. **throughput** (backlog drain): the consumers are started and ready (model loaded, group
   joined) and then frozen (SIGSTOP); ``--events`` ride events are loaded; the consumers are
   resumed (SIGCONT) and the clock runs from then to the last output's append. Latency in
   this phase is queueing time in a backlog, so it is not reported.
   A contender still busy after ``--max-seconds`` (the per-event baseline, at 200,000 events)
   is stopped there and its rate measured over the events it finished.
2. **paced**: the producer sends ``--rate`` events/s for ``--paced-seconds``; the end-to-end
   latency of each event is its output's append time minus its own append time (both from
   Redis' clock via the entry ids, so ms resolution; no clock skew between processes). A
   contender that falls behind is cut off 20 s after the producer stops; its percentiles then
   cover only the events it finished (so they understate its latency) and the table says so.

The model is ride-duration@champion (v1, linear, the course's DictVectorizer + LinearRegression),
trained once into ``.ridecast/bench-stream`` with a second linear version, @challenger (v2). The
rollout contender runs under a canary RolloutState (v1 → v2, weight 50, shadow 100) created
directly in the bench's state store (``.ridecast/bench-stream/state.db``) before its consumer
starts and aborted after: half the rides are answered by v2, the other half by v1 and shadowed by
v2 into ``<output>_shadow``. Every ridecast consumer runs with its defaults, so the prediction log
is on (a fresh SQLite file per phase); the table reports the rows it wrote.
Traffic goes only to the Redis given by --redis
(default 127.0.0.1:6379; REDIS_URL is honoured). Results: a table on stdout and
``bench/results/stream-<time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOME = ROOT / ".ridecast" / "bench-stream"
CONTENDERS = {
    "baseline": ("course Lambda loop (per event)", 1),
    "ridecast-1": ("ridecast consume, 1 process", 1),
    "ridecast-2": ("ridecast consume, 2 processes", 2),
    "ridecast-rollout": ("ridecast consume, 1 process, canary 50% + shadow 100%", 1),
}
MODEL = "ride-duration"
STATE_URL = f"sqlite:///{HOME / 'state.db'}"
LOGS = HOME / "logs"


@dataclass
class Phase:
    events: int  # predicted (all of them, unless the contender was cut off)
    sent: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    logged: dict[str, int] = field(default_factory=dict)  # prediction-log rows by arm
    shadowed: int = 0  # entries in the shadow stream


@dataclass
class Result:
    throughput: list[Phase] = field(default_factory=list)
    paced: list[Phase] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def env(log_url: str | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        {
            "RIDECAST_HOME": str(HOME),
            "RIDECAST_DATA_DIR": str(HOME / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{HOME / 'mlflow.db'}",
            "RIDECAST_STATE_URL": STATE_URL,
        }
    )
    if log_url:
        out["RIDECAST_PREDICTION_LOG_URL"] = log_url
    out.pop("RIDECAST_BROKER_URL", None)
    return out


def prepare_model(rows: int) -> tuple[str, str]:
    """Train ride-duration@champion and @challenger (both linear) into the bench registry once;
    return their versions."""
    from ridecast.errors import ModelError
    from ridecast.registry import ModelRef, Registry
    from ridecast.settings import Settings
    from ridecast.training import train_on_synthetic_months

    settings = Settings(
        home=HOME, data_dir=HOME / "data", tracking_uri=f"sqlite:///{HOME / 'mlflow.db'}"
    )
    registry = Registry(settings)
    versions = []
    for alias in ("champion", "challenger"):
        ref = ModelRef(MODEL, alias=alias)
        try:
            versions.append(registry.resolve(ref))
        except ModelError:
            log(f"training {MODEL}@{alias} (linear) into {HOME} (once)")
            plan = ((MODEL, "linear", alias),)
            train_on_synthetic_months(settings, registry, rows=rows, plan=plan)
            versions.append(registry.resolve(ref))
    return versions[0], versions[1]


def start_rollout(stable: str, candidate: str) -> str:
    """A canary at 50% with a 100% shadow, straight into the state store the consumers follow
    (any rollout a crashed earlier run left active is aborted first)."""
    from ridecast.control.store import RolloutStore
    from ridecast.rollout.state import RolloutState

    store = RolloutStore(STATE_URL)
    for old in store.all_active():
        store.save(old.evolve(phase="aborted"), reason="bench: left over", actor="bench")
    now = time.time()
    state = RolloutState(
        id=f"bench-{uuid.uuid4().hex[:8]}",
        model=MODEL,
        strategy="canary",
        stable_version=stable,
        candidate_version=candidate,
        weight=50,
        shadow_percent=100,
        step_started_at=now,
        created_at=now,
        updated_at=now,
    )
    store.create(state, reason="bench: canary 50% + shadow 100%", actor="bench")
    return state.id


def end_rollout(rollout_id: str) -> None:
    from ridecast.control.store import RolloutStore

    store = RolloutStore(STATE_URL)
    state = store.get(rollout_id)
    if state is not None and state.active:
        store.save(state.evolve(phase="aborted"), reason="bench: done", actor="bench")


def logged_rows(path: Path) -> dict[str, int]:
    """Prediction-log rows by arm (written by the consumers before they exited)."""
    import sqlite3

    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT arm, count(*) FROM predictions GROUP BY arm").fetchall())


def event_payloads(n: int) -> list[bytes]:
    """n ride events in the course's shape, cycling over the valid rides of the bench month."""
    from ridecast.stream.producer import load_rides, ride_payloads

    rides, _ = load_rides(HOME / "data", "green", "2025-02")
    base = ride_payloads(rides, 0, len(rides))
    out = []
    for i in range(n):
        event = json.loads(base[i % len(base)])
        event["ride_id"] = i
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def start_consumers(
    kind: str, url: str, names: dict[str, str], log_url: str
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for k in range(CONTENDERS[kind][1]):
        if kind == "baseline":
            cmd = [
                str(BIN / "python"),
                str(ROOT / "bench" / "baselines" / "lambda_loop.py"),
                "--redis",
                url,
                "--input",
                names["input"],
                "--output",
                names["output"],
                "--group",
                names["group"],
                "--consumer",
                f"c{k}",
            ]
        else:
            cmd = [
                str(BIN / "ridecast"),
                "stream",
                "consume",
                "--service",
                "duration",
                "--broker",
                url,
                "--input-stream",
                names["input"],
                "--output-stream",
                names["output"],
                "--group",
                names["group"],
                "--consumer",
                f"c{k}",
            ]
        extra = {}
        if kind == "baseline":  # the course's loop needs the scikit-learn pipeline, which the
            extra["RIDECAST_BATCH_MODEL_CACHE"] = "false"  # registry's compiled copy drops
        procs.append(
            subprocess.Popen(
                cmd,
                env={**env(log_url), **extra},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    return procs


def wait_ready(client: object, names: dict[str, str], count: int, procs: list) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"consumer exited early: {p.stderr.read().decode()[-2000:]}")
        try:
            consumers = client.xinfo_consumers(names["input"], names["group"])  # type: ignore[attr-defined]
            if len(consumers) >= count:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("consumers did not become ready within 120 s")


def stop_consumers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_outputs(client: object, stream: str, n: int, deadline: float) -> int:
    """Outputs written once all ``n`` are there, or at ``deadline`` (a slow contender is cut
    off there and measured over what it finished)."""
    last, last_change = -1, time.monotonic()
    while True:
        got = int(client.xlen(stream))  # type: ignore[attr-defined]
        if got >= n or time.monotonic() > deadline:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        if time.monotonic() - last_change > 60:
            raise SystemExit(f"{stream}: stuck at {got:,} of {n:,} outputs for 60 s")
        time.sleep(0.05)


def latencies(client: object, output: str) -> tuple[np.ndarray, int, int]:
    """Per output: output append ms - event append ms; and the first event / last output ms."""
    lat: list[int] = []
    last_out = 0
    first_in = None
    start = "-"
    while True:
        entries = client.xrange(output, start, "+", count=20_000)  # type: ignore[attr-defined]
        if start != "-":
            entries = entries[1:]
        if not entries:
            break
        for entry_id, fields in entries:
            out_ms = int(entry_id.split(b"-")[0])
            in_ms = int(fields[b"source"].split(b"-")[0])
            lat.append(out_ms - in_ms)
            last_out = max(last_out, out_ms)
            first_in = in_ms if first_in is None else min(first_in, in_ms)
        start = entries[-1][0].decode()
    return np.array(lat, dtype=np.float64), int(first_in or 0), last_out


def phase(
    kind: str,
    url: str,
    payloads: list[bytes],
    rate: float | None,
    max_seconds: float,
    versions: tuple[str, str],
) -> Phase:
    import redis

    from ridecast.stream.broker import open_broker
    from ridecast.stream.producer import _paced_chunks

    client = redis.Redis.from_url(url)
    tag = uuid.uuid4().hex[:8]
    names = {
        "input": f"bench:{tag}:events",
        "output": f"bench:{tag}:predictions",
        "group": f"bench-{kind}",
    }
    client.xgroup_create(names["input"], names["group"], id="0", mkstream=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{tag}.db"
    rollout_id = start_rollout(*versions) if kind == "ridecast-rollout" else None
    procs = start_consumers(kind, url, names, f"sqlite:///{log_path}")
    broker = open_broker(url)
    shadow = f"{names['output']}_shadow"
    try:
        wait_ready(client, names, CONTENDERS[kind][1], procs)
        if rate is None:
            # Backlog: freeze the ready consumers, load every event, then let them go, so the
            # producer's own speed is not what gets measured.
            for p in procs:
                p.send_signal(signal.SIGSTOP)
        chunk = 5000 if rate is None else 1000
        for start, end, at in _paced_chunks(len(payloads), rate, chunk):
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            broker.publish(names["input"], payloads[start:end])
        seconds_now, micros = client.time()  # type: ignore[misc]
        resumed_ms = seconds_now * 1000 + micros // 1000
        if rate is None:
            for p in procs:
                p.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + max_seconds
        wait_outputs(client, names["output"], len(payloads), deadline)
        stop_consumers(procs)  # each writes what its prediction log still has queued
        lat, first_in, last_out = latencies(client, names["output"])
        if rate is None:
            first_in = resumed_ms
        shadowed = int(client.xlen(shadow))
        logged = logged_rows(log_path)
    finally:
        stop_consumers(procs)
        if rollout_id is not None:
            end_rollout(rollout_id)
        client.delete(names["input"], names["output"], shadow, f"{names['input']}:dead-letter")
        broker.close()
        for leftover in LOGS.glob(f"{tag}.db*"):
            leftover.unlink()
    seconds = max(last_out - first_in, 1) / 1000
    return Phase(
        events=len(lat),
        sent=len(payloads),
        seconds=seconds,
        rate=len(lat) / seconds,
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
        logged=logged,
        shadowed=shadowed,
    )


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def render(results: dict[str, Result], args: argparse.Namespace) -> str:
    base_rates = [p.rate for p in results["baseline"].throughput]  # paired with each run
    base = statistics.median(base_rates)
    lines = [
        f"Throughput: a backlog of {args.events:,} ride events in Redis, drained "
        f"(median of {args.runs} runs; spread = min–max)",
        "",
        "| consumer | events done | events/s | spread | × baseline (per-run spread) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, result in results.items():
        rates = [p.rate for p in result.throughput]
        done = min(p.events for p in result.throughput)
        lines.append(
            f"| {CONTENDERS[kind][0]} | {done:,} of {args.events:,} | "
            f"{statistics.median(rates):,.0f} | {spread(rates)} | "
            f"{statistics.median(rates) / base:.1f}× "
            f"({spread([r / b for r, b in zip(rates, base_rates, strict=True)], '{:.1f}')}) |"
        )
    lines += [
        "",
        f"End-to-end latency at {args.rate:,.0f} events/s for {args.paced_seconds:g} s "
        "(event append → output append, Redis clock, ms)",
        "",
        "| consumer | events done | achieved events/s | p50 ms | p99 ms | p99 spread | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, result in results.items():
        p99s = [p.p99_ms for p in result.paced]
        done = min(p.events for p in result.paced)
        cut = "" if done >= result.paced[0].sent else " (fell behind, cut off)"
        lines.append(
            f"| {CONTENDERS[kind][0]}{cut} | {done:,} of {result.paced[0].sent:,} | "
            f"{statistics.median(p.rate for p in result.paced):,.0f} | "
            f"{statistics.median(p.p50_ms for p in result.paced):,.0f} | "
            f"{statistics.median(p99s):,.0f} | {spread(p99s)} | "
            f"{max(p.max_ms for p in result.paced):,.0f} |"
        )
    lines += ["", *logging_lines(results)]
    return "\n".join(lines)


def logging_lines(results: dict[str, Result]) -> list[str]:
    """What the prediction log and the shadow stream got, and the rollout goal's ratio."""
    lines = [
        "Prediction log (SQLite, one file per phase) and shadow stream, throughput phases",
        "",
        "| consumer | live rows logged | shadow rows logged | shadow stream entries |",
        "|---|---:|---:|---:|",
    ]
    for kind, result in results.items():
        if kind == "baseline":
            continue
        live = [sum(n for arm, n in p.logged.items() if arm != "shadow") for p in result.throughput]
        shadow = [p.logged.get("shadow", 0) for p in result.throughput]
        lines.append(
            f"| {CONTENDERS[kind][0]} | {spread(live)} | {spread(shadow)} | "
            f"{spread([p.shadowed for p in result.throughput])} |"
        )
    if "ridecast-rollout" in results:
        ratios = [
            r.rate / b.rate
            for r, b in zip(
                results["ridecast-rollout"].throughput, results["baseline"].throughput, strict=True
            )
        ]
        verdict = "met" if statistics.median(ratios) >= 20 else "NOT met"
        lines += [
            "",
            f"Canary 50% + shadow 100% with logging on: {statistics.median(ratios):.1f}× the "
            f"per-event baseline (per run {spread(ratios, '{:.1f}')}); goal ≥ 20×: {verdict}.",
        ]
    return lines


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so consumers are stopped too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="Cut a throughput phase off after this long (the per-event baseline needs it).",
    )
    parser.add_argument("--only", choices=list(CONTENDERS), action="append")
    args = parser.parse_args()
    host = args.redis.split("://", 1)[-1].split("@")[-1].split("/")[0].split(":")[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the benchmark only sends traffic to a Redis on 127.0.0.1")

    versions = prepare_model(60_000)
    payloads = event_payloads(args.events)
    paced = event_payloads(int(args.rate * args.paced_seconds))
    kinds = args.only or list(CONTENDERS)
    results = {kind: Result() for kind in kinds}
    for run in range(args.runs):
        for kind in kinds:  # interleaved, so a noisy neighbour hurts every contender alike
            log(f"run {run + 1}/{args.runs}: {kind} throughput, {len(payloads):,} events")
            p = phase(kind, args.redis, payloads, None, args.max_seconds, versions)
            log(f"  {p.rate:,.0f} events/s ({p.events:,} done)")
            results[kind].throughput.append(p)
            log(f"run {run + 1}/{args.runs}: {kind} paced at {args.rate:,.0f}/s")
            p = phase(kind, args.redis, paced, args.rate, args.paced_seconds + 20, versions)
            log(f"  p50 {p.p50_ms:,.0f} ms, p99 {p.p99_ms:,.0f} ms, max {p.max_ms:,.0f} ms")
            results[kind].paced.append(p)
    if "baseline" not in results:
        print(json.dumps({k: asdict(v) for k, v in results.items()}, indent=1))
        return
    table = render(results, args)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"stream-{stamp}.md").write_text(table + "\n")
    (out / f"stream-{stamp}.json").write_text(
        json.dumps({k: asdict(v) for k, v in results.items()}, indent=1)
    )
    log(f"results in bench/results/stream-{stamp}.md")


if __name__ == "__main__":
    main()
