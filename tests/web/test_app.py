"""The three protocols, health, metrics, docs and feedback, over real HTTP with real models."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ridecast.features import RideArrays
from tests.web.conftest import Served

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}
pytestmark = pytest.mark.timeout(120)


def expected(served: Served, name: str, rides: list[dict[str, float]]) -> list[float]:
    slot = served.app.service.slots[name]
    return slot.predictor.predict_arrays(RideArrays.from_rides(rides)).tolist()


def test_course_api_one_ride_and_a_list_in_order(served: Served) -> None:
    rides = [RIDE, {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.1, "ride_id": 7}]
    with served.client() as client:
        one = client.post("/predict", json={**RIDE, "ride_id": "abc", "user_id": "u1"})
        many = client.post("/predict", json=rides)
    assert one.status_code == 200
    body = one.json()
    assert body["duration"] == pytest.approx(expected(served, "ride-duration", [RIDE])[0])
    assert body["model_version"] == "1" and body["ride_id"] == "abc" and body["user_id"] == "u1"
    assert many.status_code == 200
    values = [r["duration"] for r in many.json()]
    assert values == pytest.approx(expected(served, "ride-duration", rides))
    assert "ride_id" not in many.json()[0] and many.json()[1]["ride_id"] == 7


def test_other_models_answer_under_their_name_with_their_target(served: Served) -> None:
    with served.client() as client:
        tip = client.post("/predict/ride-tip", json=RIDE).json()
        cost = client.post("/predict/ride-cost", json=[RIDE]).json()
        missing = client.post("/predict/ride-nothing", json=RIDE)
    assert tip["tip"] == pytest.approx(expected(served, "ride-tip", [RIDE])[0])
    assert cost[0]["cost"] == pytest.approx(expected(served, "ride-cost", [RIDE])[0])
    assert missing.status_code == 404 and "ride-duration" in missing.json()["detail"]


def test_concurrent_single_rides_are_micro_batched(served: Served) -> None:
    import asyncio

    import httpx

    slot = served.app.service.default
    before = slot.batches
    rides = [
        {"PULocationID": 1 + i % 200, "DOLocationID": 50, "trip_distance": i / 10}
        for i in range(200)
    ]

    async def burst() -> list[float]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=served.base_url, limits=limits) as client:
            answers = await asyncio.gather(*(client.post("/predict", json=r) for r in rides))
        return [a.json()["duration"] for a in answers]

    values = asyncio.run(burst())
    assert values == pytest.approx(expected(served, "ride-duration", rides))
    calls = slot.batches - before
    assert calls < len(rides), f"{calls} model calls for {len(rides)} concurrent requests"


def test_mlflow_formats_agree(served: Served) -> None:
    rides = [RIDE, {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.1}]
    want = expected(served, "ride-duration", rides)
    cols = ["PULocationID", "DOLocationID", "trip_distance"]
    bodies = [
        {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rides]}},
        {"dataframe_records": rides},
        {"instances": rides},
        {"inputs": {c: [r[c] for r in rides] for c in cols}},
    ]
    with served.client() as client:
        for body in bodies:
            answer = client.post("/invocations", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == pytest.approx(want)
        csv = "PULocationID,DOLocationID,trip_distance\n10,50,4.2\n74,75,1.1\n"
        answer = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
        assert answer.json()["predictions"] == pytest.approx(want)
        bad = client.post("/invocations", json={"dataframe_records": [{"PULocationID": 1}]})
        assert bad.status_code == 422 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert bad.json()["detail"][0]["loc"] == ["body", "dataframe_records", 0, "DOLocationID"]
        xml = client.post("/invocations", content="<a/>", headers={"content-type": "text/xml"})
        assert xml.status_code == 415
        assert client.get("/ping").status_code == 200
        assert client.get("/version").json()["models"]["ride-duration"] == "1"


def test_open_inference_protocol_json(served: Served) -> None:
    request = {
        "id": "req-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "PULocationID", "shape": [2], "datatype": "INT64", "data": [10, 74]},
            {
                "name": "DOLocationID",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": [["50"], ["75"]],
            },
            {"name": "trip_distance", "shape": [2], "datatype": "FP64", "data": [4.2, 1.1]},
            {"name": "ride_id", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
    }
    rides = [RIDE, {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.1}]
    with served.client() as client:
        assert client.get("/v2").json()["name"] == "ridecast"
        live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")
        assert (live.status_code, live.json()) == (200, {"live": True})
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        meta = client.get("/v2/models/ride-tip").json()
        assert meta["outputs"][0]["name"] == "tip" and meta["versions"] == ["1"]
        assert client.get("/v2/models/ride-duration/versions/1/ready").json()["ready"] is True
        answer = client.post("/v2/models/ride-duration/versions/1/infer", json=request)
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert out["id"] == "req-1" and out["model_version"] == "1"
        assert out["outputs"][0]["data"] == pytest.approx(expected(served, "ride-duration", rides))
        assert (
            client.post("/v2/models/ride-duration/versions/9/infer", json=request).status_code
            == 404
        )
        assert client.get("/v2/models/nope/ready").status_code == 404
        request["inputs"][2]["data"] = [4.2, -1]
        bad = client.post("/v2/models/ride-duration/infer", json=request)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "inputs", 2, "data", 1]


def test_bad_input_is_422_or_413_naming_the_field(served: Served) -> None:
    with served.client() as client:
        bad = client.post("/predict", json=[RIDE, {**RIDE, "DOLocationID": 999}])
        assert bad.status_code == 422
        (problem,) = bad.json()["detail"]
        assert problem["loc"] == ["body", 1, "DOLocationID"] and "1..265" in problem["msg"]
        assert client.post("/predict", content=b"{nope").status_code == 422
        too_many = client.post("/predict", json=[RIDE] * 501)
        assert too_many.status_code == 413 and "500" in too_many.json()["detail"][0]["msg"]
        huge = client.post("/predict", content=b"[" + b" " * 70_000 + b"]")
        assert huge.status_code == 413
        huge_mlflow = client.post("/invocations", content=b" " * 70_000)
        assert huge_mlflow.status_code == 413


def test_health_metrics_and_docs(served: Served) -> None:
    with served.client() as client:
        client.post("/predict", json=RIDE)
        client.post("/predict", json={"PULocationID": "x"})
        assert client.get("/health/live").json() == {"status": "alive"}
        assert client.get("/health/ready").status_code == 200
        health = client.get("/health").json()
        assert health["models"]["ride-tip"]["version"] == "1"
        text = client.get("/metrics").text
        docs = client.get("/docs")
        spec = client.get("/openapi.json").json()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["ridecast_http_requests"].samples
    assert any(
        s.labels == {"endpoint": "/predict", "status": "200", "model_version": "1"} and s.value >= 1
        for s in requests
    )
    errors = families["ridecast_http_request_errors"].samples
    assert any(s.labels["status"] == "422" for s in errors)
    latency = families["ridecast_http_request_duration_seconds"].samples
    assert any(s.labels.get("model_version") == "1" for s in latency)  # latency by version
    assert "ridecast_prediction_value" in families and "ridecast_model_call_rides" in families
    served_now = families["ridecast_model_info"].samples
    assert any(s.labels == {"model": "ride-tip", "model_version": "1"} for s in served_now)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/predict" in spec["paths"] and "requestBody" in spec["paths"]["/predict"]["post"]
    assert "/v2/models/{name}/infer" in spec["paths"] and "/invocations" in spec["paths"]


def test_predictions_and_feedback_reach_the_log(served: Served) -> None:
    ride_id = f"ride-{time.time_ns()}"
    with served.client() as client:
        client.post("/predict", json={**RIDE, "ride_id": ride_id, "user_id": "u9"})
        ok = client.post("/feedback", json={"ride_id": ride_id, "actual_duration": 23.5})
        bad = client.post("/feedback", json={"ride_id": ride_id, "actual_duration": -3})
        missing = client.post("/feedback", json={"actual_duration": 3})
    assert ok.json() == {"accepted": 1}
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "actual_duration"]
    assert missing.status_code == 422
    log = served.app.service.prediction_log
    assert log is not None
    log.flush()
    path = served.settings.resolved_prediction_log_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        row = db.execute(
            "select model, version, user_id, pu_location_id, do_location_id, trip_distance, "
            "prediction, latency_ms, source from predictions where ride_id = ?",
            (ride_id,),
        ).fetchone()
        fb = db.execute(
            "select target, actual from feedback where ride_id = ?", (ride_id,)
        ).fetchall()
    assert row[:6] == ("ride-duration", "1", "u9", 10, 50, 4.2)
    assert row[6] == pytest.approx(expected(served, "ride-duration", [RIDE])[0])
    assert 0 <= row[7] < 1000 and row[8] == "web:/predict"
    assert fb == [("duration", 23.5)]
    assert np.isfinite(row[6])


@pytest.mark.parametrize("path", ["/predict", "/invocations", "/v2/models/ride-duration/infer"])
def test_a_client_that_writes_the_whole_body_first_reads_the_413(served: Served, path: str) -> None:
    """urllib sends the whole body before it reads: the server drains it (up to a bound) and
    answers, instead of closing on a half-sent request (a connection reset for the client)."""
    import urllib.error
    import urllib.request

    body = b"[" + b" " * 20_000_000 + b"]"
    request = urllib.request.Request(
        served.base_url + path, data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 413
    assert "bytes" in json.loads(err.value.read())["detail"][0]["msg"]
