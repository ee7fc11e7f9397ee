"""Training, the MLflow registry and the pyfunc contract, with real trained models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from ridecast.data.readers import find_month_file, read_trips
from ridecast.errors import ModelError
from ridecast.predictor import Predictor
from ridecast.registry import ModelRef, parse_model_uri

from .conftest import TAXI, VALID_MONTH, Trained


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/ride-duration@champion") == ModelRef(
        "ride-duration", "champion"
    )
    assert parse_model_uri("models:/ride-tip/3") == ModelRef("ride-tip", None, "3")
    assert parse_model_uri("ride-cost") == ModelRef("ride-cost", "champion")
    with pytest.raises(ModelError, match="models:/NAME@ALIAS"):
        parse_model_uri("models:/bad name")


def test_registry_has_versions_aliases_and_metrics(trained: Trained) -> None:
    rows = trained.registry.list_versions()  # type: ignore[attr-defined]
    by_key = {(r["name"], r["version"]): r for r in rows}
    assert by_key[("ride-duration", "1")]["aliases"] == ["champion"]
    assert by_key[("ride-duration", "2")]["aliases"] == ["challenger"]
    assert {r["name"] for r in rows} == {"ride-duration", "ride-tip", "ride-cost"}
    for row in rows:
        assert row["metrics"]["rmse"] > 0
        assert row["params"]["train_month"] == "2025-01"


def test_duration_model_is_realistically_imperfect(trained: Trained) -> None:
    champion = trained.registry.load("models:/ride-duration@champion")  # type: ignore[attr-defined]
    challenger = trained.registry.load("models:/ride-duration@challenger")  # type: ignore[attr-defined]
    ratio = champion.metrics["rmse_over_std"]
    assert 0.4 <= ratio <= 0.75, f"linear RMSE/std {ratio:.3f} outside the realistic 0.4..0.75"
    assert challenger.metrics["rmse"] < champion.metrics["rmse"], "v2 (gbm) should beat v1"
    for name in ("ride-tip", "ride-cost"):
        assert trained.registry.load(f"models:/{name}@champion").metrics["r2"] > 0.1  # type: ignore[attr-defined]


def test_unknown_model_names_the_fix(trained: Trained) -> None:
    with pytest.raises(ModelError, match=r"ride-nothing.*ridecast train"):
        trained.registry.load("models:/ride-nothing@champion")  # type: ignore[attr-defined]


def test_predictor_matches_pyfunc_on_a_real_month(trained: Trained) -> None:
    import mlflow

    frame = read_trips(find_month_file(trained.data_dir, TAXI, VALID_MONTH), TAXI, VALID_MONTH)
    frame = frame.dropna(subset=["PULocationID", "DOLocationID", "trip_distance"]).head(5_000)
    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))  # type: ignore[attr-defined]
    ours = predictor.predict_frame(frame)
    pyfunc = mlflow.pyfunc.load_model("models:/ride-duration@champion")
    inputs = pd.DataFrame(
        {
            "PULocationID": frame["PULocationID"].astype("int64"),
            "DOLocationID": frame["DOLocationID"].astype("int64"),
            "trip_distance": frame["trip_distance"].astype("float64"),
        }
    )
    theirs = pyfunc.predict(inputs)
    assert len(ours) == len(frame)
    assert abs(ours - theirs).max() < 1e-9


@pytest.mark.timeout(120)
def test_pyfunc_loads_in_a_fresh_process(trained: Trained) -> None:
    """The contract: any Python process with ridecast installed can load the registered model."""
    script = textwrap.dedent(
        """
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/ride-duration@champion")
        df = pd.DataFrame({"PULocationID": [10, 132], "DOLocationID": [50, 236],
                           "trip_distance": [40.0, 17.5]})
        print(json.dumps([float(v) for v in model.predict(df)]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=trained.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(values) == 2
    # Same numbers as the same version predicts in this process.
    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))  # type: ignore[attr-defined]
    local = predictor.predict_rides(
        [
            {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0},
            {"PULocationID": 132, "DOLocationID": 236, "trip_distance": 17.5},
        ]
    )
    assert values == pytest.approx(local, abs=1e-9)
