"""The workloads beside the API, checked offline against the real code: one consumer
Deployment per real stream service, configuration that names real settings and a Secret every
reference points into, and every container running a real ridecast command; the CronJob's,
run by a real shell, scores the previous month."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ridecast.data.schema import Month
from ridecast.modelref import parse_model_uri
from ridecast.settings import Settings
from ridecast.stream.services import SERVICES
from tests.deploy.test_kubernetes import (
    BASE,
    CRONJOB,
    Doc,
    arg,
    by_kind_name,
    containers,
    objects_of,
    ridecast,
    selects,
)


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Doc]:
    return by_kind_name(objects_of(BASE))


def _consumers(base: dict[tuple[str, str], Doc]) -> dict[str, Doc]:
    found: dict[str, Doc] = {}
    for obj in base.values():
        for container in containers(obj):
            if container.get("args", [])[:2] == ["stream", "consume"]:
                found[arg(container["args"], "--service")] = obj
    return found


def test_one_consumer_deployment_per_stream_service(base: dict[tuple[str, str], Doc]) -> None:
    consumers = _consumers(base)
    assert sorted(consumers) == sorted(SERVICES)
    from ridecast.monitoring.prediction_log import PredictionLog

    flush = inspect.signature(PredictionLog.close).parameters["timeout"].default
    for service, deployment in consumers.items():
        assert deployment["kind"] == "Deployment"
        assert selects(deployment["spec"]["selector"]["matchLabels"], deployment)
        others = [o for o in consumers.values() if o is not deployment]
        assert not any(selects(deployment["spec"]["selector"]["matchLabels"], o) for o in others)
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        args = container["args"]
        assert parse_model_uri(arg(args, "--model")).name == SERVICES[service].model_name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": int(arg(args, "--metrics-port"))}
        assert arg(args, "--metrics-host") == "0.0.0.0"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == arg(args, "--metrics-port")
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        assert pod["spec"]["terminationGracePeriodSeconds"] > flush
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_configuration_holds_real_settings_and_every_secret_reference_exists(
    base: dict[tuple[str, str], Doc],
) -> None:
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        names.add(f"RIDECAST_{field.upper()}")
        names.update(a.upper() for a in getattr(info.validation_alias, "choices", []))
    config = base[("ConfigMap", "ridecast-config")]["data"]
    assert set(config) <= names, set(config) - names
    secret = base[("Secret", "ridecast-secrets")]["stringData"]
    assert all("REPLACE-ME" in value for value in secret.values()), "placeholders only"
    used: set[str] = set()
    for obj in base.values():
        for container in containers(obj):
            assert {"configMapRef": {"name": "ridecast-config"}} in container["envFrom"]
            for entry in container.get("env", []):
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "ridecast-secrets" and ref["key"] in secret, ref
                used.add(ref["key"])
                if entry["name"].startswith("RIDECAST_"):
                    assert entry["name"] in names, entry["name"]
    assert used == set(secret), "every key of the Secret is used by some container"


def test_cronjob_runs_monthly_on_the_courses_schedule(base: dict[tuple[str, str], Doc]) -> None:
    cron = base[CRONJOB]["spec"]
    assert cron["schedule"] == "0 3 2 * *"
    assert cron["timeZone"] == "Etc/UTC"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_every_long_running_container_runs_a_real_ridecast_command(
    base: dict[tuple[str, str], Doc],
) -> None:
    running = [c for o in base.values() if o["kind"] == "Deployment" for c in containers(o)]
    assert len(running) == 1 + len(SERVICES)
    for container in running:
        assert "command" not in container  # the image's ENTRYPOINT, `ridecast`, runs the args
        args = container["args"]
        shown = ridecast(*args, "--help")
        assert shown.returncode == 0, f"ridecast {' '.join(args)}: {shown.stderr}"


def test_the_cronjobs_command_scores_the_previous_month(
    base: dict[tuple[str, str], Doc], trained: Any, tmp_path: Path
) -> None:
    """The CronJob's own command and args, run by a real shell with the real ridecast: it
    scores the month before today into the sink, from the month's file in the source."""
    from ridecast.data.synth import synthesize_month, write_month

    (container,) = containers(base[CRONJOB])
    args = container["args"]
    assert (
        container["command"][:2] == ["sh", "-c"]
        and "ridecast batch score" in container["command"][2]
    )
    taxi = arg(args, "--taxi-type")
    now = datetime.now(UTC)
    months = {Month(now.year, now.month).prev()}
    for month in months:
        write_month(synthesize_month(taxi, month, 2_000, seed=5), tmp_path / "trips", taxi, month)
    launcher = tmp_path / "bin" / "ridecast"  # `ridecast` on PATH, as in the image
    launcher.parent.mkdir()
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ridecast "$@"\n')
    launcher.chmod(0o755)
    env = trained.env()
    env["PATH"] = f"{launcher.parent}{os.pathsep}{env['PATH']}"
    secret = {  # the test's values for what the pod gets from the Secret
        "BATCH_SOURCE_URL": str(tmp_path / "trips"),
        "BATCH_SINK_URL": str(tmp_path / "scores"),
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "RIDECAST_STATE_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
    }
    assert {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]} == set(secret)
    env.update(secret)
    # Kubernetes expands $(NAME) in command and args from the container's env.
    command = [
        re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], part)
        for part in [*container["command"], *args]
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    months.add(Month(datetime.now(UTC).year, datetime.now(UTC).month).prev())  # past midnight
    assert done.returncode == 0, done.stderr + done.stdout
    written = sorted(
        str(p.relative_to(tmp_path / "scores"))
        for p in (tmp_path / "scores").glob("taxi_type=*/year=*/month=*")
    )
    expected = {f"taxi_type={taxi}/year={m.year:04d}/month={m.month:02d}" for m in months}
    assert len(written) == 1 and written[0] in expected, (written, done.stdout)
