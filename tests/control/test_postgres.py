"""The same control on a PostgreSQL state store, as compose and Kubernetes run it: the lease, the
takeover, the conditional save and a promotion. Each test gets a database of its own, so no
other test's rollouts or lease are in sight."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ridecast.control import ops
from ridecast.control.controller import Controller
from ridecast.control.store import RolloutStore
from ridecast.errors import RolloutError

from ..conftest import Trained
from . import Home, private_home
from .test_controller import PAUSES


@pytest.fixture
def pg_store(postgres_url: str, unique_name: str) -> Iterator[RolloutStore]:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{unique_name}"'))
    url = make_url(postgres_url).set(database=unique_name).render_as_string(hide_password=False)
    store = RolloutStore(url)
    try:
        yield store
    finally:
        store.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{unique_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home", rollout_lease_seconds=1.0) as h:
        yield h


def test_lease_takeover_and_promotion_on_postgresql(home: Home, pg_store: RolloutStore) -> None:
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=pg_store, now=t0)
    with pytest.raises(RolloutError, match="already has an active rollout"):
        ops.start(home.settings, PAUSES, registry=home.registry, store=pg_store, now=t0)
    a = Controller(home.settings, home.registry, pg_store, holder="a")
    b = Controller(home.settings, home.registry, pg_store, holder="b")
    assert a.tick(now=t0 + 1.5) and not b.tick(now=t0 + 1.5)
    mid = pg_store.get(rollout.id)
    assert (mid.step, mid.weight) == (3, 60)
    # The save is conditional on the state read: a stale write is refused, on PostgreSQL too.
    with pytest.raises(RolloutError, match="changed while"):
        pg_store.save(rollout.evolve(weight=99), reason="stale", expected_updated_at=t0 - 1)
    a.stop(release=False)
    assert not b.tick(now=t0 + 5)
    time.sleep(1.1)
    assert b.tick(now=t0 + 5)
    final = pg_store.get(rollout.id)
    assert (final.phase, final.weight) == ("promoted", 100)
    assert home.champion() == "2"
    assert [r["actor"] for r in pg_store.history(rollout.id)] == [
        "cli",
        "controller a",
        "controller b",
    ]
    assert ops.status(home.settings, store=pg_store)["phase"] == "promoted"
