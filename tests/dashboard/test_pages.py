"""The dashboard in a real browser (Debian's chromium, driven by Playwright) over the data the
session's world made: each page loads with no console error and no failed request, and draws
the test's own figures. A screenshot of each page goes to test-artifacts/dashboard/."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ridecast.control.measure import measure
from ridecast.control.store import RolloutStore
from ridecast.monitoring.database import shared_engine
from ridecast.rollout.measurements import FAR_APART_MINUTES
from tests.dashboard.conftest import World

pytestmark = pytest.mark.timeout(300)


def cells(visit: Any, selector: str) -> list[list[str]]:
    """The text of each body row of the table matching ``selector``."""
    return visit.page.eval_on_selector_all(
        f"{selector} tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
    )


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_live_page_draws_both_versions_and_refreshes(visit: Any, world: World) -> None:
    v = visit(world.page("?window=5m"))
    rows = {r[0]: r for r in cells(v, "table.versions")}
    # Every answer the riders got was logged once, by the version that gave it.
    assert {k.lstrip("v") for k in rows} == set(world.answers) == {"1", "2"}
    for version, answered in world.answers.items():
        assert number(rows[f"v{version}"][1]) == answered
    labels = v.charts("c['live-rps'].series.map(s => s.label)")
    assert labels[1:] == ["v1", "v2"]
    step = v.charts("c['live-rps'].data[0][1] - c['live-rps'].data[0][0]")
    drawn = v.charts("c['live-rps'].data.slice(1).map(s => s.reduce((a, b) => a + (b || 0), 0))")
    assert [round(total * step) for total in drawn] == [world.answers["1"], world.answers["2"]]
    assert v.charts("c['live-latency'].series.length") == 5  # x, p50 and p99 of each version
    shares = v.charts("c['live-predictions'].data.slice(1).map(s => s.slice(0, -1))")
    assert len(shares) == 2 and all(abs(sum(s) - 1.0) < 1e-9 for s in shares)
    error_rates = v.charts("c['live-errors'].data.slice(1).flat().filter(x => x !== null)")
    assert error_rates and set(error_rates) == {0}
    v.shot("live")

    # Live: new answers show up at the next poll, without reloading the page.
    updates = int(v.page.evaluate("document.body.dataset.updates"))
    with httpx.Client(base_url=world.base_url, timeout=10) as client:
        for i in range(7):
            ride = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0}
            assert client.post("/predict", json={**ride, "ride_id": f"live-{i}"}).status_code == 200
    time.sleep(1.2)  # the log's writer flushes every 0.5 s
    v.wait_until(f"Number(document.body.dataset.updates) > {updates}", timeout=15)
    rows = {r[0]: r for r in cells(v, "table.versions")}
    assert number(rows["v1"][1]) == world.answers["1"] + 7
    assert v.problems == []


def _state(world: World, rollout_id: str) -> Any:
    store = RolloutStore(world.settings.resolved_state_url)
    state = store.get(rollout_id)
    assert state is not None
    return store, state


def test_rollouts_page_shows_the_canary_its_analyses_and_transitions(
    visit: Any, world: World
) -> None:
    store, state = _state(world, world.rollouts["canary"])
    v = visit(world.page(f"rollouts?id={state.id}"))
    history = store.history(state.id)
    shown = cells(v, "table.transitions")
    assert [r[6] for r in shown] == [h["reason"] for h in history]
    assert [number(r[3]) for r in shown] == [h["weight"] for h in history]
    verdicts = [h["figures"]["verdict"] for h in history if h["figures"].get("verdict")]
    assert verdicts == ["pass", "pass"]  # both analyses of the canary, before its pause step
    assert v.page.locator("details.analysis").count() == 2
    assert v.page.locator("details.analysis summary .badge.pass").count() == 2
    weights = v.charts("c['rollout-weights'].data[1]")
    assert weights[: len(history)] == [h["weight"] for h in history]
    assert 50 in weights and 70 in weights and weights[-1] == 0  # aborted at the end
    v.shot("rollouts-canary")
    assert v.problems == []


def test_rollouts_page_draws_the_ab_confidence_sequence(visit: Any, world: World) -> None:
    _store, state = _state(world, world.rollouts["ab"])
    v = visit(world.page(f"rollouts?id={state.id}"))
    # The figures the controller's own measurement gives for the whole test.
    since = float(state.memory.get("since", state.step_started_at))
    m = measure(shared_engine(world.log_url), state, since, state.updated_at, "duration")
    variants = {r[0]: r for r in cells(v, "table.variants")}
    assert number(variants["a"][2]) == m.stable.joined > 0
    assert number(variants["b"][2]) == m.candidate.joined > 0
    assert abs(number(variants["a"][3]) - m.stable.mae) < 1e-3
    assert abs(number(variants["b"][3]) - m.candidate.mae) < 1e-3
    series = v.charts("c['ab-sequence'].series.map(s => s.label)")
    assert series[1:] == ["d̂ = MAE_b − MAE_a", "low", "high", "no difference"]
    d_hat = [x for x in v.charts("c['ab-sequence'].data[1]") if x is not None]
    low = [x for x in v.charts("c['ab-sequence'].data[2]") if x is not None]
    high = [x for x in v.charts("c['ab-sequence'].data[3]") if x is not None]
    assert len(d_hat) >= 2 and all(
        lo <= d <= hi for lo, d, hi in zip(low, d_hat, high, strict=True)
    )
    # The sequence ends where the measurement of the whole test is.
    assert abs(d_hat[-1] - (m.candidate.mae - m.stable.mae)) < 1e-6
    v.shot("rollouts-ab")
    assert v.problems == []


def test_rollouts_page_shows_the_shadow_by_default(visit: Any, world: World) -> None:
    _store, state = _state(world, world.rollouts["shadow"])
    v = visit(world.page("rollouts"))  # the shadow run is the current (paused) rollout
    assert v.page.locator("#rollout-cards").inner_text().count("shadow") >= 1
    # Paused at the end of its run, the shadow still copies requests: the page counts to now.
    m = measure(shared_engine(world.log_url), state, state.created_at, time.time(), "duration")
    assert m.shadow.n > 0
    points = v.charts("c['shadow-scatter'].data[1].length")
    assert points == min(m.shadow.n, 1500)
    lines = v.page.locator("#shadow-cards").inner_text().splitlines()
    cards = {lines[i].lower(): lines[i + 1] for i in range(0, len(lines) - 1, 2)}
    assert number(cards["pairs"]) == m.shadow.n
    share = m.shadow.share_over_2_min  # the controller's shadow report, same window
    assert share is not None
    assert abs(number(cards["more than 2 min apart"]) - 100 * share) <= 0.05
    assert FAR_APART_MINUTES == 2.0
    v.shot("rollouts")
    assert v.problems == []


def test_batch_page_shows_the_month_from_the_database(visit: Any, world: World) -> None:
    v = visit(world.page("batch"))
    rows = cells(v, "table.runs")
    assert len(rows) == 1
    month, taxi, model, version, kind, read, scored, rejected = rows[0][:8]
    assert (month, taxi, model, version, kind) == (
        "2025-02",
        "green",
        "ride-duration",
        "v1",
        "score",
    )
    record = world.batch_record  # what the job wrote beside its predictions
    assert number(read) == world.batch_rows_read == record["rows_read"]
    assert number(scored) == record["rows_scored"] and number(rejected) == record["rows_rejected"]
    assert abs(number(rows[0][11]) - record["mae"]) < 1e-3
    labels = v.charts("c['batch-durations'].series.map(s => s.label)")
    assert labels[1:] == ["predicted", "actual"]
    actual = v.charts("c['batch-durations'].data[2].slice(0, -1)")
    counts = record["histograms"]["actual"]["counts"]
    assert [round(x * record["rows_scored"]) for x in actual] == counts
    reasons = v.charts("c['batch-rejects'].data[1]")
    assert sorted(reasons, reverse=True) == sorted(record["rejected"].values(), reverse=True)
    v.shot("batch")
    assert v.problems == []


def test_drift_page_flags_the_shifted_month_and_not_the_other(visit: Any, world: World) -> None:
    v = visit(world.page("drift"))
    v.wait_until(
        "document.querySelectorAll('table.months tbody tr').length && "
        "[...document.querySelectorAll('table.months tbody tr')].every("
        "r => !r.innerText.includes('computing'))",
        timeout=90,
    )
    months = {r[0]: r for r in cells(v, "table.months")}
    assert set(months) == {"green 2025-01", "green 2025-02", "green 2025-03"}
    assert months["green 2025-03"][1] == "drift"
    assert months["green 2025-02"][1] == "no drift"
    assert months["green 2025-01"][1] == "no drift"  # the training month itself
    assert "trip_distance" in months["green 2025-03"][3]
    # The newest month is shown in detail: each column with its flag and its chart.
    v.page.wait_for_selector("#drift-col-trip_distance[data-drifted=true]", timeout=30_000)
    assert v.page.locator("#drift-col-PULocationID[data-drifted=true]").count() == 1
    distance = v.charts("c['drift-trip_distance'].data.slice(1).map(s => s.length)")
    assert len(distance) == 2 and distance[0] > 2
    v.shot("drift")
    v.page.select_option("select[name=subject]", "green:2025-02")
    v.page.wait_for_selector("#drift-col-trip_distance[data-drifted=false]", timeout=60_000)
    assert v.page.locator("[data-drifted=true]").count() == 0
    assert v.problems == []
