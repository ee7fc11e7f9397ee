"""The course's web service, as the baseline: Flask, one ``pipeline.predict(dict)`` per request.

Run it the course's way (gunicorn, 2 sync workers)::

    RIDECAST_HOME=... gunicorn --workers 2 --no-control-socket --bind 127.0.0.1:9697 \
        --chdir bench/baselines flask_predict:app

It loads the same registered version ridecast serves (``BASELINE_MODEL_URI``, default
``models:/ride-duration@champion``) and uses its fitted scikit-learn pipeline directly, as the
course's ``predict.py`` uses its unpickled ``DictVectorizer`` + regressor.
"""

from __future__ import annotations

import os

from course_model import course_pipeline
from flask import Flask, jsonify, request

from ridecast.features import prepare_features

MODEL_URI = os.environ.get("BASELINE_MODEL_URI", "models:/ride-duration@champion")
pipeline, VERSION = course_pipeline(MODEL_URI)


def predict(features: dict[str, object]) -> float:
    preds = pipeline.predict(features)
    return float(preds[0])


app = Flask("duration-prediction")


@app.route("/predict", methods=["POST"])
def predict_endpoint():  # type: ignore[no-untyped-def]
    ride = request.get_json()
    features = prepare_features(ride)
    pred = predict(features)
    result = {"duration": pred, "model_version": VERSION}
    return jsonify(result)


if __name__ == "__main__":
    app.run(debug=True, host="0.0.0.0", port=9696)
