"""How the course's services get their model: MLflow loads the registered version, and the service
calls the fitted scikit-learn pipeline inside it (DictVectorizer + regressor) directly.

Every baseline loads its model here, so none of them uses ridecast's compiled form or its disk
cache, and all of them serve the same registered version ridecast serves.
"""

from __future__ import annotations

from typing import Any

from ridecast.registry import Registry, configure_mlflow
from ridecast.settings import get_settings


def course_pipeline(model_uri: str) -> tuple[Any, str]:
    """The fitted pipeline of the version ``model_uri`` names now, and that version's number."""
    import mlflow.pyfunc

    settings = get_settings()
    configure_mlflow(settings)
    identity = Registry(settings).identity(model_uri)
    pinned = f"models:/{identity.name}/{identity.version}"
    return mlflow.pyfunc.load_model(pinned).unwrap_python_model().pipeline, identity.version
