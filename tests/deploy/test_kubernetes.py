"""The Kubernetes manifests under deploy/k8s, checked offline: every object validates against the
Kubernetes schemas, the overlays point at real objects (and build with kubectl's kustomize), and
the API's probes hit real routes of the web app, its grace period covers the real drain and
flush, and its autoscaler and disruption budget select it."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ridecast.settings import Settings
from ridecast.web.cli import DEFAULT_PORT
from tests.conftest import require_tool

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = K8S / "overlays"
SCHEMA_VERSION = kubernetes_validate.latest_version()  # the newest schemas the package bundles
API = ("Deployment", "ridecast-api")
CRONJOB = ("CronJob", "ridecast-batch-score")

Doc = dict[str, Any]


# --- helpers (also used by test_kubernetes_workloads.py and test_kubernetes_render.py) ---


def docs_of(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomization(folder: Path) -> Doc:
    doc: Doc = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert doc["kind"] == "Kustomization", folder
    return doc


def objects_of(folder: Path) -> list[Doc]:
    """Every object of a kustomization's resource files, in the order it lists them."""
    names = kustomization(folder)["resources"]
    return [obj for name in names for obj in docs_of((folder / name).read_text())]


def by_kind_name(objects: list[Doc]) -> dict[tuple[str, str], Doc]:
    index = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(index) == len(objects), "two objects share a kind and a name"
    return index


def validate(obj: Doc, where: str) -> None:
    """Strict validation against the bundled Kubernetes schemas: no unknown field passes."""
    try:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # a jsonschema error: path, message
        problem = f"/{'/'.join(str(p) for p in exc.absolute_path)}: {exc.message}"
    else:
        return
    pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']} at {problem}")


def template(obj: Doc) -> Doc | None:
    """The pod template of a workload (Deployment, CronJob), else None."""
    if obj["kind"] == "Deployment":
        pod: Doc = obj["spec"]["template"]
        return pod
    if obj["kind"] == "CronJob":
        job: Doc = obj["spec"]["jobTemplate"]["spec"]["template"]
        return job
    return None


def containers(obj: Doc) -> list[Doc]:
    pod = template(obj)
    return (
        [] if pod is None else [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
    )


def arg(args: list[str], option: str) -> str:
    assert option in args, f"{option} missing from {args}"
    return args[args.index(option) + 1]


def ridecast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as the image's ENTRYPOINT runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def kustomize_build(folder: Path) -> list[Doc]:
    """``kubectl kustomize``: skipped on a laptop without kubectl, required in CI (the CI
    machines have it; .ci/run says so when one does not). The schema checks of every base and
    rendered object need no kubectl and run everywhere."""
    found = require_tool("kubectl", "the overlays' kustomize builds are not checked")
    built = subprocess.run(
        [found, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    return docs_of(built.stdout)


def selects(selector: dict[str, str], obj: Doc) -> bool:
    pod = template(obj)
    return pod is not None and selector.items() <= pod["metadata"]["labels"].items()


_UNITS = {"": 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|)", str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match[1]) * _UNITS[match[2]]


# --- the base and the overlays ---


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Doc]:
    return by_kind_name(objects_of(BASE))


def test_every_base_object_validates_against_the_kubernetes_schemas() -> None:
    listed = kustomization(BASE)["resources"]
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "every base file is listed in its kustomization, once"
    objects = objects_of(BASE)
    assert {o["kind"] for o in objects} >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob",
        "ConfigMap", "Secret",
    }  # fmt: skip
    for obj in objects:
        validate(obj, "base")
    by_kind_name(objects)


def test_overlays_point_at_real_files_and_objects(base: dict[tuple[str, str], Doc]) -> None:
    overlays = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())
    assert {p.name for p in overlays} >= {"dev", "production"}
    images = {c["image"].split(":")[0] for obj in base.values() for c in containers(obj)}
    deployments = {name for kind, name in base if kind == "Deployment"}
    for overlay in overlays:
        spec = kustomization(overlay)
        for resource in spec["resources"]:
            assert (overlay / resource / "kustomization.yaml").is_file() or (
                overlay / resource
            ).is_file(), f"{overlay.name}: resource {resource} does not exist"
        if "namespace" in spec:
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec["namespace"])
        for image in spec.get("images", []):
            assert image["name"] in images, f"{overlay.name}: no container runs {image['name']}"
        for replicas in spec.get("replicas", []):
            assert replicas["name"] in deployments, f"{overlay.name}: {replicas['name']}"
            assert replicas["name"] != API[1], "the API's count is its autoscaler's"
            assert replicas["count"] >= 1
        for patch in spec.get("patches", []):
            path = overlay / patch["path"]
            assert path.is_file(), f"{overlay.name}: patch {patch['path']} does not exist"
            for doc in docs_of(path.read_text()):
                target = (doc["kind"], doc["metadata"]["name"])
                assert target in base, f"{overlay.name}: {path.name} patches {target}, not in base"
                assert doc["apiVersion"] == base[target]["apiVersion"], path.name


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_each_overlay_builds_with_kustomize_into_valid_objects(
    overlay: str, base: dict[tuple[str, str], Doc]
) -> None:
    built = by_kind_name(kustomize_build(OVERLAYS / overlay))
    spec = kustomization(OVERLAYS / overlay)
    for obj in built.values():
        validate(obj, f"overlays/{overlay}")
        assert obj["metadata"]["namespace"] == spec["namespace"]
    (tag,) = {i["newTag"] for i in spec["images"]}
    assert {c["image"] for o in built.values() for c in containers(o)} == {f"ridecast:{tag}"}
    for replicas in spec.get("replicas", []):
        assert built[("Deployment", replicas["name"])]["spec"]["replicas"] == replicas["count"]
    hpa = built[("HorizontalPodAutoscaler", "ridecast-api")]["spec"]
    # The autoscaler alone sets the API's pod count: an apply never resets what it scaled to.
    assert "replicas" not in built[API]["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # Production never applies the placeholder Secret over the real one; dev brings it along.
    secret = ("Secret", "ridecast-secrets")
    assert (secret in built) == (overlay == "dev")
    assert set(built) | {secret} == set(base)


# --- the API ---


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The web app's real routes (the app is built, not started: no model is loaded)."""
    from ridecast.web.app import create_app

    home = tmp_path_factory.mktemp("k8s-routes")
    app = create_app(Settings(home=home, tracking_uri=None, prediction_log_url=None))
    return {str(getattr(route, "path", "")) for route in app.api.routes}


def test_api_labels_ports_probes_and_rolling_update(
    base: dict[tuple[str, str], Doc], routes: set[str]
) -> None:
    deployment = base[API]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selects(selector, deployment)
    service = base[("Service", "ridecast-api")]["spec"]
    # The Service sends to the API pods and to nothing else.
    assert [n for (k, n), o in base.items() if selects(service["selector"], o)] == ["ridecast-api"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULT_PORT}
    assert int(arg(container["args"], "--port")) == DEFAULT_PORT
    assert arg(container["args"], "--host") == "0.0.0.0"
    assert service["ports"][0]["targetPort"] in ports
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == DEFAULT_PORT
    assert pod["metadata"]["annotations"]["prometheus.io/path"] in routes
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/health/ready", "/health/live")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] in routes, f"{probe} asks {check['path']}, not a route of the app"
        assert check["port"] in ports or check["port"] == DEFAULT_PORT
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert 0 < quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_api_autoscaler_and_disruption_budget_select_the_api(
    base: dict[tuple[str, str], Doc],
) -> None:
    hpa = base[("HorizontalPodAutoscaler", "ridecast-api")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == API
    assert target["apiVersion"] == base[API]["apiVersion"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 1 <= low < high
    # The autoscaler owns the count: a replicas field would reset the pods on every apply.
    assert "replicas" not in base[API]["spec"]
    pdb = base[("PodDisruptionBudget", "ridecast-api")]
    assert pdb["apiVersion"] == "policy/v1"
    chosen = [n for (k, n), o in base.items() if selects(pdb["spec"]["selector"]["matchLabels"], o)]
    assert chosen == ["ridecast-api"]
    # A budget that a single replica could not meet would block every node drain.
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or pdb["spec"]["minAvailable"] < low


def _drain_timeout() -> float:
    """uvicorn's graceful-shutdown timeout as `ridecast serve` sets it (src/ridecast/web/cli.py)."""
    import uvicorn

    import ridecast.web.cli as web_cli

    assert "timeout_graceful_shutdown" in inspect.signature(uvicorn.Config).parameters
    tree = ast.parse(Path(web_cli.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "timeout_graceful_shutdown":
                    if isinstance(value, ast.Name):
                        return float(getattr(web_cli, value.id))
                    return float(ast.literal_eval(value))
    raise AssertionError("ridecast serve sets no timeout_graceful_shutdown")


def test_grace_period_outlasts_prestop_drain_and_prediction_log_flush(
    base: dict[tuple[str, str], Doc],
) -> None:
    from ridecast.monitoring.prediction_log import PredictionLog

    pod = base[API]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    pause = float(sleep[1])
    config = base[("ConfigMap", "ridecast-config")]["data"]
    delay = float(
        config.get(
            "RIDECAST_SERVE_SHUTDOWN_DELAY", Settings.model_fields["serve_shutdown_delay"].default
        )
    )
    drain = _drain_timeout()
    flush = inspect.signature(PredictionLog.close).parameters["timeout"].default
    grace = pod["terminationGracePeriodSeconds"]
    assert (pause, drain, flush) == (5, 30, 10)  # today's figures, so a change is noticed here
    assert 0 < pause < grace
    assert grace > pause + delay + drain + flush, (grace, pause, delay, drain, flush)
