"""Streaming: ride events through a broker (in-process or Redis Streams) to the duration, tip,
cost and dynamic-duration consumers, at-least-once. See docs/streaming.md."""

from __future__ import annotations

from typing import Any

__all__ = ["lambda_handler"]


def __getattr__(name: str) -> Any:
    # Lazy, so `ridecast --help` does not pay for the handler's imports.
    if name == "lambda_handler":
        from ridecast.stream.lambda_function import lambda_handler

        return lambda_handler
    raise AttributeError(name)
