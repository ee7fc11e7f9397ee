"""The Kubernetes manifests of deploy/k8s/base, loaded and set to a user's image, models,
namespace and replicas, then written as one file per base file plus a kustomization.yaml.

The base YAML stays the single source: this module only sets fields on the loaded objects, so
what ``ridecast deploy render`` writes is what ``kubectl apply -k deploy/k8s/base`` would apply,
with the user's values. Every check of a value names the option it came from.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ridecast.errors import RidecastError
from ridecast.modelref import ModelRef, parse_model_uri

Doc = dict[str, Any]

API_DEPLOYMENT = "ridecast-api"
SECRET_FILE = "secret.yaml"  # left out of a render: the user's Secret is made apart
TIP_MODEL = "models:/ride-tip@champion"
COST_MODEL = "models:/ride-cost@champion"

# An image reference: [HOST[:PORT]/]PATH[:TAG][@DIGEST], PATH in lower case.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:{_HOST}(?::\d+)?/)?{_PART}(?:/{_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-f]{32,})?$"
)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label


@dataclass(frozen=True)
class Values:
    """What a user sets: the duration model serves the API, the duration and dynamic-duration
    consumers and the batch job; the tip and cost consumers have their own models."""

    image: str
    model: ModelRef
    tip_model: ModelRef
    cost_model: ModelRef
    namespace: str | None = None
    replicas: int | None = None
    max_replicas: int | None = None


def check_image(image: str) -> str:
    text = image.strip()
    if not _IMAGE.match(text):
        raise RidecastError(
            f"--image {image!r} is not an image reference; expected NAME, NAME:TAG or "
            "NAME@DIGEST with a lower-case name, e.g. ridecast:0.1.0 or "
            "registry.example.com/ml/ridecast:0.1.0"
        )
    return text


def check_model(option: str, uri: str) -> ModelRef:
    try:
        return parse_model_uri(uri)
    except RidecastError as exc:
        raise RidecastError(f"{option}: {exc}") from None


def check_namespace(namespace: str) -> str:
    if len(namespace) > 63 or not _LABEL.match(namespace):
        raise RidecastError(
            f"--namespace {namespace!r} is not a Kubernetes namespace name; expected at most 63 "
            "lower-case letters, digits and '-', starting and ending with a letter or digit "
            "(e.g. ridecast)"
        )
    return namespace


def check_replicas(option: str, count: int) -> int:
    if count < 1:
        raise RidecastError(f"{option} must be at least 1, got {count}")
    return count


def base_dir() -> Path:
    """The base manifests: shipped inside the package when built into a wheel (at
    ridecast/deploy/k8s), else the checkout's deploy/k8s/base."""
    shipped = Path(str(resources.files("ridecast.deploy") / "k8s"))
    if (shipped / "kustomization.yaml").is_file():
        return shipped
    checkout = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "base"
    if (checkout / "kustomization.yaml").is_file():
        return checkout
    raise RidecastError(
        f"the Kubernetes base manifests are not found (looked in {shipped} and {checkout}); "
        "reinstall ridecast, or render from a checkout of the project"
    )


def load_base(base: Path) -> dict[str, list[Doc]]:
    """Each file the base kustomization lists, in its order, with its objects."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    files: dict[str, list[Doc]] = {}
    for name in kustomization["resources"]:
        text = (base / name).read_text(encoding="utf-8")
        files[name] = [doc for doc in yaml.safe_load_all(text) if doc]
    return files


def pod_spec(doc: Doc) -> Doc | None:
    """The pod template's spec of a workload (Deployment, CronJob), else None."""
    if doc["kind"] == "Deployment":
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    if doc["kind"] == "CronJob":
        job: Doc = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return job
    return None


def _containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def _model_for(args: list[str], values: Values) -> ModelRef:
    """The model a container's ridecast command runs: by the stream service's model, else the
    duration model (serve, batch score)."""
    if args[:2] != ["stream", "consume"] or "--service" not in args:
        return values.model
    from ridecast.stream.services import get_service

    service = get_service(args[args.index("--service") + 1])
    by_name = {"ride-tip": values.tip_model, "ride-cost": values.cost_model}
    return by_name.get(service.model_name, values.model)


def _runs_a_model(args: list[str]) -> bool:
    """A ridecast command that takes --model: serve, stream consume, batch score/backfill."""
    return args[:1] == ["serve"] or args[:2] in (
        ["stream", "consume"],
        ["batch", "score"],
        ["batch", "backfill"],
    )


def _set_model(container: Doc, model: ModelRef) -> None:
    args = [str(a) for a in container.get("args", [])]
    if "--model" in args:
        args[args.index("--model") + 1] = model.uri
    else:
        args += ["--model", model.uri]
    container["args"] = args


def apply_values(files: dict[str, list[Doc]], values: Values) -> dict[str, list[Doc]]:
    """The base objects with the user's values set (the input is left as it was)."""
    out = copy.deepcopy(files)
    docs = [doc for objects in out.values() for doc in objects]
    # The API Deployment has no replica count: its autoscaler owns it, and --replicas is the
    # autoscaler's minimum (the pods it starts with and never goes below).
    hpas = [
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
        and d["spec"]["scaleTargetRef"]["name"] == API_DEPLOYMENT
    ]
    for hpa in hpas:
        top = values.max_replicas or hpa["spec"]["maxReplicas"]
        low = values.replicas or hpa["spec"].get("minReplicas", 1)
        if low > top and values.replicas is not None:
            raise RidecastError(
                f"--replicas {low} is more than the autoscaler's maximum of {top} API pods; "
                f"pass --max-replicas {low} or more, or fewer --replicas"
            )
        if low > top:
            raise RidecastError(
                f"--max-replicas {top} is less than the autoscaler's minimum of {low} API pods; "
                f"pass --replicas {top} or fewer, or more --max-replicas"
            )
        hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"] = low, top
    for doc in docs:
        if values.namespace is not None:
            doc["metadata"]["namespace"] = values.namespace
        for container in _containers(doc):
            container["image"] = values.image
            command = [str(a) for a in container.get("args", [])]
            if doc["kind"] == "CronJob" or _runs_a_model(command):
                _set_model(container, _model_for(command, values))
    return out


def write(files: dict[str, list[Doc]], out: Path, values: Values, force: bool) -> list[Path]:
    """One YAML file per base file (the Secret's left out) and a kustomization.yaml over them."""
    if out.exists() and not out.is_dir():
        raise RidecastError(f"--out {out} is a file; give a folder for the manifests")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RidecastError(
            f"--out {out} is not empty; pass --force to overwrite the manifests in it, or "
            "choose an empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `ridecast deploy render` from deploy/k8s/base/{name}: image {image}, "
        "model {model}{namespace}.\n"
    )
    written: list[Path] = []
    for name, docs in files.items():
        if name == SECRET_FILE:
            continue
        path = out / name
        text = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=100)
        ns = f", namespace {values.namespace}" if values.namespace else ""
        path.write_text(
            header.format(name=name, image=values.image, model=values.model.uri, namespace=ns)
            + text,
            encoding="utf-8",
        )
        written.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [p.name for p in written],
    }
    path = out / "kustomization.yaml"
    path.write_text(
        "# Apply with: kubectl apply -k " + str(out) + "\n" + yaml.safe_dump(kustomization),
        encoding="utf-8",
    )
    return [*written, path]


def placeholder_secret(files: dict[str, list[Doc]]) -> Doc:
    """The base's Secret (placeholder values): its name and keys are what the user creates."""
    (secret,) = [doc for doc in files[SECRET_FILE] if doc["kind"] == "Secret"]
    return secret
