"""Model references: ``models:/name@alias``, ``models:/name/3`` or ``name``.

Kept apart from :mod:`ridecast.registry` so that parsing a reference does not import MLflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ridecast.errors import ModelError

_URI = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9_.\-]+)(?:@(?P<alias>[\w\-]+)|/(?P<version>\d+))?$"
)


@dataclass(frozen=True)
class ModelRef:
    """``models:/name@alias``, ``models:/name/3`` or plain ``name`` (meaning ``@champion``)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias or 'champion'}"

    def __str__(self) -> str:
        return self.uri


def parse_model_uri(text: str) -> ModelRef:
    match = _URI.match(text.strip())
    if not match:
        raise ModelError(
            f"model reference {text!r} is not understood; expected models:/NAME@ALIAS, "
            "models:/NAME/VERSION or NAME (e.g. models:/ride-duration@champion)"
        )
    alias, version = match["alias"], match["version"]
    return ModelRef(match["name"], alias if alias or version else "champion", version)
