"""The deployment files, checked offline: the manifests parse and wire probes, ports and
graceful shutdown to the server's real endpoints; the Dockerfile parses and starts the server."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from ridecast.web.cli import DEFAULT_PORT
from tests.web.conftest import Served

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
                docs[doc["kind"]] = doc
    return docs


def test_kubernetes_deployment_probes_ports_and_graceful_shutdown(served: Served) -> None:
    docs = _docs()
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == DEFAULT_PORT
    assert service["spec"]["ports"][0]["targetPort"] in ("http", DEFAULT_PORT)
    routes = {getattr(r, "path", "") for r in served.app.api.routes}
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/health/ready" and live["path"] == "/health/live"
    assert {ready["path"], live["path"]} <= routes
    assert ready["port"] in ports or ready["port"] == DEFAULT_PORT
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and 0 < int(sleep[1]) < pod["spec"]["terminationGracePeriodSeconds"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "--model" in container["args"]


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_parses_and_runs_the_server() -> None:
    steps = _instructions((DEPLOY / "Dockerfile").read_text())
    assert steps[0][0] == "FROM"
    assert all(k in INSTRUCTIONS for k, _ in steps), [k for k, _ in steps if k not in INSTRUCTIONS]
    by_kind: dict[str, list[str]] = {}
    for k, rest in steps:
        by_kind.setdefault(k, []).append(rest)
    assert by_kind["EXPOSE"] == [str(DEFAULT_PORT)]
    entrypoint = json.loads(by_kind["ENTRYPOINT"][-1])
    assert entrypoint[:2] == ["ridecast", "serve"] and "0.0.0.0" in entrypoint
    assert json.loads(by_kind["CMD"][-1])[0] == "--model"
    assert "/health/ready" in by_kind["HEALTHCHECK"][0]
    assert by_kind["USER"] and by_kind["USER"][0] != "root"
    for run in by_kind["RUN"]:
        shlex.split(run)  # each RUN is well-formed shell words
