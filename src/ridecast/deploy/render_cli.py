"""``ridecast deploy render``: the Kubernetes manifests under deploy/k8s/base with the user's
image, models, namespace and API replicas, ready for ``kubectl apply -k``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def render(
    image: Annotated[
        str,
        typer.Option(
            "--image",
            help="The ridecast image every container runs, e.g. ridecast:0.1.0 or "
            "registry.example.com/ml/ridecast:0.1.0.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The duration model the API, the duration and dynamic-duration consumers and "
            "the monthly batch job run, e.g. models:/ride-duration@champion or "
            "models:/ride-duration/3.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder to write the manifests and a kustomization.yaml to, e.g. k8s/. It must "
            "be empty or new, unless --force.",
            show_default=False,
        ),
    ],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            help="Namespace set on every object, e.g. ridecast (default: none, so kubectl's "
            "current namespace).",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            help="The API autoscaler's minimum: the pods it starts with and never goes below; "
            "at least 1, e.g. 3 (default 2).",
            show_default=False,
        ),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            "--max-replicas",
            help="Most API pods the autoscaler runs: at least --replicas, e.g. 12 (default 6).",
            show_default=False,
        ),
    ] = None,
    tip_model: Annotated[
        str,
        typer.Option("--tip-model", help="The tip consumer's model, e.g. models:/ride-tip/2."),
    ] = "models:/ride-tip@champion",
    cost_model: Annotated[
        str,
        typer.Option("--cost-model", help="The cost consumer's model, e.g. models:/ride-cost/2."),
    ] = "models:/ride-cost@champion",
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite the manifests in a folder that is not empty."),
    ] = False,
) -> None:
    """Write the Kubernetes manifests with your image, models and replicas.

    From deploy/k8s/base: the API (Deployment, Service, autoscaler, disruption
    budget), one Deployment per stream consumer, the monthly batch CronJob and
    the ConfigMap. The Secret is left out: create it yourself, so that no apply
    overwrites it.

    Example:
    ridecast deploy render --image registry.example.com/ml/ridecast:0.1.0
    --model models:/ride-duration@champion --namespace ridecast --replicas 3
    --out k8s/
    then run the kubectl commands it prints (namespace, Secret, apply -k k8s/).
    """
    from ridecast.deploy import manifests as m

    values = m.Values(
        image=m.check_image(image),
        model=m.check_model("--model", model),
        tip_model=m.check_model("--tip-model", tip_model),
        cost_model=m.check_model("--cost-model", cost_model),
        namespace=m.check_namespace(namespace) if namespace is not None else None,
        replicas=m.check_replicas("--replicas", replicas) if replicas is not None else None,
        max_replicas=(
            m.check_replicas("--max-replicas", max_replicas) if max_replicas is not None else None
        ),
    )
    files = m.load_base(m.base_dir())
    written = m.write(m.apply_values(files, values), out, values, force)
    ns = f" -n {values.namespace}" if values.namespace else ""
    secret = m.placeholder_secret(files)
    name = secret["metadata"]["name"]
    literals = " ".join(f"--from-literal={key}=..." for key in secret["stringData"])
    typer.echo(f"wrote {len(written)} files to {out}: {', '.join(p.name for p in written)}")
    typer.echo("next:")
    if values.namespace:
        typer.echo(f"  kubectl create namespace {values.namespace}   # if it is new")
    typer.echo(f"  kubectl{ns} create secret generic {name} {literals}")
    typer.echo(f"  kubectl apply -k {out}")
