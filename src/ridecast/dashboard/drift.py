"""The drift page: each recent month in the data folder, or the last N logged requests, against
the model's training month (:mod:`ridecast.monitoring.drift` does the statistics).

A report reads a whole month and predicts it, which takes seconds on a real TLC month, so
reports are computed one at a time on a background thread and kept for a while; the page shows
"computing" until its report is there and asks again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ridecast.errors import RidecastError

if TYPE_CHECKING:
    from ridecast.dashboard.sources import Sources
    from ridecast.registry import Registry
    from ridecast.settings import Settings

MONTH_FILE = re.compile(r"^(green|yellow)_tripdata_(\d{4}-\d{2})\.parquet$")
MONTHS_SHOWN = 6
LAST_N_CHOICES = (200, 1000, 5000)
MONTH_TTL = 600.0  # a month file rarely changes; the champion may move: look again after this
RECENT_TTL = 20.0  # the last N requests move all the time
KEPT = 32


@dataclass(frozen=True)
class Subject:
    """What a report compares with the reference: a month file, or the last N requests."""

    kind: str  # "month" | "recent"
    taxi_type: str = ""
    month: str = ""
    last_n: int = 0

    @property
    def key(self) -> str:
        return f"{self.taxi_type}:{self.month}" if self.kind == "month" else f"last:{self.last_n}"

    @property
    def label(self) -> str:
        return f"{self.taxi_type} {self.month}" if self.kind == "month" else f"last {self.last_n}"

    @classmethod
    def parse(cls, key: str) -> Subject | None:
        if key.startswith("last:") and key[5:].isdigit():
            return cls("recent", last_n=max(1, min(int(key[5:]), 100_000)))
        taxi, _, month = key.partition(":")
        if taxi in ("green", "yellow") and re.fullmatch(r"\d{4}-\d{2}", month):
            return cls("month", taxi_type=taxi, month=month)
        return None


def month_files(data_dir: Path, limit: int = MONTHS_SHOWN) -> list[Subject]:
    """The newest ``limit`` TLC month files (green and yellow) in ``data_dir``."""
    if not data_dir.is_dir():
        return []
    found = []
    for path in data_dir.iterdir():
        match = MONTH_FILE.match(path.name)
        if match:
            found.append(Subject("month", taxi_type=match[1], month=match[2]))
    found.sort(key=lambda s: (s.month, s.taxi_type), reverse=True)
    return found[:limit]


class DriftReports:
    """Drift reports by subject, computed on one background thread and kept for a while."""

    def __init__(
        self, settings: Settings, registry: Registry | None = None, sources: Sources | None = None
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._sources = sources
        self._reports: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._queue: list[Subject] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, subject: Subject) -> dict[str, Any]:
        """The report (``status`` ready, or error with a ``message``), or ``status``
        computing while it is being made."""
        ttl = MONTH_TTL if subject.kind == "month" else RECENT_TTL
        with self._lock:
            kept = self._reports.get(subject.key)
            fresh = kept is not None and time.monotonic() - kept[0] < ttl
            if not fresh and subject not in self._queue:
                self._queue.append(subject)
                self._wake.set()
                self._start()
        if kept is not None:
            return kept[1]  # a stale report is shown while its successor is computed
        return {"status": "computing", "subject": subject.key, "label": subject.label}

    def _start(self) -> None:
        """One daemon thread per dashboard, started by the first request, sleeping when idle."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="ridecast-dashboard-drift", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                subject = self._queue[0] if self._queue else None
                if subject is None:
                    self._wake.clear()
            if subject is None:
                self._wake.wait()
                continue
            result = self._compute(subject)
            with self._lock:
                self._reports[subject.key] = (time.monotonic(), result)
                self._reports.move_to_end(subject.key)
                while len(self._reports) > KEPT:
                    self._reports.popitem(last=False)
                if subject in self._queue:
                    self._queue.remove(subject)

    def _compute(self, subject: Subject) -> dict[str, Any]:
        from ridecast.monitoring import drift

        base = {"subject": subject.key, "label": subject.label, "computed_at": time.time()}
        if subject.kind == "recent" and not self._has_answers():
            # Said before the registry is opened: opening one runs MLflow's own migrations.
            message = "the prediction log holds no answers yet: serve or stream some first"
            return {**base, "status": "error", "message": message}
        try:
            if subject.kind == "month":
                report = drift.month_drift(
                    self.settings, subject.taxi_type, subject.month, registry=self._registry_()
                )
            else:
                report = drift.recent_drift(
                    self.settings, subject.last_n, registry=self._registry_()
                )
        except RidecastError as exc:
            return {**base, "status": "error", "message": str(exc)}
        except Exception as exc:  # a report that cannot be made must not take the page down
            return {**base, "status": "error", "message": f"{type(exc).__name__}: {exc}"}
        return {**base, "status": "ready", "report": report.to_dict()}

    def _has_answers(self) -> bool:
        if self._sources is None:
            return True  # let the drift module say what is missing
        from sqlalchemy import select

        from ridecast.monitoring.schema import predictions

        log = self._sources.log
        if not self._sources.has(log, predictions.name):
            return False
        with log.connect() as conn:
            return conn.execute(select(predictions.c.id).limit(1)).first() is not None

    def _registry_(self) -> Registry:
        if self._registry is None:
            from ridecast.registry import Registry

            self._registry = Registry(self.settings)
        return self._registry


def drift_view(reports: DriftReports, selected: str | None) -> dict[str, Any]:
    """The months on offer with their flags (as far as computed), and the selected report."""
    months = month_files(reports.settings.resolved_data_dir)
    subjects = [*months, *(Subject("recent", last_n=n) for n in LAST_N_CHOICES)]
    chosen = Subject.parse(selected) if selected else None
    if chosen is None:
        chosen = months[0] if months else Subject("recent", last_n=LAST_N_CHOICES[1])
    summary = []
    for subject in months:
        entry = reports.report(subject)
        report = entry.get("report") or {}
        summary.append(
            {
                "subject": subject.key,
                "label": subject.label,
                "status": entry["status"],
                "message": entry.get("message"),
                "dataset_drifted": report.get("dataset_drifted"),
                "share_drifted": report.get("share_drifted"),
                "drifted_columns": report.get("drifted_columns"),
                "reference_label": report.get("reference_label"),
            }
        )
    return {
        "subjects": [{"subject": s.key, "label": s.label, "kind": s.kind} for s in subjects],
        "selected": chosen.key,
        "months": summary,
        "data_dir": str(reports.settings.resolved_data_dir),
        "current": reports.report(chosen),
        "empty": not months and chosen.kind == "month",
    }
