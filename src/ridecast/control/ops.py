"""What a person can do to a rollout: start, promote, abort, pause, resume, and read it back.

The CLI (``ridecast rollout …``) and the admin API (``/admin/rollouts``) both call these, so the
two can never disagree. Each operation validates everything before it changes anything: a bad
rollout file, an unknown model or candidate, or a second rollout of a model raises one
:class:`~ridecast.errors.RolloutError` line that names the field, and the store stays as it was.

Promotion moves the registry's stable alias (``champion``) first and only then saves the promoted
state: the registry is the truth, and a promotion the registry refused must not look done.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ridecast.errors import RidecastError, RolloutError
from ridecast.rollout.state import RolloutState
from ridecast.urls import mask_url

if TYPE_CHECKING:
    from ridecast.control.store import RolloutStore
    from ridecast.registry import Registry
    from ridecast.rollout.spec import RolloutSpec
    from ridecast.rollout.strategies import Decision
    from ridecast.settings import Settings

log = logging.getLogger("ridecast.control")

LEASE = "rollout-controller"  # the lease the one advancing controller holds
START_HINT = "start one with `ridecast rollout start FILE`"


def _store(settings: Settings, store: RolloutStore | None) -> RolloutStore:
    if store is not None:
        return store
    from ridecast.control.store import store_for

    return store_for(settings)


def _registry(settings: Settings, registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from ridecast.registry import Registry

    return Registry(settings)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------- choosing


def select(store: RolloutStore, model_or_id: str | None, *, active: bool) -> RolloutState:
    """The rollout a command means: by id, or by model (its active rollout, else its latest).

    With nothing named: the one active rollout. ``active=True`` (commands that change a
    rollout) otherwise accepts only a halted (``inconclusive``) latest one, which can still be
    resumed, promoted or aborted; ``active=False`` (reading) accepts any latest one.
    """
    if model_or_id:
        state = store.get(model_or_id) or store.active(model_or_id) or store.latest(model_or_id)
        if state is None:
            raise RolloutError(
                f"rollout: --model: no rollout of a model or with the id {model_or_id}; "
                f"{START_HINT}"
            )
        return state
    running = store.all_active()
    if len(running) > 1:
        models = ", ".join(sorted(s.model for s in running))
        raise RolloutError(
            f"rollout: --model: several rollouts are active ({models}); name one with --model"
        )
    if running:
        return running[0]
    latest = store.latest()
    if latest is not None and (not active or latest.phase == "inconclusive"):
        return latest
    if latest is not None:
        raise RolloutError(
            f"rollout: no active rollout (the latest, {latest.id}, is {latest.phase}); {START_HINT}"
        )
    raise RolloutError(f"rollout: no rollout yet; {START_HINT}")


# ---------------------------------------------------------------------------------- start


def _spec(text_or_path: str | Path) -> RolloutSpec:
    """A Path is a file to read; a str is the YAML itself (an admin API body must never
    make the server read a file it names)."""
    from ridecast.rollout.spec import load_spec, parse_spec

    if isinstance(text_or_path, Path):
        return load_spec(text_or_path)
    return parse_spec(text_or_path)


def _versions(registry: Registry, model: str) -> tuple[dict[str, str], list[str]]:
    try:
        registered = registry.client.get_registered_model(model)
        found = registry.client.search_model_versions(f"name='{model}'")
    except Exception as exc:
        raise RolloutError(
            f"rollout: the registry at {mask_url(registry.tracking_uri)} cannot be read: "
            f"{_first_line(exc)}"
        ) from exc
    aliases = {str(k): str(v) for k, v in (registered.aliases or {}).items()}
    return aliases, sorted((str(mv.version) for mv in found), key=int)


def resolve_versions(registry: Registry, spec: RolloutSpec) -> tuple[str, str]:
    """(stable version, candidate version) as the registry says now; RolloutError naming the
    field (``model``, ``stable`` or ``candidate``) when one does not resolve."""
    try:
        names = sorted(m.name for m in registry.client.search_registered_models())
    except Exception as exc:
        raise RolloutError(
            f"rollout: the registry at {mask_url(registry.tracking_uri)} cannot be read: "
            f"{_first_line(exc)}"
        ) from exc
    if spec.model not in names:
        raise RolloutError(
            f"rollout file: model: {spec.model} is not a registered model "
            f"(registered: {', '.join(names) or 'none'})"
        )
    aliases, versions = _versions(registry, spec.model)
    known = ", ".join(f"@{a}=v{v}" for a, v in sorted(aliases.items())) or "no aliases"
    listing = f"versions {', '.join(versions) or 'none'}; {known}"
    stable = aliases.get(spec.stable)
    if stable is None:
        raise RolloutError(
            f"rollout file: stable: {spec.model} has no @{spec.stable} alias to roll out from "
            f"({listing}); set one with `ridecast models alias {spec.model} {spec.stable} N`"
        )
    ref = spec.candidate.removeprefix("@")
    if ref[:1] == "v" and ref[1:].isdigit():  # `candidate: v2`
        ref = ref[1:]
    candidate = ref if ref.isdigit() and ref in versions else aliases.get(ref)
    if candidate is None:
        what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
        raise RolloutError(f"rollout file: candidate: {spec.model} has no {what} ({listing})")
    if candidate == stable:
        raise RolloutError(
            f"rollout file: candidate: {spec.candidate} is v{candidate}, which @{spec.stable} "
            "already serves; nothing to roll out"
        )
    return stable, candidate


def new_id(model: str, now: float) -> str:
    """A readable, unique id: the model, when it started (UTC) and 4 random hex digits."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{model[:40]}-{stamp}-{secrets.token_hex(2)}"


def start(
    settings: Settings,
    text_or_path: str | Path,
    *,
    registry: Registry | None = None,
    store: RolloutStore | None = None,
    actor: str = "cli",
    now: float | None = None,
) -> RolloutState:
    """Validate a rollout file (a Path to read, or the YAML text) against the registry and the
    store, then start the rollout."""
    from ridecast.rollout.spec import initial_state

    spec = _spec(text_or_path)
    registry = _registry(settings, registry)
    stable, candidate = resolve_versions(registry, spec)
    store = _store(settings, store)
    existing = store.active(spec.model)
    if existing is not None:
        raise RolloutError(
            f"rollout file: model: {spec.model} already has an active rollout ({existing.id}, "
            f"{existing.phase}); promote or abort it first"
        )
    now = time.time() if now is None else now
    state = initial_state(
        spec,
        rollout_id=new_id(spec.model, now),
        stable_version=stable,
        candidate_version=candidate,
        now=now,
    )
    reason = (
        f"started by {actor}: {spec.strategy} of {spec.model} from v{stable} "
        f"(@{spec.stable}) to v{candidate} ({spec.candidate})"
    )
    if state.reason and state.reason != "started":
        reason = f"{reason}; {state.reason}"
    return store.create(state.evolve(reason=reason), reason=reason, actor=actor)


# -------------------------------------------------------------------- changing a rollout


def stable_alias(state: RolloutState) -> str:
    """The alias a promotion moves (the rollout file's ``stable``, ``champion`` by default)."""
    return str(state.spec.get("stable") or "champion")


def decision_figures(decision: Decision) -> dict[str, Any]:
    figures = dict(decision.figures or {})
    if decision.verdict is not None:
        figures.setdefault("verdict", decision.verdict)
    return figures


def apply_promotion(
    registry: Registry,
    store: RolloutStore,
    state: RolloutState,
    decision: Decision,
    *,
    actor: str,
) -> RolloutState:
    """Move the stable alias to the candidate, then save the promoted state.

    If the registry refuses, nothing changes (RolloutError says why). If the state changed in
    the meantime so that it cannot be saved, the alias goes back where it was.
    """
    from ridecast.modelref import ModelRef

    alias = stable_alias(state)
    try:
        before = registry.resolve(ModelRef(state.model, alias))
    except RidecastError:
        before = None
    try:
        registry.set_alias(state.model, alias, state.candidate_version)
    except Exception as exc:
        raise RolloutError(
            f"promote: cannot move {state.model}@{alias} to v{state.candidate_version}: "
            f"{_first_line(exc)}; nothing changed"
        ) from exc
    try:
        return store.save(
            decision.state,
            reason=decision.reason,
            figures=decision_figures(decision),
            actor=actor,
            expected_updated_at=state.updated_at,
        )
    except Exception:
        if before is not None and before != state.candidate_version:
            try:
                registry.set_alias(state.model, alias, before)
            except Exception:
                log.exception("%s: could not move @%s back to v%s", state.model, alias, before)
        raise


def _change(
    settings: Settings,
    model_or_id: str | None,
    transition: Callable[[RolloutState, float], Decision],
    *,
    registry: Registry | None,
    store: RolloutStore | None,
    actor: str,
    now: float | None,
) -> RolloutState:
    store = _store(settings, store)
    state = select(store, model_or_id, active=True)
    decision = transition(state, time.time() if now is None else now)
    if decision.promote:
        return apply_promotion(_registry(settings, registry), store, state, decision, actor=actor)
    if not decision.changed:
        return state
    return store.save(
        decision.state,
        reason=decision.reason,
        figures=decision_figures(decision),
        actor=actor,
        expected_updated_at=state.updated_at,
    )


def promote(
    settings: Settings,
    model_or_id: str | None = None,
    *,
    reason: str | None = None,
    registry: Registry | None = None,
    store: RolloutStore | None = None,
    actor: str = "cli",
    now: float | None = None,
) -> RolloutState:
    """Promote by hand: the candidate becomes @champion, all traffic goes to it."""
    from ridecast.rollout import strategies

    why = reason or f"promoted by {actor}"
    return _change(
        settings,
        model_or_id,
        lambda s, t: strategies.promote(s, t, reason=why),
        registry=registry,
        store=store,
        actor=actor,
        now=now,
    )


def abort(
    settings: Settings,
    model_or_id: str | None = None,
    *,
    reason: str | None = None,
    store: RolloutStore | None = None,
    actor: str = "cli",
    now: float | None = None,
) -> RolloutState:
    """Abort: all traffic back to the stable version; the registry's alias is not touched."""
    from ridecast.rollout import strategies

    why = reason or f"aborted by {actor}"
    return _change(
        settings,
        model_or_id,
        lambda s, t: strategies.abort(s, t, why),
        registry=None,
        store=store,
        actor=actor,
        now=now,
    )


def pause(
    settings: Settings,
    model_or_id: str | None = None,
    *,
    store: RolloutStore | None = None,
    actor: str = "cli",
    now: float | None = None,
) -> RolloutState:
    """Hold the rollout at its current weights until resumed."""
    from ridecast.rollout import strategies

    return _change(
        settings, model_or_id, strategies.pause, registry=None, store=store, actor=actor, now=now
    )


def resume(
    settings: Settings,
    model_or_id: str | None = None,
    *,
    store: RolloutStore | None = None,
    actor: str = "cli",
    now: float | None = None,
) -> RolloutState:
    """Go on from a pause (a hand pause, or a `pause` step without a duration)."""
    from ridecast.rollout import strategies

    return _change(
        settings, model_or_id, strategies.resume, registry=None, store=store, actor=actor, now=now
    )


# -------------------------------------------------------------------------------- reading


def _step(state: RolloutState) -> dict[str, Any]:
    """The step index and, for a canary, that step as the file gives it (None when done)."""
    steps = state.spec.get("steps") or []
    current = steps[state.step] if 0 <= state.step < len(steps) else None
    return {"index": state.step, "count": len(steps), "spec": _given(current)}


def _given(value: Any) -> Any:
    """``value`` without its unset (None) fields, at every level."""
    if isinstance(value, dict):
        return {k: _given(v) for k, v in value.items() if v is not None}
    return value


def _analysis(rows: list[dict[str, Any]], last: int = 5) -> list[dict[str, Any]]:
    verdicts = [r for r in rows if (r.get("figures") or {}).get("verdict") is not None]
    return [
        {
            "at": r["ts"],
            "step": r["step"],
            "verdict": r["figures"]["verdict"],
            "reason": r["reason"],
            "figures": {k: v for k, v in r["figures"].items() if k != "verdict"},
        }
        for r in verdicts[-last:]
    ]


def describe(state: RolloutState, store: RolloutStore, now: float | None = None) -> dict[str, Any]:
    """The status of one rollout as plain JSON-able data (``status --json``, the admin API)."""
    now = time.time() if now is None else now
    lease = store.lease_holder(LEASE)
    return {
        "id": state.id,
        "model": state.model,
        "strategy": state.strategy,
        "phase": state.phase,
        "active": state.active,
        "stable_version": state.stable_version,
        "candidate_version": state.candidate_version,
        "step": _step(state),
        "weights": {str(v): int(p) for v, p in state.weights.items()},  # live traffic
        "shadow_percent": state.shadow_percent,  # requests also copied to the candidate
        "preview": state.preview,
        "analysis": _analysis(store.history(state.id)),
        "reason": state.reason,
        "lease": None
        if lease is None
        else {"holder": lease[0], "expires_at": lease[1], "live": lease[1] > now},
        "created_at": state.created_at,
        "step_started_at": state.step_started_at,
        "updated_at": state.updated_at,
        "spec": state.spec,
    }


def status(
    settings: Settings, model_or_id: str | None = None, *, store: RolloutStore | None = None
) -> dict[str, Any]:
    """The named rollout, or the one active (else the latest) when none is named."""
    store = _store(settings, store)
    return describe(select(store, model_or_id, active=False), store)


def history(
    settings: Settings, model_or_id: str | None = None, *, store: RolloutStore | None = None
) -> list[dict[str, Any]]:
    """Every transition of the rollout, oldest first, with its reason, figures and actor."""
    store = _store(settings, store)
    return store.history(select(store, model_or_id, active=False).id)
