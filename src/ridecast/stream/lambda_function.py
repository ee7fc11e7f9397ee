"""A drop-in for the course's Kinesis Lambda: ``lambda_handler(event, context)``.

It takes the event AWS hands a Kinesis-triggered function — ``{"Records": [{"kinesis":
{"data": base64(ride event JSON), ...}}, ...]}`` — and returns the course's answer,
``{"predictions": [{"model": "ride_duration_prediction_model", "version": …, "prediction":
{"ride_duration": …, "ride_id": …}}, ...]}``, predicting all records of an invocation in one
vectorized call.

The model (``RIDECAST_MODEL_URI``, default ``models:/ride-duration@champion``, from the registry at
``MLFLOW_TRACKING_URI``) is loaded once per container, on the first invocation. A record that is
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

_lock = threading.Lock()
_predictor: Predictor | None = None


def load_predictor() -> Predictor:
    """The container's model: loaded on first use, then reused by every invocation."""
    global _predictor
    with _lock:
        if _predictor is None:
            from ridecast.predictor import Predictor
            from ridecast.registry import Registry
            from ridecast.settings import get_settings

            settings = get_settings()
            _predictor = Predictor(Registry(settings).load(settings.lambda_model_uri))
            _predictor.warm()
        return _predictor


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
