"""What the rollout tests share: their own registry caches and state store over the session's
trained models, ride events with known inputs, and readers of streams and the prediction log."""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from ridecast.control.follower import Follower
from ridecast.control.store import RolloutStore
from ridecast.modelref import parse_model_uri
from ridecast.registry import Registry
from ridecast.rollout.state import RolloutState
from ridecast.stream.consumer import ConsumerConfig
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.stream.services import SERVICES

from .conftest import Streams

MODEL = "ride-duration"
CHAMPION = parse_model_uri(f"models:/{MODEL}@champion")


@dataclass
class Rig:
    registry: Registry  # its own caches; the shared registry's aliases are only read
    store: RolloutStore  # this test's own state database
    stable: str
    candidate: str
    log_url: str

    def start(
        self, *, strategy: str, weight: int, shadow: int, candidate: str = ""
    ) -> RolloutState:
        now = time.time()
        state = RolloutState(
            id=f"test-{uuid.uuid4().hex[:8]}",
            model=MODEL,
            strategy=strategy,
            stable_version=self.stable,
            candidate_version=candidate or self.candidate,
            weight=weight,
            shadow_percent=shadow,
            step_started_at=now,
            created_at=now,
            updated_at=now,
        )
        return self.store.create(state, reason="test", actor="test")

    def follower(self, interval: float = 0.5) -> Follower:
        follower = Follower(CHAMPION, self.registry, self.store, interval=interval)
        follower.refresh(first=True)
        return follower

    def predict(self, version: str, rides: list[dict[str, Any]]) -> list[float]:
        return self.registry.predictor(MODEL, version=version).predict_rides(rides)


def make_rig(trained, tmp_path: Path) -> Rig:  # type: ignore[no-untyped-def]
    registry = Registry(trained.settings)
    stable = registry.resolve(CHAMPION)
    candidate = registry.resolve(parse_model_uri(f"models:/{MODEL}@challenger"))
    assert stable != candidate
    store = RolloutStore(f"sqlite:///{tmp_path / 'state.db'}")
    return Rig(registry, store, stable, candidate, f"sqlite:///{tmp_path / 'predictions.db'}")


def events(ride_ids: list[int]) -> tuple[list[bytes], dict[int, dict[str, Any]]]:
    rides = {
        i: {
            "PULocationID": 1 + i % 260,
            "DOLocationID": 1 + (i * 7) % 260,
            "trip_distance": 0.5 + i % 97 / 10,
        }
        for i in set(ride_ids)
    }
    return [orjson.dumps({"ride": rides[i], "ride_id": i}) for i in ride_ids], rides


def entries(broker: RedisStreamBroker, stream: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(append ms, id of the event answered, record) of every entry, in order."""
    out = []
    for entry_id, fields in broker.client.xrange(stream, "-", "+"):
        ms = int(entry_id.split(b"-")[0])
        out.append((ms, fields[b"source"].decode(), orjson.loads(fields[b"data"])))
    return out


def config(trained, streams: Streams, **changes: Any) -> ConsumerConfig:  # type: ignore[no-untyped-def]
    base = ConsumerConfig.for_service(
        SERVICES["duration"],
        trained.settings,
        group=streams.group,
        consumer="c1",
        input_stream=streams.events,
        output_stream=streams.outputs,
    )
    return replace(base, block_ms=50, **changes)


def logged(url: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return db.execute(
            "SELECT version, arm, rollout_id, ride_id, source FROM predictions ORDER BY id"
        ).fetchall()
