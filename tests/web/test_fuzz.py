"""Hundreds of malformed bodies to every endpoint that takes one: never a 500."""

from __future__ import annotations

import json
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import Served

pytestmark = pytest.mark.timeout(240)

FIELDS = ["PULocationID", "DOLocationID", "trip_distance", "ride_id", "user_id"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([1, 10, 265, 266, 0, -1, 3.5, 1e308, "10", ""]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from([*FIELDS, "x", "inputs", "data"]), children, max_size=6)
    ),
    max_leaves=20,
)
rides = st.fixed_dictionaries({}, optional={f: json_values for f in FIELDS})
bodies = st.one_of(
    json_values.map(json.dumps),
    rides.map(json.dumps),
    st.lists(rides, max_size=4).map(json.dumps),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "[", "{}", "[]", "null", '{"PULocationID": NaN}', "1e999", '"x"']),
)
mlflow_bodies = st.one_of(
    bodies,
    st.dictionaries(
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "params"]),
        json_values,
        max_size=2,
    ).map(json.dumps),
    st.fixed_dictionaries(
        {"dataframe_split": st.fixed_dictionaries({"columns": json_values, "data": json_values})}
    ).map(json.dumps),
)
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from([*FIELDS, "other"]) | st.text(max_size=5)},
    optional={
        "shape": json_values | st.lists(st.integers(-2, 4), max_size=3),
        "datatype": st.sampled_from(["INT64", "FP64", "BYTES", "FP16", "BOOL", "x"]) | scalars,
        "data": json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": json_values}),
    },
)
oip_bodies = st.one_of(
    bodies,
    st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=4)}, optional={"id": scalars}).map(
        json.dumps
    ),
)
ALLOWED = {200, 413, 415, 422}
CHECKS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(
    client: httpx.Client, path: str, body: str, headers: dict[str, str] | None = None
) -> None:
    answer = client.post(path, content=body.encode("utf-8", "surrogatepass"), headers=headers)
    assert answer.status_code in ALLOWED, (path, body, answer.status_code, answer.text)
    payload: Any = answer.json()
    if answer.status_code != 200:
        assert "detail" in payload or "error" in payload, payload


@pytest.fixture(scope="module")
def client(served: Served) -> httpx.Client:
    with served.client() as c:
        yield c  # type: ignore[misc]


@CHECKS
@given(body=bodies)
def test_predict_never_500(client: httpx.Client, body: str) -> None:
    check(client, "/predict", body)


@CHECKS
@given(body=mlflow_bodies, csv=st.booleans())
def test_invocations_never_500(client: httpx.Client, body: str, csv: bool) -> None:
    check(client, "/invocations", body, {"content-type": "text/csv" if csv else "application/json"})


@CHECKS
@given(
    body=oip_bodies,
    header=st.none() | st.integers(-5, 200).map(str) | st.text(string.ascii_letters, max_size=4),
)
def test_oip_infer_never_500(client: httpx.Client, body: str, header: str | None) -> None:
    headers = {} if header is None else {"inference-header-content-length": header}
    check(client, "/v2/models/ride-duration/infer", body, headers)


@CHECKS
@given(body=bodies)
def test_feedback_never_500(client: httpx.Client, body: str) -> None:
    check(client, "/feedback", body)
