-- Run once, by the postgres image, on the first start of an empty data volume
-- (deploy/compose.yaml mounts it in /docker-entrypoint-initdb.d/).
-- POSTGRES_DB creates "ridecast": the prediction log, rollout state and batch results.
-- The MLflow tracking server keeps its runs and registry in a database of its own, so its
-- schema migrations never meet ridecast's tables.
CREATE DATABASE mlflow OWNER ridecast;
