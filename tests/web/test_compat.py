"""Independent clients keep working: MLflow's scoring client and Triton's OIP v2 HTTP client."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from ridecast.features import RideArrays
from tests.web.conftest import Served

pytestmark = pytest.mark.timeout(120)

FRAME = pd.DataFrame(
    {"PULocationID": [10, 74, 166], "DOLocationID": [50, 75, 41], "trip_distance": [4.2, 1.1, 9.0]}
)


def expected(served: Served) -> np.ndarray:
    return served.app.service.default.predictor.predict_arrays(RideArrays.from_frame(FRAME))


def test_mlflow_scoring_client(served: Served) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    url = urlparse(served.base_url)
    client = ScoringServerClient(url.hostname, url.port)
    client.wait_server_ready(timeout=10)
    response = client.invoke(FRAME)
    values = np.asarray(response.get_predictions(predictions_format="ndarray")).ravel()
    np.testing.assert_allclose(values, expected(served))


def test_mlflow_serving_input_from_the_models_signature_helper(served: Served) -> None:
    import httpx
    from mlflow.models.utils import convert_input_example_to_serving_input

    payload = convert_input_example_to_serving_input(FRAME)
    assert payload is not None
    answer = httpx.post(
        f"{served.base_url}/invocations",
        content=payload,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected(served))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_http(served: Served, binary: bool) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(urlparse(served.base_url).netloc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("ride-duration")
    meta = client.get_model_metadata("ride-duration")
    assert [i["name"] for i in meta["inputs"]] == ["PULocationID", "DOLocationID", "trip_distance"]
    inputs = [
        triton.InferInput("PULocationID", [3], "INT64"),
        triton.InferInput("DOLocationID", [3], "BYTES"),
        triton.InferInput("trip_distance", [3], "FP64"),
    ]
    inputs[0].set_data_from_numpy(FRAME["PULocationID"].to_numpy(np.int64), binary_data=binary)
    inputs[1].set_data_from_numpy(
        FRAME["DOLocationID"].astype(str).to_numpy(dtype=object), binary_data=binary
    )
    inputs[2].set_data_from_numpy(FRAME["trip_distance"].to_numpy(np.float64), binary_data=binary)
    outputs = [triton.InferRequestedOutput("duration", binary_data=False)]
    result = client.infer("ride-duration", inputs, outputs=outputs, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("duration"), expected(served))
    assert result.get_response()["id"] == "r-1"
    client.close()
