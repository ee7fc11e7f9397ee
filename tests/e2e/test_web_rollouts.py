"""Rollouts end to end: a real 2-worker server under continuous load (≥ 200 req/s) with riders
whose feedback arrives when their ride ends, driven by the real `ridecast rollout` CLI.

Each test runs its rollout for at least 30 s of load and ends with zero failed requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridecast.riders import Riders
from tests.e2e.conftest import Models
from tests.web.conftest import Subprocess, start_server, stop_server

pytestmark = pytest.mark.slow
MIN_LOAD_SECONDS = 30.0
MIN_RATE = 200.0
# Generous latency bound: the riders, the server's 2 workers and the controller share 2 cores.
THRESHOLDS = "max_error_rate: 0.01\n  max_p99_latency_ms: 2000\n"


def why(status: dict[str, Any]) -> str:
    """What a failed phase assertion prints: the phase, its reason and each analysis verdict."""
    shown = {k: status.get(k) for k in ("phase", "reason", "weights", "analysis")}
    return json.dumps(shown, indent=1, default=str)[-6000:]


class Session:
    def __init__(self, models: Models, server: Subprocess, riders: Riders, env: dict[str, str]):
        self.models, self.server, self.riders, self.env = models, server, riders, env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ridecast", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def status(self, *, cli: bool = False) -> dict[str, Any]:
        """The rollout's status: from the real CLI, or (for polling, cheaper) the same
        operation in-process over the same state database."""
        if cli:
            args = ("rollout", "status", "--model", "ride-duration", "--json")
            return dict(json.loads(self.cli(*args).stdout))
        from ridecast.control import ops
        from ridecast.settings import Settings

        settings = Settings(
            home=self.models.home,
            tracking_uri=self.models.tracking_uri,
            prediction_log_url=self.env["RIDECAST_PREDICTION_LOG_URL"],
        )
        return ops.status(settings, "ride-duration")

    def start(self, tmp: Path, text: str) -> dict[str, Any]:
        path = tmp / "rollout.yaml"
        path.write_text(text)
        self.cli("rollout", "start", str(path))
        return self.status(cli=True)

    def wait_phase(self, phases: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("phase") in phases:
                return self.status(cli=True)
            time.sleep(0.5)
        raise AssertionError(
            f"no phase in {phases} within {timeout}s: {status}\n{self.server.log()[-3000:]}"
        )

    def champion(self) -> str:
        from ridecast.modelref import ModelRef

        return str(self.models.registry.resolve(ModelRef("ride-duration", "champion")))  # type: ignore[attr-defined]

    def set_champion(self, version: str) -> None:
        self.cli("models", "alias", "ride-duration", "champion", version)

    def hold_load(self, started: float) -> None:
        """Keep the load on until the test has run for MIN_LOAD_SECONDS."""
        remaining = started + MIN_LOAD_SECONDS - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def settle(self, version: str, timeout: float = 10.0) -> None:
        """Wait until the last second of answers all came from ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = self.riders.versions(time.monotonic() - 1.0)
            if set(recent) == {version}:
                return
            time.sleep(0.2)
        raise AssertionError(f"traffic did not settle on v{version}: {recent}")

    def finish(self, started: float, *, promoted: str | None = None) -> None:
        """End a test: traffic settles on the promoted version (then the champion goes back to
        v1 for the next test) or on v1, the load runs its minimum time, and nothing failed."""
        if promoted is not None:
            self.settle(promoted)
            self.set_champion("1")
        self.settle("1")
        self.hold_load(started)
        self.check_load(started)

    def check_load(self, started: float) -> None:
        failed = self.riders.failed(started)
        assert not failed, f"{len(failed)} failed requests, e.g. {failed[:5]}"
        assert not self.riders.feedback_failures, self.riders.feedback_failures[:5]
        assert time.monotonic() - started >= MIN_LOAD_SECONDS
        rate = self.riders.rate_since(started)
        assert rate >= MIN_RATE, f"load was {rate:.0f} req/s"


@pytest.fixture(scope="module")
def session(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    tmp = tmp_path_factory.mktemp("e2e-web")
    env = models.env(RIDECAST_PREDICTION_LOG_URL=f"sqlite:///{tmp / 'predictions.db'}")
    server = start_server(env, ["--workers", "2"], tmp / "server.log")
    riders = Riders(server.base_url, models.rides, rate=250.0).start()
    try:
        yield Session(models, server, riders, env)
    finally:
        riders.stop()
        stop_server(server)


def test_canary_to_a_worse_version_is_aborted_by_feedback(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    assert session.champion() == "1"
    status = session.start(
        tmp_path,
        "model: ride-duration\ncandidate: '3'\nstrategy: canary\nsteps:\n"
        "  - set_weight: 30\n  - analysis: {duration: 8s}\n  - set_weight: 60\n"
        "  - analysis: {duration: 8s}\n"
        # v3 also shifts the mean prediction; a loose bound leaves the verdict to feedback.
        "analysis:\n  min_samples: 150\n  max_mae_ratio: 1.05\n  max_mean_shift: 5\n"
        f"  {THRESHOLDS}",
    )
    assert status["phase"] == "progressing" and status["strategy"] == "canary"
    deadline = time.monotonic() + 30  # every worker loads v3 (MLflow, under load), then routes
    while "3" not in session.riders.versions(time.monotonic() - 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "3" in session.riders.versions(time.monotonic() - 1), "the canary took no traffic"
    final = session.wait_phase({"aborted", "promoted", "inconclusive"}, 90)
    assert final["phase"] == "aborted", why(final)
    assert "mae" in final["reason"].lower(), final["reason"]
    assert session.champion() == "1"
    session.finish(started)


def test_canary_without_feedback_stops_inconclusive(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    session.riders.feedback = False
    try:
        session.start(
            tmp_path,
            "model: ride-duration\ncandidate: challenger\nstrategy: canary\nsteps:\n"
            "  - set_weight: 30\n  - analysis: {duration: 5s, timeout: 15s}\n"
            f"analysis:\n  min_samples: 100\n  {THRESHOLDS}",
        )
        final = session.wait_phase({"aborted", "promoted", "inconclusive"}, 60)
    finally:
        session.riders.feedback = True
    assert final["phase"] == "inconclusive", why(final)
    assert session.champion() == "1"
    session.cli("rollout", "abort", "--model", "ride-duration", "--reason", "test over")
    session.finish(started)


def test_shadow_run_reports_the_comparison(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    session.start(
        tmp_path,
        "model: ride-duration\ncandidate: challenger\nstrategy: shadow\n"
        "shadow: {percent: 100, duration: 15s}\n"
        f"analysis:\n  min_samples: 100\n  {THRESHOLDS}",
    )
    time.sleep(3)
    assert set(session.riders.versions(time.monotonic() - 2)) == {"1"}, "callers saw the shadow"
    final = session.wait_phase({"paused", "promoted", "aborted", "inconclusive"}, 60)
    assert final["phase"] == "paused", why(final)
    shadow = final["analysis"][0]["figures"]["shadow"]
    assert shadow["n"] >= 100, shadow
    for figure in ("mean_abs_diff", "mean_signed_diff", "correlation", "share_over_2_min"):
        assert shadow[figure] is not None, (figure, shadow)
    assert 0.0 <= shadow["share_over_2_min"] <= 1.0 and -1.0 <= shadow["correlation"] <= 1.0
    assert shadow["p95_abs_diff"] >= shadow["mean_abs_diff"] * 0.5
    history = json.loads(
        session.cli("rollout", "history", "--model", "ride-duration", "--json").stdout
    )
    assert history, "no transitions recorded"
    session.cli("rollout", "abort", "--model", "ride-duration", "--reason", "shadow reviewed")
    assert session.champion() == "1"
    session.hold_load(started)
    session.check_load(started)


def test_blue_green_switches_and_switches_back(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    session.start(
        tmp_path,
        "model: ride-duration\ncandidate: '3'\nstrategy: blue_green\nblue_green:\n"
        "  shadow_percent: 100\n"
        "  pre_promotion: {duration: 5s, max_mae_ratio: 10.0, max_mean_shift: 10.0,\n"
        "                  min_samples: 50}\n"
        "  post_promotion: {duration: 8s, max_mae_ratio: 1.05, min_samples: 100}\n"
        "  scale_down_delay: 30s\n"
        f"analysis:\n  {THRESHOLDS}",
    )
    # The switch: all traffic to green (v3) at once.
    deadline = time.monotonic() + 60
    switched = False
    while time.monotonic() < deadline and not switched:
        switched = set(session.riders.versions(time.monotonic() - 1.0)) == {"3"}
        time.sleep(0.2)
    assert switched, f"never switched to green: {session.status()}"
    final = session.wait_phase({"aborted", "promoted", "inconclusive"}, 90)
    assert final["phase"] == "aborted", why(final)
    assert session.champion() == "1"
    session.finish(started)


def test_ab_test_reaches_its_decision(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    session.start(
        tmp_path,
        "model: ride-duration\ncandidate: challenger\nstrategy: ab\n"
        "ab: {weight: 50, alpha: 0.05, decision_n: 2000, max_duration: 120s}\n"
        f"analysis:\n  {THRESHOLDS}",
    )
    final = session.wait_phase({"aborted", "promoted", "inconclusive"}, 150)
    # v2 (gbm) is the better model on these rides: the documented decision is to promote b.
    assert final["phase"] == "promoted", why(final)
    assert session.champion() == "2"
    session.finish(started, promoted="2")


def test_rolling_moves_the_workers_one_at_a_time(session: Session, tmp_path: Path) -> None:
    import httpx

    started = time.monotonic()
    session.start(
        tmp_path,
        "model: ride-duration\ncandidate: challenger\nstrategy: rolling\n"
        f"rolling: {{workers: 2, interval: 6s}}\nanalysis:\n  {THRESHOLDS}",
    )
    seen: list[tuple[float, int, str | None]] = []  # (time, worker, version it answers with)
    deadline = time.monotonic() + 90
    phase = "progressing"
    # A new connection each time, so both workers get asked (a kept-alive one sticks to one).
    with httpx.Client(
        base_url=session.server.base_url,
        timeout=5,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        while time.monotonic() < deadline and phase == "progressing":
            health = client.get("/health").json()
            model = health["models"]["ride-duration"]
            seen.append((time.monotonic(), health["worker"], model["answering"]))
            phase = session.status()["phase"] if len(seen) % 10 == 0 else phase
            time.sleep(0.05)
    final = session.wait_phase({"promoted", "aborted", "inconclusive"}, 30)
    assert final["phase"] == "promoted", why(final)
    # Each step waited for the moved workers' own word that they serve v2 (their reports).
    assert "all 2 workers serve the candidate" in final["reason"], why(final)
    assert session.champion() == "2"
    # Worker 0 moved first, and for a while worker 1 still answered with v1: one at a time.
    first_moved = min(t for t, w, v in seen if w == 0 and v == "2")
    assert any(t > first_moved and w == 1 and v == "1" for t, w, v in seen), seen[-20:]
    session.finish(started, promoted="2")


def test_canary_to_a_better_version_is_promoted(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    session.start(
        tmp_path,
        "model: ride-duration\ncandidate: challenger\nstrategy: canary\nsteps:\n"
        "  - set_weight: 25\n  - analysis: {duration: 8s}\n  - set_weight: 50\n"
        "  - analysis: {duration: 8s}\n"
        # The challenger's true MAE ratio is about 0.87; with 150 rides per arm the measured ratio
        # has a standard error near 0.1, so 1.05 would abort a better version about 1 run in 10.
        f"analysis:\n  min_samples: 150\n  max_mae_ratio: 1.2\n  {THRESHOLDS}",
    )
    final = session.wait_phase({"aborted", "promoted", "inconclusive"}, 90)
    assert final["phase"] == "promoted", why(final)
    assert session.champion() == "2"
    session.finish(started, promoted="2")
