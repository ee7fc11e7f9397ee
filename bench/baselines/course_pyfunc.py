"""The course's pipeline as an MLflow pyfunc, for ``mlflow.pyfunc.spark_udf``: the anchor the
Spark engine's 5× goal was set against (MEASURED.md, 2026-12-02: 74,600 rows/s on ``local[2]``).

``spark_udf`` hands the model a pandas DataFrame per Arrow batch. The course's model is a fitted
``DictVectorizer`` + regressor pipeline that takes dicts, so this pyfunc does what the course's
``predict.py`` does to each ride: ``PU_DO = f"{PULocationID}_{DOLocationID}"`` and
``trip_distance``, as records, then ``pipeline.predict``. The pipeline is the registered
version's own (:func:`course_model.course_pipeline`), so it answers as ridecast's model does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd


class CoursePipelineModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        frame = pd.DataFrame(
            {
                "PU_DO": model_input["PULocationID"].astype(str)
                + "_"
                + model_input["DOLocationID"].astype(str),
                "trip_distance": model_input["trip_distance"],
            }
        )
        return self.pipeline.predict(frame.to_dict(orient="records"))


def log_course_pyfunc(model_uri: str, artifacts: Path) -> str:
    """Log the pipeline of the version ``model_uri`` names as this pyfunc (in a run of the
    current tracking server, its files under ``artifacts``) and return the logged model's URI."""
    from course_model import course_pipeline
    from mlflow.models import infer_signature

    pipeline, version = course_pipeline(model_uri)
    model = CoursePipelineModel(pipeline)
    example = pd.DataFrame({"PULocationID": [74], "DOLocationID": [75], "trip_distance": [2.5]})
    found = mlflow.get_experiment_by_name("course-pyfunc")
    experiment = (
        found.experiment_id
        if found is not None
        else mlflow.create_experiment("course-pyfunc", artifact_location=artifacts.as_uri())
    )
    with mlflow.start_run(experiment_id=experiment, run_name=f"course pyfunc of v{version}"):
        info = mlflow.pyfunc.log_model(
            name="course-pipeline",
            python_model=model,
            # spark_udf passes the columns by these names only when the signature has them.
            signature=infer_signature(example, model.predict(None, example)),
            code_paths=[str(Path(__file__))],  # so executors can import this class
        )
    return str(info.model_uri)
