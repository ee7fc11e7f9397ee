"""Which version scores which row of a batch job: decided once, at the start, and written down.

The plan is made before the first row is read and holds for the whole job (every month of a
backfill), so an alias or a rollout that moves meanwhile never mixes two decisions in one output:

- ``--candidate REF``: every row is scored by the stable version and by the candidate;
- an active rollout of the model (and no ``--candidate``, no ``--no-follow-rollout``, no explicit
  version in ``--model``): each row goes to the version the rollout's router gives its ride id,
  exactly as the web service and the stream consumers route (``routing_key(None, ride_id)``);
- otherwise every row is scored by the version the reference names.

Every model is loaded through :meth:`ridecast.registry.Registry.predictor`, the one loading path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ridecast.errors import ModelError, RidecastError
from ridecast.features import RideArrays
from ridecast.modelref import parse_model_uri
from ridecast.predictor import Predictor
from ridecast.urls import mask_url

if TYPE_CHECKING:
    from ridecast.control.follower import Deployment
    from ridecast.registry import Registry
    from ridecast.settings import Settings


@dataclass(frozen=True)
class ChunkScores:
    """One chunk's answers. ``predicted`` is what the output's ``predicted_duration`` holds."""

    predicted: np.ndarray
    candidate: np.ndarray | None = None  # compare: the candidate's answer for every row
    version_index: np.ndarray | None = None  # rollout: per row, 0 = stable, 1 = candidate
    shadow: np.ndarray | None = None  # rollout: rows also copied to the candidate (mask)
    shadow_predicted: np.ndarray | None = None  # the candidate's answers for those rows


@dataclass(frozen=True)
class ScoringPlan:
    stable: Predictor
    candidate: Predictor | None = None
    deployment: Deployment | None = None

    @property
    def kind(self) -> str:
        if self.deployment is not None:
            return "rollout"
        return "compare" if self.candidate is not None else "score"

    @property
    def rollout_id(self) -> str | None:
        return self.deployment.rollout_id if self.deployment is not None else None

    @property
    def versions(self) -> list[str]:
        """Index 0 is the stable version; index 1 the candidate, when there is one."""
        other = self.rollout_candidate if self.deployment is not None else self.candidate
        return [self.stable.version] + ([other.version] if other is not None else [])

    @property
    def rollout_candidate(self) -> Predictor | None:
        if self.deployment is None or self.deployment.state is None:
            return None
        return self.deployment.predictors[self.deployment.state.candidate_version]

    @property
    def arms(self) -> list[str]:
        if self.deployment is None:
            return ["stable"]
        router = self.deployment.router
        return [router.stable.arm, router.candidate.arm]

    def score(self, rides: RideArrays, ride_ids: np.ndarray) -> ChunkScores:
        if self.deployment is None:
            predicted = self.stable.predict_arrays(rides)
            if self.candidate is None:
                return ChunkScores(predicted)
            return ChunkScores(predicted, candidate=self.candidate.predict_arrays(rides))
        return self._route(rides, ride_ids)

    def _route(self, rides: RideArrays, ride_ids: np.ndarray) -> ChunkScores:
        from ridecast.rollout.router import ride_keys

        assert self.deployment is not None
        n = len(ride_ids)
        split = self.deployment.router.route_many(ride_keys(ride_ids.tolist()))
        to_candidate = np.zeros(n, dtype=bool)
        to_candidate[split.candidate] = True
        shadow = np.zeros(n, dtype=bool)
        shadow[split.shadowed] = True
        predicted = np.empty(n, dtype=np.float64)
        stable_rows = ~to_candidate
        predicted[stable_rows] = self.stable.predict_arrays(_take(rides, stable_rows))
        candidate = self.rollout_candidate
        if to_candidate.any():
            assert candidate is not None
            predicted[to_candidate] = candidate.predict_arrays(_take(rides, to_candidate))
        shadow_predicted = None
        if shadow.any() and candidate is not None:
            shadow_predicted = candidate.predict_arrays(_take(rides, shadow))
        return ChunkScores(
            predicted,
            version_index=to_candidate.astype(np.int8),
            shadow=shadow if shadow_predicted is not None else None,
            shadow_predicted=shadow_predicted,
        )


def _take(rides: RideArrays, mask: np.ndarray) -> RideArrays:
    return RideArrays(pu=rides.pu[mask], do=rides.do[mask], distance=rides.distance[mask])


def plan_job(
    settings: Settings,
    model_uri: str,
    *,
    candidate_uri: str | None = None,
    follow_rollout: bool = True,
    registry: Registry | None = None,
) -> ScoringPlan:
    """Resolve and load what the job scores with. Bad references raise a RidecastError that
    names the option (``--model`` or ``--candidate``)."""
    from ridecast.registry import Registry

    registry = registry or Registry(settings)
    ref = parse_model_uri(model_uri)
    stable = registry.predictor(ref)
    if candidate_uri is not None:
        return ScoringPlan(stable, candidate=_candidate(registry, ref.name, stable, candidate_uri))
    if not follow_rollout or ref.version is not None:
        return ScoringPlan(stable)
    deployment = _active_rollout(settings, registry, ref)
    if deployment is None:
        return ScoringPlan(stable)
    return ScoringPlan(deployment.stable, deployment=deployment)


def _candidate(registry: Registry, name: str, stable: Predictor, uri: str) -> Predictor:
    try:
        ref = parse_model_uri(uri)
        if ref.name != name:
            raise ModelError(f"it names model {ref.name}; compare versions of {name}")
        candidate = registry.predictor(ref)
    except RidecastError as exc:
        raise ModelError(f"--candidate {uri}: {exc}") from exc
    if candidate.version == stable.version:
        raise ModelError(
            f"--candidate {uri} is v{candidate.version}, the version --model already names; "
            "nothing to compare"
        )
    return candidate


def _active_rollout(settings: Settings, registry: Registry, ref: object) -> Deployment | None:
    """The deployment the model's active rollout defines now, as every serving mode sees it."""
    from ridecast.control.follower import Follower
    from ridecast.control.store import store_for
    from ridecast.modelref import ModelRef

    assert isinstance(ref, ModelRef)
    try:
        store = store_for(settings)
        state = store.active(ref.name)
    except RidecastError:
        raise
    except Exception as exc:
        raise RidecastError(
            f"cannot read the rollout state at {mask_url(settings.resolved_state_url)}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "fix RIDECAST_STATE_URL or pass --no-follow-rollout to score with the alias's version"
        ) from exc
    if state is None:
        return None
    follower = Follower(ref, registry, store)
    follower.refresh(first=True)
    deployment = follower.current
    return deployment if deployment.state is not None else None
