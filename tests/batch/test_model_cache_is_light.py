"""A batch job that finds its model in the cache predicts without MLflow's pyfunc or sklearn:
that start-up saving is what keeps short monthly jobs fast.

The registry still answers which version the alias names, through MLflow's client, so the
``mlflow`` package itself is imported (its client is the public way to ask); what a cache hit
skips is pyfunc loading and, for a linear model, scikit-learn and SciPy's statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ridecast.registry import Registry

from ..conftest import Trained

RIDES = [
    {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.0},
    {"PULocationID": 132, "DOLocationID": 236, "trip_distance": 17.5},
    {"PULocationID": 264, "DOLocationID": 1, "trip_distance": 0.0},
]


@pytest.mark.timeout(120)
def test_cached_linear_model_loads_without_pyfunc_or_sklearn(trained: Trained) -> None:
    uri = "models:/ride-duration@champion"
    fresh = Registry(trained.settings).predictor(uri)  # fills the cache if it is not yet
    script = textwrap.dedent(
        f"""
        import json, sys
        from ridecast.registry import Registry
        from ridecast.settings import Settings
        predictor = Registry(Settings()).predictor({uri!r})
        heavy = sorted(m for m in ("mlflow.pyfunc", "sklearn", "scipy.stats") if m in sys.modules)
        print(json.dumps({{"version": predictor.version, "heavy": heavy,
                           "model": type(predictor.loaded.model).__name__,
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
    assert result["model"] == "LinearRideModel"
    assert result["version"] == fresh.version
    assert result["predictions"] == pytest.approx(fresh.predict_rides(RIDES), abs=1e-12)
