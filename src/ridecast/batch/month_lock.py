"""One job at a time per month and sink: a second job that would write the same month's results
(same model version, comparison or rollout) into the same sink fails at once with a clear message,
instead of racing the first to a result that mixes the two.

The lock is held by the open writer for the whole run and released when it commits or aborts.
The operating system releases it when the process dies, however it dies, so a killed job never
leaves a lock behind for someone to delete by hand:

- a folder sink, or a SQLite database: an exclusive ``flock`` on a file under ``.locks/`` beside
  the results (the file stays; only the lock on it matters, and it says who holds it);
- PostgreSQL: a session advisory lock, taken on the writer's connection before it deletes the
  month's previous rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from ridecast.batch.outputs import MonthKey
from ridecast.errors import DataError


def lock_name(key: MonthKey) -> str:
    """What is locked: one month of one taxi type, for one run slot (version, comparison…)."""
    return f"{key.taxi_type.value}-{key.month}-{key.stem}"


def _busy(what: str, holder: str) -> DataError:
    return DataError(
        f"{what} is being written by another job ({holder}); wait for it to finish, then run "
        "again (a finished month is skipped by backfill; score replaces it)"
    )


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.locks/<name>.lock``."""

    def __init__(self, folder: Path, name: str, what: str, run_id: str) -> None:
        path = folder / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 512, 0).decode(errors="replace").strip()
            self.release()
            raise _busy(what, holder or "its owner is not recorded") from None
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tag = f"run {run_id}, pid {os.getpid()} on {socket.gethostname()}, since {started}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, tag.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_postgres(connection: Any, name: str, what: str) -> None:
    """Take the session advisory lock for ``name`` on ``connection``; it lasts until the
    connection closes (the writer closes it after commit or abort)."""
    key = advisory_key(name)
    (acquired,) = connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if acquired:
        return
    holder = "another PostgreSQL session"
    with contextlib.suppress(Exception):  # who holds it is a courtesy; the refusal is the point
        row = connection.execute(
            "SELECT a.pid, a.client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            (key,),
        ).fetchone()
        if row:
            holder = f"PostgreSQL backend {row[0]} from {row[1] or 'a local socket'}"
    raise _busy(what, holder)
