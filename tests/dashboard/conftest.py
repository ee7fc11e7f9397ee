"""The dashboard's world: a real server over the trained registry, real riders with feedback, a
canary with analyses, an A/B test, a shadow run, a batch month scored by the real CLI, and a
month shifted on purpose next to one that is not; and a headless Chromium to look at it.

Everything is built once per session and shared by the dashboard's tests. The champion alias is
never moved (the rollouts end paused, aborted or inconclusive), so the session's other tests
find the registry as they expect it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ridecast.data.readers import find_month_file
from ridecast.data.schema import Month, TaxiType
from ridecast.data.synth import synthesize_month, write_month
from ridecast.riders import Riders, Rides
from ridecast.settings import Settings
from tests.conftest import Trained
from tests.monitoring.conftest import pg_url  # noqa: F401  (a PostgreSQL schema per test)
from tests.web.conftest import _serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
TAXI = TaxiType.GREEN
TRAIN, VALID, DRIFTED = Month(2025, 1), Month(2025, 2), Month(2025, 3)
DRIFT_ROWS = 20_000
RIDECAST = [sys.executable, "-m", "ridecast"]
CHROMIUM = os.environ.get("RIDECAST_TEST_CHROMIUM", "/usr/bin/chromium")
# Debian's chromium, as the tests run it: no sandbox (root in CI), no GPU, nothing fetched.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("RIDECAST_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"

THRESHOLDS = """analysis:
  min_samples: 80
  max_mae_ratio: 1.5
  max_error_rate: 0.01
  max_p99_latency_ms: 5000
  timeout: 60s
"""
CANARY = (
    """model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 50
  - analysis: {duration: 3s}
  - set_weight: 70
  - analysis: {duration: 3s}
  - pause: {}
"""
    + THRESHOLDS
)
AB = (
    """model: ride-duration
candidate: challenger
strategy: ab
ab: {weight: 50, promote_winner: false, max_duration: 8s}
"""
    + THRESHOLDS
)
SHADOW = (
    """model: ride-duration
candidate: challenger
strategy: shadow
shadow: {percent: 100, duration: 5s}
"""
    + THRESHOLDS
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_browser() -> None:
    """Skip on a laptop without Debian's chromium (or Playwright); fail in CI, where .ci/run
    installs it."""
    problem = None
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (make test installs the dev lock)"
    if problem is None:
        return
    if _in_ci():
        pytest.fail(f"{problem} (CI=true: the browser tests must run)")
    pytest.skip(problem)


@dataclass
class World:
    """What the dashboard's tests look at, and what the test made, to compare with."""

    base_url: str  # the web service; its dashboard is at /dashboard/
    settings: Settings
    log_url: str
    data_dir: Path
    answers: dict[str, int]  # live answers per version, as the riders saw them
    rollouts: dict[str, str]  # strategy -> rollout id
    batch_rows_read: int
    batch_record: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def page(self, path: str = "") -> str:
        return f"{self.base_url}/dashboard/{path}"


def _drifted_month(data_dir: Path) -> None:
    """March as the city would look after a change: every ride 1.5× longer, and half of all
    pickups moved to three zones (JFK, LaGuardia, Midtown Center)."""
    table = synthesize_month(TAXI, DRIFTED, DRIFT_ROWS, seed=7)
    distance = pc.multiply(table["trip_distance"], 1.5)
    rng = np.random.default_rng(3)
    pickups = table["PULocationID"].to_numpy(zero_copy_only=False).astype("float64")
    moved = rng.random(len(pickups)) < 0.5
    pickups[moved] = rng.choice([132, 138, 161], size=int(moved.sum()))
    names = table.schema.names
    table = table.set_column(names.index("trip_distance"), "trip_distance", distance)
    pu_type = table.schema.field("PULocationID").type
    table = table.set_column(
        names.index("PULocationID"),
        "PULocationID",
        pa.array(pickups, mask=np.isnan(pickups)).cast(pu_type),
    )
    write_month(table, data_dir, TAXI, DRIFTED)


def _wait_phase(store: Any, rollout_id: str, phases: set[str], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    state = store.get(rollout_id)
    while time.monotonic() < deadline:
        state = store.get(rollout_id)
        if state is not None and state.phase in phases:
            return state
        time.sleep(0.25)
    history = [(h["phase"], h["reason"]) for h in store.history(rollout_id)]
    raise AssertionError(f"{rollout_id} not in {phases} after {timeout}s: {history}")


def _score_batch(
    trained: Trained, settings: Settings, out: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **trained.env(),
        "RIDECAST_PREDICTION_LOG_URL": settings.resolved_prediction_log_url,
        "RIDECAST_DATA_DIR": str(settings.resolved_data_dir),
    }
    return subprocess.run(
        [*RIDECAST, "batch", "score", "--month", str(VALID), "--sink", out, "--no-follow-rollout"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="package")
def world(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from ridecast.control import ops
    from ridecast.modelref import ModelRef
    from ridecast.web.app import create_app

    root = tmp_path_factory.mktemp("dashboard")
    data_dir = root / "data"
    data_dir.mkdir()
    for month in (TRAIN, VALID):
        source = find_month_file(trained.data_dir, TAXI, month)
        shutil.copy(source, data_dir / source.name)
    _drifted_month(data_dir)
    log_url = f"sqlite:///{root / 'predictions.db'}"
    settings = trained.settings.model_copy(
        update={
            "serve_models": "ride-duration",
            "serve_watch_interval": 0.5,
            "prediction_log_url": log_url,
            "data_dir": data_dir,
        }
    )
    registry: Any = trained.registry
    app = create_app(settings, registry=registry)
    batch: dict[str, Any] = {}
    batch_thread = threading.Thread(
        target=lambda: batch.update(result=_score_batch(trained, settings, root / "scores"))
    )
    for url in _serve_in_thread(app):
        store = app.service.store
        rides = Rides.from_month(find_month_file(data_dir, TAXI, VALID))
        riders = Riders(url, rides, rate=160.0, threads=6, ride_seconds=(0.2, 0.6))
        riders.start()
        batch_thread.start()  # the batch job runs beside the rollouts, as it would in production
        ids: dict[str, str] = {}
        try:
            canary = ops.start(settings, CANARY, registry=registry, store=store, actor="test")
            ids["canary"] = canary.id
            _wait_phase(store, canary.id, {"paused", "aborted", "inconclusive"}, 60)
            ops.abort(
                settings, canary.id, store=store, reason="test: canary looked at", actor="test"
            )
            ab = ops.start(settings, AB, registry=registry, store=store, actor="test")
            ids["ab"] = ab.id
            state = _wait_phase(store, ab.id, {"paused", "aborted", "inconclusive"}, 60)
            if state.phase == "paused":
                ops.abort(settings, ab.id, store=store, reason="test: A/B looked at", actor="test")
            shadow = ops.start(settings, SHADOW, registry=registry, store=store, actor="test")
            ids["shadow"] = shadow.id
            _wait_phase(store, shadow.id, {"paused", "aborted", "inconclusive"}, 60)
        finally:
            riders.stop()
            batch_thread.join(timeout=180)
        assert not riders.failed(), riders.failed()[:5]
        assert registry.resolve(ModelRef("ride-duration", "champion")) == "1"
        result = batch["result"]
        assert result.returncode == 0, result.stdout + result.stderr
        app.service.prediction_log.flush()
        answers: dict[str, int] = {}
        for outcome in riders.outcomes:
            answers[str(outcome.version)] = answers.get(str(outcome.version), 0) + 1
        run = next((root / "scores").rglob("_run.json"))
        record = json.loads(run.read_text())
        rows_read = pq.ParquetFile(find_month_file(data_dir, TAXI, VALID)).metadata.num_rows
        yield World(url, settings, log_url, data_dir, answers, ids, rows_read, record)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Visit:
    """One page in the browser, with everything that went wrong while it was open."""

    page: Any
    problems: list[str]

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def wait_until(self, expression: str, timeout: float = 30.0) -> None:
        """Poll ``expression`` in the page until it is true. (Playwright's wait_for_function
        evaluates a string, which the dashboard's Content-Security-Policy forbids, rightly.)"""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(f"() => Boolean({expression})"):
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout}s: {expression}")
            time.sleep(0.2)

    def charts(self, expression: str) -> Any:
        return self.page.evaluate(
            f"(() => {{ const c = window.ridecastCharts; return {expression}; }})()"
        )


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    """``visit(url)``: open the page at 1366×768 and wait for its first data; console errors,
    page errors, failed requests and HTTP errors are collected in ``problems``."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    visits: list[Visit] = []

    def open_page(url: str) -> Visit:
        page = context.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        page.goto(url)
        page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
        visit = Visit(page, problems)
        visits.append(visit)
        return visit

    try:
        yield open_page
    finally:
        context.close()
