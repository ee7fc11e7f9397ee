"""Wire formats ↔ rides. Each module turns one protocol's request body into a validated
:class:`~ridecast.web.validation.RideBatch` and predictions back into its response body; none of
them touches a model.

- :mod:`.seed`: the course's ``POST /predict`` (one ride object or a list of them);
- :mod:`.mlflow`: MLflow's scoring protocol, ``POST /invocations``;
- :mod:`.oip`: the Open Inference Protocol v2 (KServe, MLServer, Triton).
"""
