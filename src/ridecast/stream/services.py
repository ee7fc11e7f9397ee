"""The stream services: which model each one runs, which streams it reads and writes, and how a
micro-batch of valid events becomes output records.

=================  ===============  ===================  ==========================
service            model            reads                writes
=================  ===============  ===================  ==========================
duration           ride-duration    ride_events          ride_predictions
tip                ride-tip         ride_events          ride_tip_predictions
cost               ride-cost        ride_events          ride_cost_predictions
dynamic-duration   ride-duration    ride_progress        ride_dynamic_predictions
=================  ===============  ===================  ==========================

Dynamic duration corrects a ride's duration while it is under way. Its input is a ride-progress
event (see :mod:`ridecast.stream.events`): the ride as booked plus ``elapsed_minutes``,
``distance_covered`` and optionally ``current_location_id``. With ``D`` the model's duration for
the whole ride and ``f = distance_covered / trip_distance`` (clipped to 0..1):

* the model's remaining time is the model's duration for the leg left — from the current zone
  to the drop-off over the remaining distance — when the current zone is known, else ``D·(1-f)``;
* the ride's observed pace so far is ``r = elapsed / (D·f)`` (clipped to 0.25..4): above 1 the
  ride runs slower than the model expected;
* ``remaining = model_remaining · ((1-f) + f·r)`` — trust the observed pace in proportion to
  the share of the ride already driven; 0 once the booked distance is covered;
* ``ride_duration = elapsed + remaining`` (the corrected total).

It writes ``{"model": "ride_duration_prediction_model", "version": …, "prediction":
{"ride_duration": total, "remaining_duration": remaining, "elapsed_minutes": elapsed,
"ride_id": …}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ridecast.errors import RidecastError
from ridecast.features import RideArrays
from ridecast.stream.events import EventBatch, prediction_output

if TYPE_CHECKING:
    from ridecast.predictor import Predictor  # imports MLflow: only for type hints

RIDE_EVENTS = "ride_events"
RIDE_PROGRESS = "ride_progress"
PACE_CLIP = (0.25, 4.0)


@dataclass(frozen=True)
class Answer:
    """One version's predictions for some events: ``values`` is the output's prediction (the
    corrected total for dynamic duration, which also has ``remaining``)."""

    version: str
    values: np.ndarray
    remaining: np.ndarray | None = None


@dataclass(frozen=True)
class Service:
    """One kind of stream consumer."""

    name: str
    model_name: str
    input_stream: str
    output_stream: str
    output_model: str  # the "model" field of the course's output record
    output_key: str  # the prediction's key, e.g. "ride_duration"
    progress: bool = False  # reads ride-progress events

    @property
    def default_model_uri(self) -> str:
        return f"models:/{self.model_name}@champion"

    def outputs(self, predictor: Predictor, batch: EventBatch) -> list[bytes]:
        """One output record per valid event, in order (one version, no rollout)."""
        if len(batch) == 0:
            return []
        return self.encode(batch, self.predict(predictor, batch))

    def predict(self, predictor: Predictor, batch: EventBatch) -> Answer:
        """One vectorized model call for the whole batch."""
        if not self.progress:
            return Answer(predictor.version, predictor.predict_arrays(batch.arrays))
        assert batch.elapsed is not None and batch.covered is not None
        assert batch.current is not None
        total, remaining = dynamic_duration(
            predictor, batch.arrays, batch.elapsed, batch.covered, batch.current
        )
        return Answer(predictor.version, total, remaining)

    def encode(
        self,
        batch: EventBatch,
        answer: Answer,
        *,
        arm: str | None = None,
        rollout_id: str | None = None,
    ) -> list[bytes]:
        """The output records of ``answer``. ``arm`` and ``rollout_id`` are added after the
        course's keys only while a rollout is active, so the course's shape is untouched
        otherwise."""
        model, version, key = self.output_model, answer.version, self.output_key
        values = answer.values.tolist()
        if not self.progress and arm is None:
            return [
                prediction_output(model, version, key, value, ride_id)
                for value, ride_id in zip(values, batch.ride_ids, strict=True)
            ]
        import orjson

        tail = {} if arm is None else {"arm": arm, "rollout_id": rollout_id}
        if not self.progress:
            return [
                orjson.dumps(
                    {
                        "model": model,
                        "version": version,
                        "prediction": {key: value, "ride_id": ride_id},
                        **tail,
                    }
                )
                for value, ride_id in zip(values, batch.ride_ids, strict=True)
            ]
        assert batch.elapsed is not None and answer.remaining is not None
        return [
            orjson.dumps(
                {
                    "model": model,
                    "version": version,
                    "prediction": {
                        key: t,
                        "remaining_duration": r,
                        "elapsed_minutes": e,
                        "ride_id": ride_id,
                    },
                    **tail,
                }
            )
            for t, r, e, ride_id in zip(
                values,
                answer.remaining.tolist(),
                batch.elapsed.tolist(),
                batch.ride_ids,
                strict=True,
            )
        ]


def dynamic_duration(
    predictor: Predictor,
    rides: RideArrays,
    elapsed: np.ndarray,
    covered: np.ndarray,
    current: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(corrected total minutes, remaining minutes) per ride; see the module docstring.
    ``current`` holds the current zone id, or -1 where it is unknown."""
    n = len(rides)
    remaining_distance = np.maximum(rides.distance - covered, 0.0)
    has_current = current > 0
    legs = RideArrays(
        pu=np.where(has_current, current, rides.pu),
        do=rides.do,
        distance=remaining_distance,
    )
    both = predictor.predict_arrays(
        RideArrays(
            pu=np.concatenate([rides.pu, legs.pu]),
            do=np.concatenate([rides.do, legs.do]),
            distance=np.concatenate([rides.distance, legs.distance]),
        )
    )
    whole, leg = np.maximum(both[:n], 0.0), np.maximum(both[n:], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rides.distance > 0, covered / rides.distance, 0.0)
        share = np.clip(share, 0.0, 1.0)
        expected_so_far = whole * share
        pace = np.where(expected_so_far > 1e-6, elapsed / expected_so_far, 1.0)
    pace = np.clip(pace, *PACE_CLIP)
    model_remaining = np.where(has_current, leg, whole * (1.0 - share))
    remaining = model_remaining * ((1.0 - share) + share * pace)
    remaining = np.where(remaining_distance > 0, np.maximum(remaining, 0.0), 0.0)
    return elapsed + remaining, remaining


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "duration",
            "ride-duration",
            RIDE_EVENTS,
            "ride_predictions",
            "ride_duration_prediction_model",
            "ride_duration",
        ),
        Service(
            "tip",
            "ride-tip",
            RIDE_EVENTS,
            "ride_tip_predictions",
            "ride_tip_prediction_model",
            "ride_tip",
        ),
        Service(
            "cost",
            "ride-cost",
            RIDE_EVENTS,
            "ride_cost_predictions",
            "ride_cost_prediction_model",
            "ride_cost",
        ),
        Service(
            "dynamic-duration",
            "ride-duration",
            RIDE_PROGRESS,
            "ride_dynamic_predictions",
            "ride_duration_prediction_model",
            "ride_duration",
            progress=True,
        ),
    )
}


def get_service(name: str) -> Service:
    try:
        return SERVICES[name.strip().lower()]
    except KeyError:
        raise RidecastError(
            f"unknown stream service {name!r}; expected one of: {', '.join(SERVICES)}"
        ) from None


def dead_letter_stream(input_stream: str) -> str:
    """Where poison events of ``input_stream`` go (one per input stream, records name the
    service that gave up on them)."""
    return f"{input_stream}:dead-letter"
