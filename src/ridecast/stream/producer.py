"""Replay a month of trips as ride events (and ride-progress events), at a given rate.

The backend of the course pushes one event per ride as it starts; replaying a TLC month does the
same with real rides. Each ride becomes ``{"ride": {...}, "ride_id": "green/2025-02/123"}`` (the
ride id is the taxi type, the month and the row's position in the month's file). With
``progress`` each ride also yields ride-progress events at the given shares of its actual
duration (``elapsed_minutes``) and distance (``distance_covered``) for the dynamic-duration
service.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from ridecast.errors import RidecastError
from ridecast.stream.broker import Broker, BrokerUnavailable

if TYPE_CHECKING:
    import pandas as pd

PROGRESS_POINTS = (0.25, 0.5, 0.75)
_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<k>[kK])?\s*(?:/\s*s(?:ec)?)?\s*$")


def parse_rate(text: str) -> float | None:
    """``"500/s"``, ``"2k/s"``, ``"2000"`` → events per second; ``"max"`` or ``"0"`` → None
    (as fast as the broker takes them)."""
    if text.strip().lower() in ("max", "0", "0/s", "unlimited"):
        return None
    match = _RATE.match(text)
    if not match:
        raise RidecastError(
            f"rate {text!r} is not understood; expected events per second like 500/s, 2k/s or max"
        )
    rate = float(match["n"]) * (1000 if match["k"] else 1)
    return rate if rate > 0 else None


@dataclass(frozen=True)
class Rides:
    """Rides to replay, column-wise."""

    ride_ids: list[str]
    pu: np.ndarray
    do: np.ndarray
    distance: np.ndarray
    duration: np.ndarray  # actual minutes (for progress events); NaN when unknown

    def __len__(self) -> int:
        return len(self.ride_ids)


def load_rides(
    data_dir: Path, taxi_type: str, month: str, *, limit: int | None = None, dirty: bool = False
) -> tuple[Rides, int]:
    """The month's rides in file order, and how many were skipped as not valid events (null or
    unknown zone ids, negative or absurd distances). ``dirty`` keeps them (they will end up in
    the dead-letter stream: useful to watch it work)."""
    from ridecast.data.readers import find_month_file, read_trips
    from ridecast.data.schema import parse_month, parse_taxi_type

    kind, when = parse_taxi_type(taxi_type), parse_month(month)
    df = read_trips(find_month_file(data_dir, kind, when), kind, when)
    return rides_from_frame(df, f"{kind.value}/{when}", limit=limit, dirty=dirty)


def rides_from_frame(
    df: pd.DataFrame, id_prefix: str, *, limit: int | None = None, dirty: bool = False
) -> tuple[Rides, int]:
    import pandas as pd

    from ridecast.rides import scorable

    def floats(column: str) -> np.ndarray:
        values = pd.to_numeric(df[column], errors="coerce")
        return values.to_numpy(dtype=np.float64, na_value=np.nan)

    pu, do, dist = floats("PULocationID"), floats("DOLocationID"), floats("trip_distance")
    keep = np.ones(len(df), dtype=bool) if dirty else scorable(pu, do, dist)
    skipped = int(len(df) - keep.sum())
    rows = np.flatnonzero(keep)
    if limit is not None:
        rows = rows[:limit]
    source_row = df["source_row"].to_numpy() if "source_row" in df else np.arange(len(df))
    duration = floats("duration") if "duration" in df else np.full(len(df), np.nan)
    return (
        Rides(
            ride_ids=[f"{id_prefix}/{r}" for r in source_row[rows].tolist()],
            pu=pu[rows],
            do=do[rows],
            distance=dist[rows],
            duration=duration[rows],
        ),
        skipped,
    )


def _json_number(x: float) -> int | float | None:
    if math.isnan(x):
        return None
    return int(x) if x.is_integer() else x


def ride_payloads(rides: Rides, start: int, stop: int) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "ride": {
                    "PULocationID": _json_number(p),
                    "DOLocationID": _json_number(d),
                    "trip_distance": _json_number(x),
                },
                "ride_id": ride_id,
            }
        )
        for ride_id, p, d, x in zip(
            rides.ride_ids[start:stop],
            rides.pu[start:stop].tolist(),
            rides.do[start:stop].tolist(),
            rides.distance[start:stop].tolist(),
            strict=True,
        )
    ]


def progress_payloads(
    rides: Rides, start: int, stop: int, points: Sequence[float] = PROGRESS_POINTS
) -> list[bytes]:
    """Ride-progress events for rides with a known duration, ``len(points)`` per ride."""
    out = []
    for i in range(start, stop):
        minutes, miles = float(rides.duration[i]), float(rides.distance[i])
        if not (minutes > 0 and math.isfinite(minutes) and math.isfinite(miles)):
            continue
        ride = {
            "PULocationID": _json_number(float(rides.pu[i])),
            "DOLocationID": _json_number(float(rides.do[i])),
            "trip_distance": _json_number(miles),
        }
        for share in points:
            out.append(
                orjson.dumps(
                    {
                        "ride": ride,
                        "ride_id": rides.ride_ids[i],
                        "progress": {
                            "elapsed_minutes": round(share * minutes, 3),
                            "distance_covered": round(share * miles, 3),
                        },
                    }
                )
            )
    return out


@dataclass
class ProduceResult:
    events: int
    progress_events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _paced_chunks(n: int, rate: float | None, chunk: int) -> Iterator[tuple[int, int, float]]:
    """(start, stop, send-at monotonic time) for chunks of the replay."""
    size = chunk if rate is None else max(1, min(chunk, int(rate / 200) or 1))
    began = time.monotonic()
    for start in range(0, n, size):
        at = began if rate is None else began + start / rate
        yield start, min(start + size, n), at


def produce(
    broker: Broker,
    rides: Rides,
    *,
    stream: str,
    rate: float | None = None,
    progress_stream: str | None = None,
    progress_points: Sequence[float] = PROGRESS_POINTS,
    chunk: int = 1000,
    maxlen: int | None = None,
    stop: threading.Event | None = None,
    on_sent: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ProduceResult:
    """Publish ``rides`` as ride events (and progress events) at ``rate`` events/s (None: as
    fast as possible). Chunks are sent at most every 5 ms so pacing stays smooth. A broker
    outage is waited out and the chunk sent again (at-least-once: a chunk whose reply was
    lost may appear twice — outputs carry ride_id, see ``ridecast stream dedupe``)."""
    started = time.monotonic()
    sent = progress_sent = 0
    for start, end, at in _paced_chunks(len(rides), rate, chunk):
        if stop is not None and stop.is_set():
            break
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        payloads = ride_payloads(rides, start, end)
        progress = progress_payloads(rides, start, end, progress_points) if progress_stream else []
        backoff = 0.1
        while True:
            try:
                broker.publish(stream, payloads, maxlen=maxlen)
                if progress and progress_stream:
                    broker.publish(progress_stream, progress, maxlen=maxlen)
                break
            except BrokerUnavailable as exc:
                if log:
                    log(f"{exc}; retrying in {backoff:.1f}s")
                if stop is not None and stop.wait(backoff):
                    break
                if stop is None:
                    time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        sent += len(payloads)
        progress_sent += len(progress)
        if on_sent:
            on_sent(len(payloads))
    return ProduceResult(sent, progress_sent, time.monotonic() - started)
