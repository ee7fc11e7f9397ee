"""Graceful shutdown: on SIGTERM readiness turns false first, in-flight requests finish, exit 0.

:class:`GracefulServer` is uvicorn's server with three changes: the first SIGTERM/SIGINT calls
the drain hooks (the app's readiness goes false) and, after ``shutdown_delay`` seconds of still
serving, starts uvicorn's usual graceful shutdown (stop accepting, finish in-flight requests,
run the app's shutdown); a second signal during the delay shuts down at once; and the signal is
not re-raised afterwards, so the process exits with status 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

log = logging.getLogger("ridecast.web")

# Called (in the signal handler) when this process starts draining. Apps register themselves.
DRAIN_HOOKS: list[Callable[[], None]] = []


def begin_drain() -> None:
    for hook in list(DRAIN_HOOKS):
        hook()


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, shutdown_delay: float = 0.0) -> None:
        super().__init__(config)
        self.shutdown_delay = shutdown_delay
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_at is None:
            begin_drain()
            self._exit_at = time.monotonic() + self.shutdown_delay
            log.info(
                "received %s: not ready; finishing in-flight requests%s",
                signal.Signals(sig).name,
                f" after serving {self.shutdown_delay:g}s more" if self.shutdown_delay else "",
            )
            if self.shutdown_delay <= 0:
                self.should_exit = True
        elif not self.should_exit:
            self.should_exit = True  # second signal: skip the rest of the delay
        else:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


WORKER_INDEX_ENV = "RIDECAST_WORKER_INDEX"


def _watch_parent(parent: int, every: float = 0.5) -> None:
    """Drain and exit when the supervisor is gone (killed with SIGKILL, say): an orphaned worker
    would keep the port and serve on, with nobody to stop or replace it."""
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            log.error("the supervisor (pid %s) is gone; this worker drains and exits", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _worker(
    config: uvicorn.Config, shutdown_delay: float, sockets: list[socket.socket], index: int
) -> None:
    os.environ[WORKER_INDEX_ENV] = str(index)  # a replacement keeps the index it replaces
    config.configure_logging()
    watcher = threading.Thread(
        target=_watch_parent, args=(os.getppid(),), name="ridecast-parent-watch", daemon=True
    )
    watcher.start()
    GracefulServer(config, shutdown_delay).run(sockets=sockets)


def run_workers(
    config: uvicorn.Config,
    workers: int,
    shutdown_delay: float,
    metrics_dir: Path | None = None,
) -> int:
    """Serve ``config`` (an app factory) from ``workers`` processes sharing one listening socket.

    SIGTERM/SIGINT are passed on to every worker, which drains as :class:`GracefulServer` does;
    a worker that dies on its own is restarted. A worker that exits is reported dead to the
    metrics in ``metrics_dir``, so its gauges leave ``/metrics``. Returns 0 when every worker
    exited cleanly.
    """

    def buried(process: multiprocessing.process.BaseProcess) -> None:
        if metrics_dir is not None and process.pid is not None:
            from ridecast.monitoring.metrics import mark_worker_dead

            mark_worker_dead(process.pid, metrics_dir)

    context = multiprocessing.get_context("spawn")
    sock = config.bind_socket()
    stopping = threading.Event()

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker,
            args=(config, shutdown_delay, [sock], index),
            name=f"ridecast-worker-{index}",
        )
        process.start()
        return process

    def forward(sig: int, _frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, sig if sig != signal.SIGINT else signal.SIGTERM)

    processes = [start(i) for i in range(workers)]
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts: list[float] = []
    try:
        while not stopping.is_set():
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping.is_set():
                    now = time.monotonic()
                    restarts = [t for t in restarts if now - t < 60] + [now]
                    if len(restarts) > 2 * workers:
                        log.error("workers keep exiting (see above); stopping the server")
                        forward(signal.SIGTERM, None)
                        break
                    log.error(
                        "worker %s exited with status %s; starting a new one",
                        process.pid,
                        process.exitcode,
                    )
                    buried(process)
                    processes[i] = start(i)
            stopping.wait(0.5)
        for process in processes:
            process.join()
            buried(process)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    return 0 if all(p.exitcode == 0 for p in processes) else 1
