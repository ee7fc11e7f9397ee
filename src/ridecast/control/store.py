"""Where rollouts live: their state, every transition with its reason and figures, and the lease.

One SQL database (SQLite by default, PostgreSQL by URL) shared by every worker, replica, consumer,
batch job and the CLI. Writes are short transactions; a state change and its transition row are
written together. At most one rollout per model is active; the database enforces it with a
partial unique index, so two concurrent ``rollout start`` commands cannot both win.

The lease names the one process that advances steps: it holds the lease while it renews it
within ``ttl`` seconds; another process takes it over once it has expired.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from ridecast.errors import RolloutError
from ridecast.monitoring.database import shared_engine
from ridecast.rollout.state import ACTIVE_PHASES, RolloutState

metadata = MetaData()
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("strategy", String(16), nullable=False),
    Column("stable_version", String(32), nullable=False),
    Column("candidate_version", String(32), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("step", Integer, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("shadow_percent", Integer, nullable=False),
    Column("preview", Boolean, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("memory", JSON, nullable=False),
    # One active rollout per model (NULL when not active: NULLs never collide).
    Column("active_model", String(64), nullable=True, unique=True),
)
Index("ix_rollouts_model_created", rollouts.c.model, rollouts.c.created_at)
transitions = Table(
    "rollout_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", String(64), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("shadow_percent", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("figures", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
)
leases = Table(
    "rollout_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)


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
        return self.engine.url.render_as_string(hide_password=True)

    def _ensure(self) -> None:
        for attempt in range(3):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except (OperationalError, IntegrityError) as exc:  # another process creating them
                if attempt == 2:
                    raise RolloutError(
                        f"the rollout state store at {self.safe_url} is not usable: "
                        f"{str(exc).splitlines()[0]}; check RIDECAST_STATE_URL"
                    ) from exc
                time.sleep(0.2 * (attempt + 1))

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
            data = dict(row._mapping)
            if isinstance(data["figures"], str):
                data["figures"] = json.loads(data["figures"])
            data.pop("id", None)
            out.append(data)
        return out

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


def store_for(settings: Any) -> RolloutStore:
    """The store the settings name (RIDECAST_STATE_URL, default: the prediction log's DB)."""
    return RolloutStore(settings.resolved_state_url)
