"""The databases the dashboard reads, read only, and the SQL both dialects share.

The prediction log (predictions, feedback, failed predictions, batch results) and the rollout
state store are SQLAlchemy URLs, usually one SQLite file or one PostgreSQL database. The
dashboard never creates or upgrades a table: a table that is not there yet reads as "no data
yet". Every query is bounded by an indexed time window and aggregates in SQL.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from sqlalchemy import Engine, Integer, cast, func, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ColumnElement

from ridecast.control.store import RolloutStore
from ridecast.errors import RidecastError
from ridecast.monitoring.database import first_line, mask_url, shared_engine, sqlite_file

UNIX_EPOCH_JULIAN_DAY = 2440587.5
_TABLES_TTL = 5.0  # seconds a table listing is trusted: new tables appear within this


class StoreReader(RolloutStore):
    """The rollout state store, read only: unlike :class:`RolloutStore` it never creates its
    tables, so pointing the dashboard at a database leaves that database as it was."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = shared_engine(url)


class Sources:
    """The prediction log at ``log_url`` and the rollout state at ``state_url``."""

    def __init__(self, log_url: str, state_url: str | None = None) -> None:
        self.log_url = log_url
        self.state_url = state_url or log_url
        self.log = shared_engine(log_url)
        self.store = StoreReader(self.state_url)
        self._tables: dict[int, tuple[float, set[str]]] = {}
        self._columns: dict[tuple[int, str], set[str]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        """The URLs as they may be shown (passwords masked)."""
        if self.state_url == self.log_url:
            return mask_url(self.log_url)
        return f"log {mask_url(self.log_url)}, rollout state {mask_url(self.state_url)}"

    def has(self, engine: Engine, table: str) -> bool:
        """Whether ``table`` exists in ``engine``'s database (listings cached a few seconds)."""
        now = time.monotonic()
        with self._lock:
            cached = self._tables.get(id(engine))
            if cached is not None and now - cached[0] < _TABLES_TTL and table in cached[1]:
                return True
        names = set(inspect(engine).get_table_names())
        with self._lock:
            self._tables[id(engine)] = (now, names)
        return table in names

    def has_column(self, engine: Engine, table: str, column: str) -> bool:
        """Whether ``table`` has ``column`` (a database older than the code may lack it)."""
        key = (id(engine), table)
        with self._lock:
            known = self._columns.get(key)
        if known is None:
            known = {c["name"] for c in inspect(engine).get_columns(table)}
            with self._lock:
                self._columns[key] = known
        return column in known

    def check(self) -> None:
        """Raise one readable RidecastError when a database cannot be reached."""
        for url, engine in ((self.log_url, self.log), (self.state_url, self.store.engine)):
            path = sqlite_file(engine)
            if path is not None and not path.is_file():
                raise RidecastError(
                    f"no database at {path}: nothing has been logged there yet; serve, stream "
                    "or batch-score first, or pass --db URL (e.g. sqlite:///path/predictions.db "
                    "or postgresql+psycopg://user@host/db)"
                )
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except Exception as exc:
                raise RidecastError(
                    f"the database at {mask_url(url)} is not reachable: {first_line(exc)}; "
                    "check --db (or RIDECAST_PREDICTION_LOG_URL / RIDECAST_STATE_URL)"
                ) from exc


def backend(url: str) -> str:
    return make_url(url).get_backend_name()


# ------------------------------------------------------------------- time, in either dialect


def epoch_seconds(engine: Engine, column: Any) -> ColumnElement[Any]:
    """``column`` (a timestamp) as unix seconds. SQLite keeps timestamps as UTC text."""
    if engine.dialect.name == "sqlite":
        return (func.julianday(column) - UNIX_EPOCH_JULIAN_DAY) * 86400.0
    return func.extract("epoch", column)


def bucket_index(engine: Engine, column: Any, start: float, step: float) -> ColumnElement[Any]:
    """Which ``step``-second bucket from ``start`` a timestamp falls in (0, 1, 2, …)."""
    offset = (epoch_seconds(engine, column) - start) / step
    if engine.dialect.name == "sqlite":
        return cast(offset, Integer)  # truncates; rows before ``start`` are filtered out
    return func.floor(offset)


def nice_step(span: float, points: int) -> float:
    """A round bucket size (1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1 h, …) that cuts
    ``span`` seconds into at most about ``points`` buckets."""
    raw = max(span / max(points, 1), 1.0)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600):
        if step >= raw:
            return float(step)
    return float(3600 * math.ceil(raw / 3600))
