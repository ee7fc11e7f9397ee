"""A drop-in for the course's Kinesis Lambda: ``lambda_handler(event, context)``.

It takes the event AWS hands a Kinesis-triggered function — ``{"Records": [{"kinesis":
{"data": base64(ride event JSON), ...}}, ...]}`` — and returns the course's answer,
``{"predictions": [{"model": "ride_duration_prediction_model", "version": …, "prediction":
{"ride_duration": …, "ride_id": …}}, ...]}``, predicting all records of an invocation in one
vectorized call.

The model (``RIDECAST_MODEL_URI``, default ``models:/ride-duration@champion``, from the registry at
``MLFLOW_TRACKING_URI``) comes from :meth:`ridecast.registry.Registry.predictor`, the one way every
mode loads a model: one Registry per container resolves the reference on each invocation (a
moved alias takes effect on the next one) and keeps each loaded, warmed version. A record that is
not a valid ride event does not fail the whole batch (Kinesis would retry it forever): it is
left out of ``predictions`` and reported under ``errors`` with its sequence number and reason.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ridecast.predictor import Predictor
    from ridecast.registry import Registry

_lock = threading.Lock()
_registry: Registry | None = None


def container_registry() -> Registry:
    """The container's registry, created on first use; it caches every version it loads."""
    global _registry
    with _lock:
        if _registry is None:
            from ridecast.registry import Registry
            from ridecast.settings import get_settings

            _registry = Registry(get_settings())
        return _registry


def load_predictor() -> Predictor:
    """The version ``RIDECAST_MODEL_URI`` names now, loaded and warmed once per container."""
    registry = container_registry()
    return registry.predictor(registry.settings.lambda_model_uri)


def handle_records(event: dict[str, Any], predictor: Predictor) -> dict[str, Any]:
    """The handler's logic with the model passed in (the seam tests use)."""
    from ridecast.stream.broker import Message
    from ridecast.stream.events import EventBatch, PoisonEvent, decode_batch
    from ridecast.stream.services import SERVICES

    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValueError('event must be {"Records": [{"kinesis": {"data": <base64>}}, ...]}')
    messages: list[Message] = []
    errors: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        kinesis = record.get("kinesis") if isinstance(record, dict) else None
        sequence = kinesis.get("sequenceNumber", str(index)) if isinstance(kinesis, dict) else None
        try:
            if not isinstance(kinesis, dict) or "data" not in kinesis:
                raise PoisonEvent(f"record {index} has no kinesis.data")
            data = base64.b64decode(kinesis["data"], validate=True)
        except (PoisonEvent, binascii.Error, TypeError, ValueError) as exc:
            errors.append({"record": index, "sequence_number": sequence, "error": str(exc)})
            continue
        messages.append(Message(str(sequence), data))
    batch: EventBatch
    batch, poison = decode_batch(messages)
    errors.extend({"sequence_number": m.id, "error": reason} for m, reason in poison)
    duration = SERVICES["duration"]
    import orjson

    predictions = [orjson.loads(p) for p in duration.outputs(predictor, batch)]
    answer: dict[str, Any] = {"predictions": predictions}
    if errors:
        answer["errors"] = errors
    return answer


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point (``ridecast.stream.lambda_handler``)."""
    return handle_records(event, load_predictor())
