"""A batch job that finds its model in the cache predicts without importing MLflow or sklearn:
that start-up saving is what keeps short monthly jobs fast."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ridecast.batch.models import load_predictor

from ..conftest import Trained

RIDES = [
    {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0},
    {"PULocationID": 132, "DOLocationID": 236, "trip_distance": 17.5},
    {"PULocationID": 264, "DOLocationID": 1, "trip_distance": 0.0},
]


@pytest.mark.timeout(120)
def test_cached_linear_model_loads_without_mlflow_or_sklearn(trained: Trained) -> None:
    uri = "models:/ride-duration@champion"
    fresh = load_predictor(trained.settings, uri, use_cache=True)  # fills the cache
    script = textwrap.dedent(
        f"""
        import json, sys
        from ridecast.batch.models import load_predictor
        from ridecast.settings import Settings
        predictor = load_predictor(Settings(), {uri!r}, use_cache=True)
        heavy = sorted(m for m in ("mlflow", "sklearn", "scipy.stats") if m in sys.modules)
        print(json.dumps({{"version": predictor.version, "heavy": heavy,
                           "predictions": predictor.predict_rides({RIDES!r})}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=trained.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["version"] == fresh.version
    assert result["predictions"] == pytest.approx(fresh.predict_rides(RIDES), abs=1e-12)
