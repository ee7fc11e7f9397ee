"""Bring a prediction-log database to the newest schema, once, however many processes start.

Every worker of ``ridecast serve --workers N`` opens the log at the same moment. The first one to
take the lock upgrades; the others wait for it, then find the database at head and do nothing.
The lock is ``pg_advisory_xact_lock`` on PostgreSQL (released with the upgrade's transaction) and
an exclusive ``flock`` on a file beside the database on SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from ridecast.monitoring.database import sqlite_file

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Its own version table: the rollout state store may share this database with its own history.
VERSION_TABLE = "ridecast_log_version"
ADVISORY_KEY = 0x7269646563617374  # "ridecast" in ASCII: one lock for every upgrading process


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the prediction log has no migrations"
    return head


def current_revision(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run_upgrade(conn: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade ``engine``'s database to ``revision`` (default: the newest). Safe to call from
    several processes at once; cheap when there is nothing to do."""
    if revision == "head":
        with engine.connect() as conn:
            if current_revision(conn) == head_revision():
                return
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
            _run_upgrade(conn, revision)
        return
    path = sqlite_file(engine) if engine.dialect.name == "sqlite" else None
    lock = _file_lock(path) if path is not None else contextlib.nullcontext()
    with lock, engine.begin() as conn:
        _run_upgrade(conn, revision)
