"""A request that reaches a model slot before it has a version loaded: a counted 503 with the
reason, not an uncounted 500 (a server whose alias names nothing, asked before it could load)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from ridecast.web.app import create_app

pytestmark = pytest.mark.timeout(120)

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}
COLUMNS = ["PULocationID", "DOLocationID", "trip_distance"]
INFER = {
    "inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [RIDE[c]]} for c in COLUMNS],
}


@pytest.fixture
def unloaded(trained, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real server over the real registry, serving an alias no version carries. Its lifespan
    (which loads the models, and would refuse to start) does not run, as when a request comes
    in before the models are loaded."""
    settings = trained.settings.model_copy(
        update={
            "serve_models": "models:/ride-duration@nobody-has-this",
            "serve_watch_interval": 0.0,
            "prediction_log_url": f"sqlite:///{tmp_path / 'predictions.db'}",
        }
    )
    app = create_app(settings, registry=trained.registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def request_counts(client: httpx.Client, endpoint: str) -> dict[tuple[str, str], float]:
    """Every counter in /metrics labelled with ``endpoint`` and a status, by (name, status)."""
    text = client.get("/metrics").text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter":
            continue
        for s in family.samples:
            if s.labels.get("endpoint") == endpoint and "status" in s.labels:
                key = (s.name, s.labels["status"])
                counts[key] = counts.get(key, 0.0) + s.value
    return counts


@pytest.mark.parametrize(
    ("path", "endpoint", "body"),
    [
        ("/invocations", "/invocations", {"dataframe_records": [RIDE]}),
        ("/v2/models/ride-duration/infer", "/v2/infer", INFER),
    ],
)
def test_a_slot_with_no_version_loaded_answers_a_counted_503_with_the_reason(
    unloaded: str, path: str, endpoint: str, body: dict[str, object]
) -> None:
    """Before: the slot's error escaped the handler: a plain 500, counted nowhere."""
    with httpx.Client(base_url=unloaded, timeout=10) as client:
        before = request_counts(client, endpoint)
        answers = [client.post(path, json=body) for _ in range(3)]
        after = request_counts(client, endpoint)
        ready = client.get("/health/ready")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        reason = answer.json().get("detail") or answer.json().get("error")
        assert "ride-duration is not loaded yet" in reason and "retry" in reason
    counted = {key: after[key] - before.get(key, 0.0) for key in after}
    by_status = {status for (_, status), n in counted.items() if n}
    assert by_status == {"503"}, counted
    assert all(n == 3 for n in counted.values() if n), counted
    print(f"\n{path}: {answers[0].json()}; /metrics: {counted}")
    assert ready.status_code == 503
