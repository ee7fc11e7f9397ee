"""Alembic's entry point for the prediction log; run only by :mod:`ridecast.monitoring.migrate`.

It never configures logging (no ``fileConfig``): ridecast's own logging stays as the process set
it. The connection comes from the caller, who holds the lock that serializes concurrent upgrades.
"""

from __future__ import annotations

from alembic import context

from ridecast.monitoring.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic CLI
    raise RuntimeError("run the prediction-log migrations through ridecast.monitoring.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
