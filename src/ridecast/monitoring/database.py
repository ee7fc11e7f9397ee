"""Engines for the prediction log's database, and which errors pass (URLs safe to print are
:func:`ridecast.urls.mask_url`, re-exported here).

A write can fail because the database is away for a while (a restart, a full disk, a lock held
too long: retry later) or because of what was written (a value a column rejects: retrying can
never help). :func:`is_transient` tells the two apart, for SQLAlchemy's errors and for the driver's
own ones, which the COPY path raises unwrapped.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from ridecast.urls import mask_url

__all__ = ["first_line", "is_transient", "make_engine", "mask_url", "shared_engine", "sqlite_file"]


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def sqlite_file(engine: Engine) -> Path | None:
    """The file behind a SQLite engine, or None (in-memory, or not SQLite)."""
    return _sqlite_file(engine.url.render_as_string(hide_password=False))


def make_engine(url: str) -> Engine:
    """An engine with pre-ping (a restarted server costs one failed write, not a dead pool) and,
    on SQLite, WAL and a busy timeout so that worker processes can share one file."""
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str) -> Engine:
    """One engine per URL in this process, for readers that come back every few seconds."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def is_transient(exc: BaseException, dbapi: Any = None) -> bool:
    """True when retrying the same write later may succeed (the database, not the data)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError
        | sa_exc.ResourceClosedError,
    ):
        return True
    if dbapi is not None:
        transient = tuple(
            getattr(dbapi, name)
            for name in ("OperationalError", "InterfaceError")
            if isinstance(getattr(dbapi, name, None), type)
        )
        if transient and isinstance(exc, transient):
            return True
    return isinstance(exc, OSError | TimeoutError)


def first_line(exc: BaseException) -> str:
    """``Class: first line``: enough to recognise an error, without SQL or parameters."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}".rstrip(": ")
