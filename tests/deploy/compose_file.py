"""deploy/compose.yaml read the way Docker Compose reads it, for the deploy tests.

YAML with its anchors and merge keys, then ``${VAR:-default}`` interpolated with the defaults:
the tests check what ``docker compose -f deploy/compose.yaml up`` runs with no ``.env`` file.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
RIDECAST_IMAGE = "ridecast:latest"

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def _substitute(match: re.Match[str]) -> str:
    if match.group(0) == "$$":
        return "$"
    op = match.group("op")
    if op in (":-", "-"):
        return match.group("arg")
    if op in (":?", "?"):
        raise AssertionError(f"${{{match.group('name')}}} is required: give it a default")
    return ""


def interpolate(value: Any) -> Any:
    """Compose's variable syntax, resolved to each variable's default."""
    if isinstance(value, str):
        return _VARIABLE.sub(_substitute, value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@functools.cache
def _load() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{COMPOSE} is not a mapping"
    return dict(interpolate(document))


def compose() -> dict[str, Any]:
    """The whole file, interpolated (a copy: tests may change it)."""
    return copy.deepcopy(_load())


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def is_ridecast(service: dict[str, Any]) -> bool:
    return service.get("image") == RIDECAST_IMAGE


def is_job(service: dict[str, Any]) -> bool:
    """A one-shot job: runs to completion and is never restarted."""
    return str(service.get("restart", "no")) == "no"


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    assert isinstance(value, list), f"use the exec form (a list) for command: {value!r}"
    return [str(v) for v in value]


def option(args: list[str], name: str) -> str | None:
    """The value after ``name`` (the last one if repeated), or None."""
    values = options(args, name)
    return values[-1] if values else None


def options(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return {str(k): str(v) for k, v in value.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = service.get("depends_on") or {}
    assert isinstance(value, dict), f"depends_on must name a condition: {value!r}"
    return dict(value)


def upstream(name: str, all_services: dict[str, dict[str, Any]]) -> set[str]:
    """Every service ``name`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(depends_on(all_services[name]))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(depends_on(all_services[current]))
    return seen


def health_url(service: dict[str, Any]) -> str | None:
    """The http URL a service's healthcheck requests, if it requests one."""
    test = (service.get("healthcheck") or {}).get("test") or []
    text = " ".join(test) if isinstance(test, list) else str(test)
    match = re.search(r"https?://[^\s'\"]+", text)
    return match.group(0) if match else None


def listen_port(service: dict[str, Any]) -> int | None:
    """The port a service answers HTTP on inside the stack's network: the ridecast and MLflow
    commands' own option, else the port its healthcheck requests."""
    args = command(service)
    for name in ("--port", "--metrics-port"):
        if (value := option(args, name)) is not None:
            return int(value)
    url = health_url(service)
    return urlparse(url).port if url else None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes (bind mounts and named volumes)."""
    out: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        parts = str(entry).split(":")
        out[parts[1]] = parts[0]
    return out
