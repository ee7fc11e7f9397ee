"""Simulated riders: continuous load on a ridecast server, with feedback when each ride ends.

Used by ``ridecast demo`` (its canary) and by the end-to-end rollout tests.

Each rider thread books rides from a real (synthetic TLC) month at a fixed rate: it POSTs the ride
to ``/predict`` with a ride id and a user id, and once the ride "ends" (a short delay) its actual
duration goes to ``/feedback`` (the rides that ended since the thread last looked, in one list).
Every answer is recorded, so a test can say how many requests failed (the goal: none) and which
version answered whom.

The riders share a machine with the server under test, so each thread keeps one plain
``http.client`` keep-alive connection: a fraction of an HTTP library's CPU per request, which
keeps the offered rate steady when the server, a batch job and a consumer compete for two cores.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson


@dataclass
class Outcome:
    at: float
    status: int | str
    version: str | None
    user: str


class _Connection:
    """One keep-alive HTTP/1.1 connection to the server; reopened after a failure."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Content-Type": "application/json", **headers}
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: Any) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request("POST", path, body=orjson.dumps(body), headers=self.headers)
            response = self._conn.getresponse()
            return response.status, response.read()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Rides:
    pu: np.ndarray
    do: np.ndarray
    distance: np.ndarray
    actual: np.ndarray

    @classmethod
    def from_month(cls, path: Path, limit: int = 50_000) -> Rides:
        """The rides of a TLC month file that a model would see (training filters), with the
        duration each really took."""
        from ridecast.data.readers import filter_training_rows, read_trips

        df = filter_training_rows(read_trips(path)).head(limit)
        return cls(
            df["PULocationID"].to_numpy(np.int64),
            df["DOLocationID"].to_numpy(np.int64),
            df["trip_distance"].to_numpy(np.float64),
            df["duration"].to_numpy(np.float64),
        )


@dataclass
class Riders:
    base_url: str
    rides: Rides
    rate: float = 240.0  # requests per second, all threads together
    # Enough threads that the rate holds while answers are slow (a shared 2-core machine):
    # each thread can fall behind by up to threads / rate seconds per request and catch up.
    threads: int = 16
    feedback: bool = True
    # Riders are many clients: a thread opens a new connection every this many requests, so the
    # load spreads over every worker of the server (a kept-alive connection sticks to one).
    requests_per_connection: int = 20
    ride_seconds: tuple[float, float] = (0.3, 1.5)
    headers: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    feedback_failures: list[Any] = field(default_factory=list)
    feedback_sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Riders:
        self._stop.clear()
        counter = itertools.count()
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t, counter), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self._workers.clear()

    def _run(self, thread: int, counter: itertools.count[int]) -> None:
        interval = self.threads / self.rate
        rng = np.random.default_rng(thread)
        pending: list[tuple[float, int, str]] = []  # (ends at, ride index, ride id)
        n = len(self.rides.pu)
        connection = _Connection(self.base_url, self.headers)
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                ended: list[tuple[int, str]] = []
                while self.feedback and pending and pending[0][0] <= now:
                    _, index, ride_id = heapq.heappop(pending)
                    ended.append((index, ride_id))
                if ended:
                    self._send_feedback(connection, ended)
                if now < next_at:
                    time.sleep(min(next_at - now, 0.01))
                    continue
                next_at += interval
                k = next(counter)
                index = k % n
                ride_id = f"ride-{k}"
                user = f"user-{int(rng.integers(0, 5000))}"
                body = {
                    "PULocationID": int(self.rides.pu[index]),
                    "DOLocationID": int(self.rides.do[index]),
                    "trip_distance": float(self.rides.distance[index]),
                    "ride_id": ride_id,
                    "user_id": user,
                }
                version = None
                if k % self.requests_per_connection == 0:
                    connection.close()
                try:
                    status: int | str
                    status, content = connection.post("/predict", body)
                    if status == 200:
                        version = orjson.loads(content).get("model_version")
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.outcomes.append(Outcome(time.monotonic(), status, version, user))
                if status == 200:
                    delay = float(rng.uniform(*self.ride_seconds))
                    heapq.heappush(pending, (time.monotonic() + delay, index, ride_id))
        finally:
            connection.close()

    def _send_feedback(self, connection: _Connection, ended: list[tuple[int, str]]) -> None:
        body = [
            {"ride_id": ride_id, "actual_duration": float(self.rides.actual[index])}
            for index, ride_id in ended
        ]
        try:
            status, content = connection.post("/feedback", body)
            if status != 200:
                self.feedback_failures.append((ended[0][1], status, content[:200]))
        except (OSError, http.client.HTTPException) as exc:
            self.feedback_failures.append((ended[0][1], type(exc).__name__))
        self.feedback_sent += len(ended)

    # --- reading the outcomes ---

    def since(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= t]

    def failed(self, t: float = 0.0) -> list[Outcome]:
        return [o for o in self.since(t) if o.status != 200]

    def versions(self, t: float) -> Counter[str | None]:
        return Counter(o.version for o in self.since(t))

    def rate_since(self, t: float) -> float:
        window = self.since(t)
        if len(window) < 2:
            return 0.0
        return len(window) / max(window[-1].at - window[0].at, 1e-9)
