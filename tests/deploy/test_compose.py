"""deploy/compose.yaml, checked without a Docker engine: it is valid Compose, every long-running
service has a healthcheck and every dependency a condition, every ridecast container runs a real
ridecast command, and each mode gets the settings it needs, pointed at the stack's services."""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest

from ridecast.settings import Settings
from ridecast.stream.services import SERVICES
from ridecast.web.cli import DEFAULT_PORT
from tests.deploy.compose_file import (
    COMPOSE,
    DEPLOY,
    command,
    compose,
    depends_on,
    environment,
    health_url,
    is_job,
    is_ridecast,
    listen_port,
    mounts,
    option,
    options,
    services,
    upstream,
)

CONSUMERS = {f"consumer-{name}": name for name in SERVICES}
# The stores the ridecast settings point at, and the port each listens on in the stack.
STORE_PORTS = {"postgres": 5432, "redis": 6379}


def _schema_errors(document: dict[str, Any]) -> list[str]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_validates_against_the_compose_specification() -> None:
    document = compose()
    assert "version" not in document, "the Compose Specification has no top-level version"
    assert _schema_errors(document) == []
    broken = compose()
    broken["services"]["api"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["redis"]["depends_on"] = {"postgres": {"condition": "service_up"}}
    assert len(_schema_errors(broken)) >= 2, "the schema check must catch a misspelled key"


def test_one_ridecast_image_runs_every_mode() -> None:
    all_services = services()
    built = {n: s for n, s in all_services.items() if "build" in s}
    assert list(built) == ["api"], "exactly one service builds the image"
    build = built["api"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == DEPLOY.parent
    assert (DEPLOY.parent / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    ridecast = {n for n, s in all_services.items() if is_ridecast(s)}
    expected = {"api", "mlflow", "producer", "batch", "train", *CONSUMERS}
    assert expected <= ridecast, expected - ridecast
    for name in ridecast - {"api"}:
        # Compose would otherwise try to pull an image that only the api's build makes.
        assert all_services[name].get("pull_policy") == "never", name
    for name, service in all_services.items():
        image = str(service.get("image", ""))
        first, _, rest = image.partition("/")
        assert image and not (rest and ("." in first or ":" in first)), (
            f"{name}: a bare image name, without a registry host ({image!r})"
        )
        if name not in ridecast:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin a tag ({image})"
    # The image's ENTRYPOINT is `ridecast`, so a service's command is ridecast's arguments.
    entrypoints = re.findall(r"^ENTRYPOINT\s+(\[.*\])", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert entrypoints and json.loads(entrypoints[-1]) == ["ridecast"]


def test_healthchecks_and_dependency_conditions() -> None:
    all_services = services()
    long_running = {n for n, s in all_services.items() if not is_job(s)}
    jobs = set(all_services) - long_running
    assert {"api", "postgres", "redis", "mlflow", "prometheus", "grafana", "pushgateway"} <= (
        long_running
    )
    assert {"train", "batch", "producer"} <= jobs
    assert set(CONSUMERS) <= long_running
    for name in long_running:
        check = all_services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} needs a healthcheck"
        assert str(all_services[name]["restart"]) in ("always", "unless-stopped"), name
    for name in jobs:
        # The image's HEALTHCHECK probes the web port, which a job never opens.
        assert all_services[name].get("healthcheck") == {"disable": True}, name
    for name, service in all_services.items():
        for dependency, spec in depends_on(service).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency in jobs else "service_healthy"
            assert isinstance(spec, dict) and spec.get("condition") == wanted, (
                f"{name} → {dependency}: condition {wanted}"
            )
        assert name not in upstream(name, all_services), f"{name} waits for itself"


def test_the_api_publishes_the_default_port_and_probes_readiness() -> None:
    api = services()["api"]
    args = command(api)
    assert args[0] == "serve" and option(args, "--host") == "0.0.0.0"
    assert listen_port(api) == DEFAULT_PORT
    assert f"{DEFAULT_PORT}:{DEFAULT_PORT}" in [str(p).split("/")[0] for p in api["ports"]]
    url = urlparse(health_url(api) or "")
    assert (url.port, url.path) == (DEFAULT_PORT, "/health/ready")


def test_healthchecks_probe_the_port_each_service_listens_on() -> None:
    all_services = services()
    for name in CONSUMERS:
        args = command(all_services[name])
        # Prometheus scrapes from another container: the metrics server listens on every
        # interface, and the healthcheck asks that server.
        assert option(args, "--metrics-host") == "0.0.0.0", name
        url = urlparse(health_url(all_services[name]) or "")
        assert url.port == int(option(args, "--metrics-port") or 0) and url.path == "/metrics"
    mlflow = all_services["mlflow"]
    url = urlparse(health_url(mlflow) or "")
    assert (url.port, url.path) == (int(option(command(mlflow), "--port") or 0), "/health")
    assert "pg_isready" in all_services["postgres"]["healthcheck"]["test"]


def _help(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or ["ridecast"]
    assert entrypoint in (["ridecast"], ["mlflow"]), entrypoint
    return [*entrypoint, *command(service)]


def test_every_ridecast_container_runs_a_real_command() -> None:
    """Each command with its own options, plus --help: an unknown command or option exits 2."""
    ridecast = {n: s for n, s in services().items() if is_ridecast(s)}
    argvs = {name: _argv(service) for name, service in ridecast.items()}
    argvs["(an unknown option, which must fail)"] = ["ridecast", "stream", "consume", "--srvice"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(argvs, pool.map(_help, argvs.values()), strict=True))
    bad = results.pop("(an unknown option, which must fail)")
    assert bad.returncode == 2, bad.stderr
    failed = {n: (r.returncode, r.stderr[-400:]) for n, r in results.items() if r.returncode}
    assert not failed, failed
    assert argvs["mlflow"][:2] == ["mlflow", "server"]
    for name, service in CONSUMERS.items():
        args = command(ridecast[name])
        assert args[:2] == ["stream", "consume"] and option(args, "--service") == service


def _months(all_services: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(taxi type, month) -> the synth job that writes that month file."""
    out = {}
    for name, service in all_services.items():
        args = command(service)
        if is_ridecast(service) and args[:2] == ["data", "synth"]:
            out[(option(args, "--taxi-type") or "green", option(args, "--month") or "")] = name
    return out


def test_every_model_and_month_a_service_uses_is_made_before_it_starts() -> None:
    """The api, consumers and batch job load models a train job registers, and read months a
    synth job writes; each waits for those jobs."""
    all_services = services()
    registered: dict[str, str] = {}
    for name, service in all_services.items():
        args = command(service)
        if is_ridecast(service) and args[:1] == ["train"]:
            registered[f"models:/{args[1]}@{option(args, '--alias')}"] = name
    months = _months(all_services)
    uses: dict[str, list[str]] = {
        "api": options(command(all_services["api"]), "--model"),
        "batch": options(command(all_services["batch"]), "--model"),
    }
    for name, stream_service in CONSUMERS.items():
        default = SERVICES[stream_service].default_model_uri
        uses[name] = [option(command(all_services[name]), "--model") or default]
    for name, uris in uses.items():
        assert uris, f"{name} names no model"
        for uri in uris:
            assert uri in registered, f"{name} loads {uri}, which no train job registers"
            assert registered[uri] in upstream(name, all_services), f"{name} must wait for it"
    for name, service in all_services.items():
        args = command(service)
        if not is_ridecast(service) or args[:1] not in (["train"], ["batch"], ["stream"]):
            continue
        taxi = option(args, "--taxi-type") or "green"
        for month in [option(args, f) for f in ("--train", "--valid", "--month")]:
            if month is not None:
                assert (taxi, month) in months, f"{name} reads {taxi} {month}: no job writes it"
                assert months[(taxi, month)] in upstream(name, all_services), name
    producer = command(all_services["producer"])
    assert "--progress" in producer, "the dynamic-duration consumer reads ride-progress events"


def _setting_names() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        choices = getattr(info.validation_alias, "choices", None)
        if choices:
            names |= {c for c in choices if isinstance(c, str) and c.isupper()}
        else:
            names.add(prefix + field.upper())
    return names


def _mlflow_names() -> set[str]:
    import mlflow.environment_variables as variables

    return {
        str(getattr(variables, attr).name)
        for attr in dir(variables)
        if attr.startswith("MLFLOW_") and hasattr(getattr(variables, attr), "name")
    }


def test_every_variable_set_on_a_ridecast_container_is_a_real_setting() -> None:
    known = _setting_names() | _mlflow_names()
    assert {"RIDECAST_STATE_URL", "RIDECAST_BROKER_URL", "MLFLOW_TRACKING_URI"} <= known
    for name, service in services().items():
        if is_ridecast(service):
            unknown = set(environment(service)) - known
            assert not unknown, f"{name} sets variables ridecast and MLflow never read: {unknown}"


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with ``env`` reads (and nothing from this machine)."""
    import os

    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("RIDECAST_", "MLFLOW_")) or key == "REDIS_URL":
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return Settings()


def _assert_store(url: str, all_services: dict[str, dict[str, Any]], what: str) -> None:
    """``url`` points at a store of the stack, on its port, with its credentials and an
    existing database."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    assert host in STORE_PORTS and host in all_services, f"{what}: {url} is not a stack service"
    assert (parsed.port or STORE_PORTS[host]) == STORE_PORTS[host], what
    if host == "postgres":
        assert parsed.scheme == "postgresql+psycopg", f"{what}: use the psycopg driver"
        postgres = environment(all_services["postgres"])
        assert (parsed.username, parsed.password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        ), what
        created = {postgres["POSTGRES_DB"]}
        for source in _init_scripts():
            text = (COMPOSE.parent / source).read_text(encoding="utf-8")
            created |= set(re.findall(r"CREATE DATABASE\s+(\w+)", text, re.I))
        assert parsed.path.lstrip("/") in created, f"{what}: database of {url} is never created"


def _init_scripts() -> list[str]:
    targets = mounts(services()["postgres"])
    return [src for dst, src in targets.items() if dst.startswith("/docker-entrypoint-initdb.d/")]


def test_each_mode_gets_the_settings_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    all_services = services()
    mlflow = all_services["mlflow"]
    tracking = f"http://mlflow:{option(command(mlflow), '--port')}"
    for name, service in all_services.items():
        args = command(service)
        if not is_ridecast(service) or name == "mlflow":
            continue
        settings = _settings(environment(service), monkeypatch)
        needs_registry = args[0] in ("serve", "train", "batch") or args[:2] == ["stream", "consume"]
        if needs_registry:
            assert settings.tracking_uri == tracking, f"{name}: MLFLOW_TRACKING_URI"
            assert "mlflow" in upstream(name, all_services), name
        if args[0] == "serve" or args[:2] == ["stream", "consume"] or args[0] == "batch":
            # They log predictions and follow rollouts: both in PostgreSQL, shared by all.
            _assert_store(settings.resolved_prediction_log_url, all_services, f"{name} log")
            _assert_store(settings.resolved_state_url, all_services, f"{name} state")
            assert "postgres" in upstream(name, all_services), name
        if args[0] == "stream":
            broker = option(args, "--broker") or settings.broker_url
            _assert_store(broker, all_services, f"{name} broker")
            assert "redis" in upstream(name, all_services), name
        if args[0] in ("train", "batch") or args[:2] in (["data", "synth"], ["stream", "produce"]):
            # Month files live in the jobs' shared volume.
            data_dir = str(settings.resolved_data_dir)
            volume = [dst for dst, src in mounts(service).items() if not src.startswith(".")]
            assert any(data_dir.startswith(dst) for dst in volume), f"{name}: {data_dir}"
    sink = option(command(all_services["batch"]), "--sink") or ""
    _assert_store(sink, all_services, "batch sink")
    api = _settings(environment(all_services["api"]), monkeypatch)
    assert api.resolved_admin_token, "the admin API is on, with a token"


def test_mlflow_keeps_its_store_in_postgres_and_its_artifacts_in_a_volume() -> None:
    all_services = services()
    mlflow = all_services["mlflow"]
    args = command(mlflow)
    assert mlflow.get("entrypoint") == ["mlflow"] and args[0] == "server"
    _assert_store(option(args, "--backend-store-uri") or "", all_services, "MLflow store")
    artifacts = option(args, "--artifacts-destination") or ""
    volumes = [d for d, s in mounts(mlflow).items() if s in compose()["volumes"]]
    assert any(artifacts.startswith(d) for d in volumes), f"{artifacts} is not on a volume"
    assert option(args, "--host") == "0.0.0.0"
    assert "postgres" in upstream("mlflow", all_services)
