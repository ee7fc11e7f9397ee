"""The course's Lambda loop over Redis Streams, as the streaming baseline: one event at a time.

For each event: XREADGROUP COUNT 1, ``json.loads``, the course's ``prepare_features``, one
``pipeline.predict`` on the fitted DictVectorizer + regressor, ``json.dumps`` of the course's
output record, XADD it, XACK the event. Run it as ridecast's consumer is run::

    RIDECAST_HOME=... python bench/baselines/lambda_loop.py --redis redis://127.0.0.1:6379/0 \
        --input ride_events --output ride_predictions --group baseline --consumer c1

It loads the same registered version (``--model``, default ``models:/ride-duration@champion``)
and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal

import redis
from course_model import course_pipeline

from ridecast.features import prepare_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--input", default="ride_events")
    parser.add_argument("--output", default="ride_predictions")
    parser.add_argument("--group", default="baseline")
    parser.add_argument("--consumer", default="c1")
    parser.add_argument("--model", default="models:/ride-duration@champion")
    args = parser.parse_args()

    pipeline, version = course_pipeline(args.model)
    client = redis.Redis.from_url(args.redis)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: the group exists
        client.xgroup_create(args.input, args.group, id="0", mkstream=True)
    client.xgroup_createconsumer(args.input, args.group, args.consumer)  # "ready" for the bench

    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        reply = client.xreadgroup(args.group, args.consumer, {args.input: ">"}, count=1, block=200)
        if not reply:
            continue
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        for event_id, fields in entries:
            event = json.loads(fields[b"data"])
            features = prepare_features(event["ride"])
            prediction = float(pipeline.predict(features)[0])
            result = {
                "model": "ride_duration_prediction_model",
                "version": version,
                "prediction": {"ride_duration": prediction, "ride_id": event["ride_id"]},
            }
            client.xadd(args.output, {"data": json.dumps(result), "source": event_id})
            client.xack(args.input, args.group, event_id)


if __name__ == "__main__":
    main()
