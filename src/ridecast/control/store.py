"""Where rollouts live: their state, every transition with its reason and figures, and the lease.

One SQL database (SQLite by default, PostgreSQL by URL) shared by every worker, replica, consumer,
batch job and the CLI; its tables (:mod:`ridecast.monitoring.schema`) are made and upgraded by
the prediction log's Alembic migrations. Writes are short transactions; a state change and its
transition row are written together. At most one rollout per model is active; the database
enforces it with a partial unique index, so two concurrent ``rollout start`` commands cannot both
win.

Serving workers with an index (``ridecast serve --workers N``) report here which version they
answer with while they follow a rolling rollout (:meth:`RolloutStore.report_worker`): the
controller moves the next worker only once every moved one says it serves the candidate.

The lease names the one process that advances steps: it holds the lease while it renews it
within ``ttl`` seconds; another process takes it over once it has expired.

Each transition a process saves is also counted in its ``ridecast_rollout_transitions_total``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ridecast.errors import RolloutError
from ridecast.monitoring import migrate
from ridecast.monitoring.database import first_line, shared_engine
from ridecast.monitoring.metrics import rollout_metrics
from ridecast.monitoring.schema import rollout_leases as leases
from ridecast.monitoring.schema import rollout_transitions as transitions
from ridecast.monitoring.schema import rollout_workers as workers
from ridecast.monitoring.schema import rollouts
from ridecast.rollout.measurements import WorkerReport
from ridecast.rollout.state import ACTIVE_PHASES, RolloutState
from ridecast.urls import mask_url


def _row_state(row: Any) -> RolloutState:
    data = dict(row._mapping)
    for key in ("spec", "memory"):
        if isinstance(data[key], str):
            data[key] = json.loads(data[key])
    return RolloutState.from_dict(data)


def _values(state: RolloutState) -> dict[str, Any]:
    values = state.to_dict()
    values["active"] = state.active
    values["active_model"] = state.model if state.active else None
    return values


class RolloutStore:
    """The rollout state store at ``url`` (a SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = shared_engine(url)
        self._ensure()

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    def _ensure(self) -> None:
        """Bring the database to the newest schema (Alembic; safe from many processes at once)."""
        try:
            migrate.upgrade(self.engine)
        except Exception as exc:
            raise RolloutError(
                f"the rollout state store at {self.safe_url} is not usable: {first_line(exc)}; "
                "check RIDECAST_STATE_URL"
            ) from exc

    # --- rollouts ---

    def create(self, state: RolloutState, *, reason: str, actor: str = "cli") -> RolloutState:
        """Insert a new rollout; RolloutError when its model already has an active one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(rollouts).values(**_values(state)))
                self._transition(conn, state, reason, {}, actor)
        except IntegrityError as exc:
            existing = self.active(state.model)
            raise RolloutError(
                f"rollout file: model: {state.model} already has an active rollout "
                f"({existing.id if existing else '?'}); promote or abort it first"
            ) from exc
        _count_transition(state)
        return state

    def get(self, rollout_id: str) -> RolloutState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        return None if row is None else _row_state(row)

    def active(self, model: str) -> RolloutState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.active_model == model)).first()
        return None if row is None else _row_state(row)

    def all_active(self) -> list[RolloutState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(rollouts).where(rollouts.c.phase.in_(ACTIVE_PHASES))
            ).fetchall()
        return [_row_state(r) for r in rows]

    def latest(self, model: str | None = None) -> RolloutState | None:
        query = select(rollouts).order_by(rollouts.c.created_at.desc()).limit(1)
        if model is not None:
            query = query.where(rollouts.c.model == model)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _row_state(row)

    def recent(self, limit: int = 20) -> list[RolloutState]:
        query = select(rollouts).order_by(rollouts.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_row_state(r) for r in conn.execute(query).fetchall()]

    def save(
        self,
        state: RolloutState,
        *,
        reason: str,
        figures: dict[str, Any] | None = None,
        actor: str = "controller",
        expected_updated_at: float | None = None,
    ) -> RolloutState:
        """Write ``state`` and its transition in one transaction. With ``expected_updated_at``,
        the write happens only if nobody changed the rollout since (else RolloutError)."""
        state = state.evolve(updated_at=time.time(), reason=reason)
        query = update(rollouts).where(rollouts.c.id == state.id)
        if expected_updated_at is not None:
            query = query.where(rollouts.c.updated_at == expected_updated_at)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(query.values(**_values(state)))
                if result.rowcount != 1:
                    raise RolloutError(
                        f"rollout {state.id} changed while this change was being made; run it again"
                    )
                self._transition(conn, state, reason, figures or {}, actor)
        except IntegrityError as exc:  # re-activating while the model has another active one
            existing = self.active(state.model)
            raise RolloutError(
                f"rollout {state.id}: {state.model} already has another active rollout "
                f"({existing.id if existing else '?'}); promote or abort it first"
            ) from exc
        _count_transition(state)
        return state

    def _transition(
        self, conn: Any, state: RolloutState, reason: str, figures: dict[str, Any], actor: str
    ) -> None:
        conn.execute(
            insert(transitions).values(
                rollout_id=state.id,
                ts=time.time(),
                phase=state.phase,
                step=state.step,
                weight=state.weight,
                shadow_percent=state.shadow_percent,
                reason=reason,
                figures=json.loads(json.dumps(figures, default=str)),
                actor=actor,
            )
        )

    def history(self, rollout_id: str) -> list[dict[str, Any]]:
        query = (
            select(transitions)
            .where(transitions.c.rollout_id == rollout_id)
            .order_by(transitions.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).fetchall()
        out = []
        for row in rows:
            # Plain str keys: SQLAlchemy's are a str subclass, which orjson (the admin API) refuses.
            data = {str(k): v for k, v in row._mapping.items()}
            if isinstance(data["figures"], str):
                data["figures"] = json.loads(data["figures"])
            data.pop("id", None)
            out.append(data)
        return out

    # --- the workers' reports ---

    def report_worker(
        self,
        model: str,
        *,
        host: str,
        worker: int,
        pid: int,
        rollout_id: str | None,
        answering: str,
        versions: list[str],
        error: str | None,
    ) -> None:
        """Record what serving worker ``worker`` on ``host`` answers with now (one row each)."""
        key = (workers.c.model == model) & (workers.c.host == host) & (workers.c.worker == worker)
        values = {
            "pid": pid,
            "rollout_id": rollout_id,
            "answering": answering,
            "versions": ",".join(versions)[:256],
            "error": error,
            "ts": time.time(),
        }
        with self.engine.begin() as conn:
            if conn.execute(update(workers).where(key).values(**values)).rowcount == 1:
                return
        try:
            with self.engine.begin() as conn:
                row = {"model": model, "host": host, "worker": worker, **values}
                conn.execute(insert(workers).values(**row))
        except IntegrityError:  # the same worker's report raced in first: update it
            with self.engine.begin() as conn:
                conn.execute(update(workers).where(key).values(**values))

    def worker_reports(self, model: str, now: float | None = None) -> list[WorkerReport]:
        """Every serving worker's last report for ``model``, with its age in seconds."""
        now = time.time() if now is None else now
        query = select(workers).where(workers.c.model == model).order_by(workers.c.worker)
        with self.engine.connect() as conn:
            rows = conn.execute(query).fetchall()
        return [
            WorkerReport(
                worker=int(r.worker),
                host=str(r.host),
                rollout_id=r.rollout_id,
                answering=str(r.answering),
                versions=tuple(v for v in str(r.versions).split(",") if v),
                error=r.error,
                age_s=max(0.0, now - float(r.ts)),
            )
            for r in rows
        ]

    # --- the lease ---

    def try_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder``; True while it is ours."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(leases)
                    .where(leases.c.name == name)
                    .where((leases.c.holder == holder) | (leases.c.expires_at < now))
                    .values(holder=holder, expires_at=now + ttl)
                ).rowcount
                if taken == 1:
                    return True
                exists = conn.execute(select(leases.c.holder).where(leases.c.name == name)).first()
                if exists is not None:
                    return False
                conn.execute(insert(leases).values(name=name, holder=holder, expires_at=now + ttl))
                return True
        except IntegrityError:
            return False  # another process inserted it first
        except SQLAlchemyError:
            return False

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        return None if row is None else (str(row[0]), float(row[1]))

    def release(self, name: str, holder: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(leases)
                    .where(leases.c.name == name)
                    .where(leases.c.holder == holder)
                    .values(expires_at=0.0)
                )
        except SQLAlchemyError:
            pass

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def _count_transition(state: RolloutState) -> None:
    rollout_metrics().transitions.labels(state.model, state.id, state.strategy, state.phase).inc()


def store_for(settings: Any) -> RolloutStore:
    """The store the settings name (RIDECAST_STATE_URL, default: the prediction log's DB)."""
    return RolloutStore(settings.resolved_state_url)
