"""Rollouts as the web service serves them: real `ridecast serve` processes over a private copy of
the trained registry (v1 champion, v2 challenger, and a v3 that fails on every real ride), the
rollout state written to the store the servers follow, and the answers checked against the
router and the models themselves.

The servers run with the controller off, so each test sets the rollout state it needs (as the
controller or a person would) and nothing moves on its own; a test that needs the controller
runs the real one in the test process, over the server's state store and prediction log.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ridecast.control import ops
from ridecast.control.store import RolloutStore
from ridecast.rollout.router import Router
from ridecast.rollout.state import RolloutState

from ..conftest import Trained
from ..control import Home, private_home
from .conftest import Served, Subprocess, start_server, stop_server

pytestmark = pytest.mark.timeout(300)

MODEL = "ride-duration"
ADMIN_TOKEN = "admin-secret-from-a-file"
FEEDBACK_TOKEN = "riders-app-token"
RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.0}


def _rides(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "PULocationID": 1 + i % 200,
            "DOLocationID": 1 + (i * 7) % 200,
            "trip_distance": 0.5 + i % 40 / 4,
            "ride_id": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


def register_broken_version(home: Home) -> str:
    """Register a ride-duration version that warms (its one warm-up ride is the ride it was fit
    on) and then fails on any other ride: a real model whose encoder meets unknown categories,
    as a model trained on the wrong data would."""
    import mlflow
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from ridecast.model import RideModel
    from ridecast.registry import configure_mlflow, ensure_experiment
    from ridecast.training import record_checksum

    pipeline = make_pipeline(OneHotEncoder(handle_unknown="error"), LinearRegression())
    pipeline.fit([[1, 1, 1.0]], [10.0])
    configure_mlflow(home.settings)
    with (
        mlflow.start_run(experiment_id=ensure_experiment(home.settings)),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RideModel(pipeline, "duration", "broken"),
            registered_model_name=MODEL,
        )
    version = str(info.registered_model_version)
    record_checksum(home.registry, MODEL, version)  # type: ignore[arg-type]
    return version


@dataclass
class Rig:
    """One served private registry: the server, its state store and prediction log."""

    home: Home
    server: Subprocess
    store: RolloutStore
    log_url: str
    broken: str  # the version that fails on every real ride

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=10, **kw)

    def start(self, strategy: str, candidate: str = "2", **fields: Any) -> RolloutState:
        """Make ``fields`` the model's active rollout, as a controller would have saved it."""
        now = time.time()
        state = RolloutState(
            id=f"t-{uuid.uuid4().hex[:8]}",
            model=MODEL,
            strategy=strategy,
            stable_version="1",
            candidate_version=candidate,
            step_started_at=now,
            created_at=now,
            updated_at=now,
            **fields,
        )
        return self.store.create(state, reason="test", actor="test")

    def end_rollouts(self) -> None:
        active = self.store.active(MODEL)
        if active is not None:
            self.store.save(active.evolve(phase="aborted", weight=0), reason="test over")

    def wait_following(self, state: RolloutState | None, workers: int = 2) -> float:
        """Until every worker's /health shows ``state`` (None: no rollout); the seconds taken.
        Each check is a new connection, so that every worker gets asked."""
        want = _shown(state)
        seen: dict[int, Any] = {}
        started = time.monotonic()
        with self.client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while time.monotonic() < started + 20:
                health = client.get("/health").json()
                rollout = health["models"][MODEL]["rollout"]
                seen[health["worker"]] = None if rollout is None else _shown(rollout)
                if len(seen) == workers and all(v == want for v in seen.values()):
                    return time.monotonic() - started
                time.sleep(0.02)
        raise AssertionError(f"workers did not follow {want}: {seen}")

    def predictor(self, version: str) -> Any:
        return self.home.registry.predictor(MODEL, version=version)  # type: ignore[attr-defined]


def _shown(state: RolloutState | dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What /health says of a rollout, to compare with the state written to the store."""
    if state is None:
        return None
    if isinstance(state, RolloutState):
        state = {
            "id": state.id,
            "weights": state.weights,
            "shadow_percent": state.shadow_percent,
            "preview": state.preview,
        }
    weights = {str(k): int(v) for k, v in state["weights"].items()}
    return (state["id"], tuple(sorted(weights.items())), state["shadow_percent"], state["preview"])


def _serve(trained: Trained, home: Home, tmp: Path, *args: str, **env: str) -> Rig:
    token_file = tmp / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    log_url = f"sqlite:///{tmp / 'predictions.db'}"
    state_url = f"sqlite:///{tmp / 'state.db'}"
    store = RolloutStore(state_url)
    server_env = home.env(trained.env()) | {
        "RIDECAST_PREDICTION_LOG_URL": log_url,
        "RIDECAST_STATE_URL": state_url,
        "RIDECAST_ADMIN_TOKEN_FILE": str(token_file),
        "RIDECAST_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        "RIDECAST_ROLLOUT_CONTROLLER": "false",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    server = start_server(server_env, ["--model", MODEL, *args], tmp / "server.log")
    return Rig(home, server, store, log_url, "")


@pytest.fixture(scope="module")
def rig(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("web-rollouts")
    with private_home(trained, tmp / "home") as home:
        broken = register_broken_version(home)
        served = _serve(trained, home, tmp, "--workers", "2")
        served.broken = broken
        try:
            yield served
        finally:
            stop_server(served.server)


@pytest.fixture
def rollout_rig(rig: Rig) -> Iterator[Rig]:
    """The module's server, with no active rollout before and after the test."""
    rig.end_rollouts()
    rig.wait_following(None)
    yield rig
    rig.end_rollouts()


def _admin(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


CANARY_FILE = "model: ride-duration\ncandidate: challenger\nstrategy: canary\n"


def test_the_admin_api_wants_the_token_from_the_secret_file(rollout_rig: Rig) -> None:
    with rollout_rig.client() as client:
        assert client.get("/admin/rollouts").status_code == 401
        assert client.get("/admin/rollouts", headers={"Authorization": "Basic x"}).status_code == (
            401
        )
        wrong = client.get("/admin/rollouts", headers=_admin("not-the-token"))
        assert wrong.status_code == 403 and "not valid" in wrong.json()["detail"]
        refused = client.post("/admin/rollouts", content=CANARY_FILE, headers=_admin("nope"))
        assert refused.status_code == 403 and rollout_rig.store.active(MODEL) is None

        bad = client.post(
            "/admin/rollouts",
            content=CANARY_FILE + "steps:\n  - set_weight: 140\n",
            headers=_admin(ADMIN_TOKEN),
        )
        assert bad.status_code == 422 and "steps.0.set_weight" in bad.json()["detail"]
        assert rollout_rig.store.active(MODEL) is None  # nothing changed

        started = client.post("/admin/rollouts", content=CANARY_FILE, headers=_admin(ADMIN_TOKEN))
        assert started.status_code == 200, started.text
        body = started.json()
        assert (body["phase"], body["weights"]) == ("progressing", {"1": 80, "2": 20})
        again = client.post("/admin/rollouts", content=CANARY_FILE, headers=_admin(ADMIN_TOKEN))
        assert again.status_code == 409 and "already has an active rollout" in again.text
        status = client.get("/admin/rollouts?model=ride-duration", headers=_admin(ADMIN_TOKEN))
        assert status.status_code == 200 and status.json()["id"] == body["id"]
        aborted = client.post(
            "/admin/rollouts/ride-duration/abort?reason=by+test", headers=_admin(ADMIN_TOKEN)
        )
        assert aborted.status_code == 200 and aborted.json()["phase"] == "aborted"
        paused = client.post("/admin/rollouts/ride-duration/pause", headers=_admin(ADMIN_TOKEN))
        assert paused.status_code == 422 and "it is aborted" in paused.json()["detail"]
        history = client.get(
            f"/admin/rollouts/{body['id']}/history", headers=_admin(ADMIN_TOKEN)
        ).json()
        assert [row["phase"] for row in history] == ["progressing", "aborted"]
        assert history[-1]["reason"] == "by test"


def test_the_admin_api_is_off_without_a_token(served: Served) -> None:
    with served.client() as client:
        off = client.get("/admin/rollouts", headers=_admin("anything"))
    assert off.status_code == 404 and "RIDECAST_ADMIN_TOKEN" in off.json()["detail"]


def test_feedback_needs_its_own_token(rollout_rig: Rig) -> None:
    with rollout_rig.client() as client:
        ride = client.post("/predict", json={**RIDE, "ride_id": "fb-1"}).json()
        body = {"ride_id": "fb-1", "actual_duration": ride["duration"] + 1}
        assert client.post("/feedback", json=body).status_code == 401
        assert client.post("/feedback", json=body, headers=_admin(ADMIN_TOKEN)).status_code == 403
        ok = client.post("/feedback", json=body, headers=_admin(FEEDBACK_TOKEN))
        assert ok.status_code == 200 and ok.json() == {"accepted": 1}


def test_a_list_request_is_split_between_versions_as_the_router_says(rollout_rig: Rig) -> None:
    state = rollout_rig.start("canary", weight=50, shadow_percent=0)
    rollout_rig.wait_following(state)
    rides = _rides(300, "split")
    for i, ride in enumerate(rides):
        if i % 3 == 0:
            ride["user_id"] = f"user-{i % 17}"  # the user is the key when there is one
    with rollout_rig.client() as client:
        answers = client.post("/predict", json=rides).json()
    router = Router("1", state)
    expected = [router.route_ids(r.get("user_id"), r["ride_id"]).version for r in rides]
    assert [a["model_version"] for a in answers] == expected
    assert 0.35 < expected.count("2") / len(expected) < 0.65
    bare = [{k: v for k, v in r.items() if k not in ("ride_id", "user_id")} for r in rides]
    for version in ("1", "2"):
        mine = [i for i, v in enumerate(expected) if v == version]
        values = rollout_rig.predictor(version).predict_rides([bare[i] for i in mine])
        assert [answers[i]["duration"] for i in mine] == pytest.approx(values)
        assert all(answers[i]["ride_id"] == rides[i]["ride_id"] for i in mine)


def _infer_body(rides: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": c, "shape": [len(rides)], "datatype": d, "data": [r[c] for r in rides]}
            for c, d in (
                ("PULocationID", "INT64"),
                ("DOLocationID", "INT64"),
                ("trip_distance", "FP64"),
            )
        ],
    }


def test_a_named_version_and_the_preview_reach_the_candidate_during_a_canary(
    rollout_rig: Rig,
) -> None:
    rides = _rides(5, "named")
    bare = [{k: v for k, v in r.items() if k != "ride_id"} for r in rides]
    with rollout_rig.client() as client:
        assert client.post("/preview/predict", json=RIDE).status_code == 404  # no rollout yet
        state = rollout_rig.start("canary", weight=0, shadow_percent=0, preview=True)
        rollout_rig.wait_following(state)
        for _ in range(4):  # either worker
            out = client.post(f"/v2/models/{MODEL}/versions/2/infer", json=_infer_body(rides))
            assert out.status_code == 200, out.text
            assert out.json()["model_version"] == "2"
            assert out.json()["outputs"][0]["data"] == pytest.approx(
                rollout_rig.predictor("2").predict_rides(bare)
            )
        missing = client.post(f"/v2/models/{MODEL}/versions/7/infer", json=_infer_body(rides))
        assert missing.status_code == 404 and "loaded: 1, 2" in missing.text
        # Weight 0: live traffic is all v1, the preview route and header reach v2.
        assert client.post("/predict", json={**RIDE, "ride_id": "p-1"}).json()["model_version"] == (
            "1"
        )
        for answer in (
            client.post("/preview/predict", json={**RIDE, "ride_id": "p-2"}),
            client.post("/predict", json=RIDE, headers={"X-Ridecast-Preview": "true"}),
            client.post(f"/preview/predict/{MODEL}", json=[RIDE, RIDE]),
        ):
            assert answer.status_code == 200, answer.text
            got = answer.json()
            got = got if isinstance(got, list) else [got]
            assert {g["model_version"] for g in got} == {"2"}
            assert got[0]["duration"] == pytest.approx(
                rollout_rig.predictor("2").predict_rides([RIDE])[0]
            )
        rollout_rig.store.save(state.evolve(preview=False), reason="preview off")
        rollout_rig.wait_following(state.evolve(preview=False))
        closed = client.post("/predict", json=RIDE, headers={"X-Ridecast-Preview": "true"})
        assert closed.status_code == 404 and "no candidate in preview" in closed.text


def _riders(rig: Rig, trained: Trained, rate: float = 150.0) -> Any:
    from ridecast.data.readers import find_month_file
    from ridecast.riders import Riders, Rides

    from ..conftest import TAXI, VALID_MONTH

    rides = Rides.from_month(find_month_file(trained.data_dir, TAXI, VALID_MONTH))
    headers = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    return Riders(
        rig.server.base_url, rides, rate=rate, threads=8, ride_seconds=(0.2, 0.6), headers=headers
    )


def _errors(rig: Rig, rollout_id: str) -> dict[tuple[str, str, str], int]:
    import sqlite3

    with sqlite3.connect(rig.log_url.removeprefix("sqlite:///")) as db:
        rows = db.execute(
            "SELECT version, arm, kind, sum(count) FROM prediction_errors WHERE rollout_id = ? "
            "GROUP BY 1, 2, 3",
            (rollout_id,),
        ).fetchall()
    return {(v, a, k): int(n) for v, a, k, n in rows}


def test_a_failing_shadow_never_fails_the_caller(rollout_rig: Rig, trained: Trained) -> None:
    state = rollout_rig.start("shadow", candidate=rollout_rig.broken, shadow_percent=100)
    rollout_rig.wait_following(state)
    riders = _riders(rollout_rig, trained).start()
    time.sleep(4.0)
    riders.stop()
    assert len(riders.outcomes) > 200 and riders.failed() == []
    assert set(riders.versions(0.0)) == {"1"}
    deadline = time.monotonic() + 10
    while not _errors(rollout_rig, state.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    errors = _errors(rollout_rig, state.id)
    assert (
        set(errors) == {(rollout_rig.broken, "shadow", "failed")}
        and errors[(rollout_rig.broken, "shadow", "failed")] > 100
    )


def test_a_failing_canary_answers_from_stable_and_its_analysis_aborts_it(
    rollout_rig: Rig, trained: Trained
) -> None:
    """Half the riders are routed to a candidate that fails on every ride: each of them gets
    the stable version's answer (and is told so), the failures reach the prediction log against
    the canary's arm, and the real controller aborts the canary on its error rate."""
    from ridecast.control.controller import Controller

    home = rollout_rig.home
    settings = home.settings.model_copy(
        update={"prediction_log_url": rollout_rig.log_url, "state_url": rollout_rig.store.url}
    )
    canary = (
        f"model: ride-duration\ncandidate: '{rollout_rig.broken}'\nstrategy: canary\n"
        "steps:\n  - set_weight: 50\n  - analysis: {duration: 3s}\n"
        "analysis: {min_samples: 50, max_p99_latency_ms: 5000, timeout: 40s}\n"
    )
    riders = _riders(rollout_rig, trained).start()
    try:
        state = ops.start(settings, canary, registry=home.registry, store=rollout_rig.store)
        controller = Controller(settings, home.registry, rollout_rig.store, holder="test")
        deadline = time.monotonic() + 45
        final = state
        while final.active and time.monotonic() < deadline:
            controller.tick()
            final = rollout_rig.store.get(state.id) or final
            time.sleep(0.5)
    finally:
        riders.stop()
    assert final.phase == "aborted", final.reason
    assert "error_rate 1 > max 0.01" in final.reason
    assert len(riders.outcomes) > 300 and riders.failed() == []
    assert set(riders.versions(0.0)) == {"1"}  # the answers say who really answered
    errors = _errors(rollout_rig, state.id)
    assert errors[(rollout_rig.broken, "canary", "failed")] >= 50
    assert "answered them instead" in rollout_rig.server.log()


def test_every_worker_follows_a_state_change_within_a_second(rollout_rig: Rig) -> None:
    state = rollout_rig.start("canary", weight=0, shadow_percent=0)
    rollout_rig.wait_following(state)
    taken = []
    for weight in (100, 0, 100):
        state = rollout_rig.store.save(state.evolve(weight=weight), reason=f"weight {weight}")
        taken.append(rollout_rig.wait_following(state))
    # RIDECAST_ROLLOUT_FOLLOW_INTERVAL is 0.5 s; /health is polled every 20 ms, both workers.
    print(f"both workers followed in {', '.join(f'{t:.2f}' for t in taken)} s")
    assert max(taken) < 1.0, taken
    with rollout_rig.client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        answers = [client.post("/predict", json=_rides(1, f"w{i}")[0]) for i in range(10)]
    assert {a.json()["model_version"] for a in answers} == {"2"}


def test_a_full_shadow_queue_drops_copies_and_the_shadow_report_counts_them(
    rig: Rig, trained: Trained, tmp_path: Path
) -> None:
    """One worker, a shadow queue of one job, list requests from eight threads: copies are
    dropped, never the live answers, and the report's ``dropped`` is what the server counted."""
    import threading

    from ridecast.control.measure import measure_url

    small = _serve(trained, rig.home, tmp_path, "--workers", "1", RIDECAST_SHADOW_QUEUE_SIZE="1")
    try:
        state = small.start("shadow", shadow_percent=100)
        small.wait_following(state, workers=1)
        statuses: list[int] = []

        def hammer(n: int) -> None:
            with small.client() as client:
                for i in range(40):
                    rides = _rides(200, f"q{n}-{i}")
                    statuses.append(client.post("/predict", json=rides).status_code)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 320
        with small.client() as client:
            dropped = client.get("/health").json()["shadow"]["dropped"]
        assert dropped > 0
        total, deadline = 320 * 200, time.monotonic() + 10
        while time.monotonic() < deadline:  # until the shadow thread and the log caught up
            since, until = state.created_at - 1, time.time() + 1
            report = measure_url(small.log_url, state, since, until, "duration")
            if (report.shadow.dropped, report.shadow.n + dropped) == (dropped, total):
                break
            time.sleep(0.25)
        assert report.shadow.dropped == dropped
        assert report.shadow.n + dropped == total  # every copy answered or dropped
        assert report.candidate.errors == 0  # a dropped copy was never asked: not an error
    finally:
        stop_server(small.server)


def test_blue_greens_old_version_answers_by_name_until_its_delay_ends(rollout_rig: Rig) -> None:
    """After the switch, blue stays loaded for scale_down_delay in every worker: reachable as
    /v2/models/{name}/versions/1 and listed by /health; then it is gone from both."""
    home = rollout_rig.home
    settings = home.settings.model_copy(update={"state_url": rollout_rig.store.url})
    text = (
        "model: ride-duration\ncandidate: challenger\nstrategy: blue_green\n"
        "blue_green: {scale_down_delay: 6s}\n"
    )
    rides = _rides(3, "bg")
    ask = httpx.Limits(max_keepalive_connections=0)
    try:
        state = ops.start(settings, text, registry=home.registry, store=rollout_rig.store)
        rollout_rig.wait_following(state)
        ops.promote(settings, MODEL, registry=home.registry, store=rollout_rig.store)
        switched = time.monotonic()
        rollout_rig.wait_following(None)
        with rollout_rig.client(limits=ask) as client:
            seen: dict[int, Any] = {}
            statuses = set()
            while len(seen) < 2 and time.monotonic() - switched < 4.0:
                health = client.get("/health").json()
                model = health["models"][MODEL]
                seen[health["worker"]] = ("1" in model["loaded_versions"], model["answering"])
                blue = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=_infer_body(rides))
                statuses.add((blue.status_code, blue.json().get("model_version")))
                assert client.post("/predict", json=RIDE).json()["model_version"] == "2"
            assert time.monotonic() - switched < 5.5  # all of it within the delay
            assert seen == {0: (True, "2"), 1: (True, "2")}, seen  # v1 loaded, v2 answering
            assert statuses == {(200, "1")}
            time.sleep(max(0.0, switched + 6.0 + 1.5 - time.monotonic()))
            gone: dict[int, Any] = {}
            statuses = set()
            while len(gone) < 2 and time.monotonic() - switched < 20:
                health = client.get("/health").json()
                gone[health["worker"]] = "1" in health["models"][MODEL]["loaded_versions"]
                blue = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=_infer_body(rides))
                statuses.add(blue.status_code)
            assert gone == {0: False, 1: False} and statuses == {404}, (gone, statuses)
    finally:
        home.registry.set_alias(MODEL, "champion", "1")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        with rollout_rig.client(limits=ask) as client:
            while time.monotonic() < deadline:
                versions = {
                    client.get("/health").json()["models"][MODEL]["version"] for _ in range(6)
                }
                if versions == {"1"}:
                    break
                time.sleep(0.2)


def test_a_server_without_alias_watching_still_follows_its_rollouts(served: Served) -> None:
    """RIDECAST_SERVE_WATCH_INTERVAL=0 (the `served` app) turns off the timed alias checks only:
    a rollout written to the state store still reaches the server within a second."""
    assert served.settings.serve_watch_interval == 0
    store = served.app.service.store
    now = time.time()
    state = store.create(
        RolloutState(
            id=f"t-{uuid.uuid4().hex[:8]}",
            model=MODEL,
            strategy="canary",
            stable_version="1",
            candidate_version="2",
            weight=100,
            step_started_at=now,
            created_at=now,
            updated_at=now,
        ),
        reason="test",
    )
    try:
        with served.client() as client:
            started = time.monotonic()
            while time.monotonic() - started < 5:
                answer = client.post("/predict", json={**RIDE, "ride_id": "watch-0"}).json()
                if answer["model_version"] == "2":
                    break
                time.sleep(0.05)
            assert answer["model_version"] == "2" and time.monotonic() - started < 1.5
            assert client.get("/health").json()["models"][MODEL]["rollout"]["id"] == state.id
    finally:
        store.save(state.evolve(phase="aborted", weight=0), reason="test over")
        with served.client() as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if client.get("/health").json()["models"][MODEL]["rollout"] is None:
                    break
                time.sleep(0.05)
