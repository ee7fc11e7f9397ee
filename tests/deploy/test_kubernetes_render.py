"""``ridecast deploy render``, run as the real CLI: the user's image, models, namespace and
replicas land on every object they belong to, nothing else changes, every rendered object
validates against the Kubernetes schemas, the folder builds with kustomize, and bad values
end with exit 2 and a message naming the option."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ridecast.stream.services import SERVICES
from tests.deploy.test_kubernetes import (
    API,
    BASE,
    Doc,
    arg,
    by_kind_name,
    containers,
    kustomization,
    kustomize_build,
    objects_of,
    ridecast,
    validate,
)

IMAGE = "registry.example.com:5000/ml/ridecast:0.1.0"
MODEL = "models:/ride-duration/3"
TIP = "models:/ride-tip@production"
HPA = ("HorizontalPodAutoscaler", "ridecast-api")
SECRET = ("Secret", "ridecast-secrets")


def _render(out: Path, *extra: str) -> dict[tuple[str, str], Doc]:
    done = ridecast(
        "deploy", "render", "--image", IMAGE, "--model", MODEL, "--out", str(out), *extra
    )
    assert done.returncode == 0, done.stderr
    return by_kind_name(objects_of(out))


def _model_of(container: Doc) -> str:
    return arg(container["args"], "--model")


def _without_values(obj: Doc) -> Doc:
    """An object without the fields render sets, to compare the rest with the base."""
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("namespace", None)
    if obj["kind"] == "HorizontalPodAutoscaler":
        obj["spec"].pop("minReplicas")
        obj["spec"].pop("maxReplicas")
    for container in containers(obj):
        container.pop("image")
        args = container["args"]
        args[args.index("--model") + 1] = "MODEL"
    return obj


def test_render_writes_the_users_values_on_every_object(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    done = ridecast(
        "deploy", "render", "--image", IMAGE, "--model", MODEL, "--tip-model", TIP,
        "--namespace", "ml-prod", "--replicas", "4", "--max-replicas", "9", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = by_kind_name(objects_of(out))
    base = by_kind_name(objects_of(BASE))
    # Everything but the Secret, which the user creates apart; nothing else differs.
    assert set(rendered) == set(base) - {SECRET}
    for key, obj in rendered.items():
        validate(obj, f"rendered {key[1]}")
        assert obj["metadata"]["namespace"] == "ml-prod"
        assert _without_values(obj) == _without_values(base[key])
    images = {c["image"] for obj in rendered.values() for c in containers(obj)}
    assert images == {IMAGE}
    # --replicas is the autoscaler's minimum; the Deployment keeps no count of its own.
    assert "replicas" not in rendered[API]["spec"]
    assert (rendered[HPA]["spec"]["minReplicas"], rendered[HPA]["spec"]["maxReplicas"]) == (4, 9)
    (api,) = containers(rendered[API])
    assert _model_of(api) == MODEL
    (batch,) = containers(rendered[("CronJob", "ridecast-batch-score")])
    assert _model_of(batch) == MODEL
    expected = {"ride-duration": MODEL, "ride-tip": TIP, "ride-cost": "models:/ride-cost@champion"}
    consumers = 0
    for obj in rendered.values():
        for container in containers(obj):
            if container["args"][:2] == ["stream", "consume"]:
                service = SERVICES[arg(container["args"], "--service")]
                assert _model_of(container) == expected[service.model_name], service.name
                consumers += 1
    assert consumers == len(SERVICES)
    # It says how to make the Secret it left out, with every key the pods read, and how to apply.
    secret = base[SECRET]
    assert f"-n ml-prod create secret generic {secret['metadata']['name']}" in done.stdout
    for key_name in secret["stringData"]:
        assert f"--from-literal={key_name}=" in done.stdout
    assert f"kubectl apply -k {out}" in done.stdout


def test_render_without_options_keeps_the_base_namespace_and_replicas(tmp_path: Path) -> None:
    rendered = _render(tmp_path / "k8s")
    base = by_kind_name(objects_of(BASE))
    assert all("namespace" not in obj["metadata"] for obj in rendered.values())
    assert "replicas" not in rendered[API]["spec"]
    assert rendered[HPA]["spec"] == base[HPA]["spec"]
    listed = kustomization(tmp_path / "k8s")["resources"]
    on_disk = sorted(p.name for p in (tmp_path / "k8s").iterdir())
    assert sorted([*listed, "kustomization.yaml"]) == on_disk
    assert "secret.yaml" not in on_disk


def test_rendered_folder_builds_with_kustomize(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    rendered = _render(out, "--namespace", "ridecast")
    built = by_kind_name(kustomize_build(out))
    assert built == rendered


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--image", "Ridecast:latest"], "--image"),
        (["--image", "ridecast:"], "--image"),
        (["--image", "ridecast latest"], "--image"),
        (["--model", "models:/ride-duration@"], "--model"),
        (["--model", "runs:/abc/model"], "--model"),
        (["--tip-model", "models:/ride tip"], "--tip-model"),
        (["--cost-model", "models:/ride-cost/v2"], "--cost-model"),
        (["--replicas", "0"], "--replicas"),
        (["--replicas", "-3"], "--replicas"),
        (["--max-replicas", "0"], "--max-replicas"),
        (["--replicas", "7"], "--max-replicas"),  # more than the autoscaler's maximum of 6
        (["--replicas", "5", "--max-replicas", "4"], "--replicas"),
        (["--max-replicas", "1"], "--max-replicas"),  # under the base's minimum of 2
        (["--namespace", "ML_prod"], "--namespace"),
        (["--namespace", "-ridecast"], "--namespace"),
        (["--namespace", "r" * 64], "--namespace"),
    ],
)
def test_render_refuses_a_bad_value_naming_its_option(
    tmp_path: Path, args: list[str], option: str
) -> None:
    out = tmp_path / "k8s"
    values = {"--image": "ridecast:0.1.0", "--model": MODEL, "--out": str(out)}
    for name, value in zip(args[::2], args[1::2], strict=True):
        values[name] = value
    done = ridecast("deploy", "render", *(part for pair in values.items() for part in pair))
    assert done.returncode == 2, done.stdout + done.stderr
    assert option in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists(), "nothing is written when a value is refused"


def test_render_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    flags = ["deploy", "render", "--image", "ridecast:0.1.0", "--model", MODEL, "--out", str(out)]
    refused = ridecast(*flags)
    assert refused.returncode == 2 and "--out" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    forced = ridecast(*flags, "--force", "--replicas", "3")
    assert forced.returncode == 0, forced.stderr
    assert by_kind_name(objects_of(out))[HPA]["spec"]["minReplicas"] == 3
    assert (out / "mine.txt").read_text() == "keep me"
    file = tmp_path / "a-file"
    file.write_text("")
    refused = ridecast(*flags[:-1], str(file))
    assert refused.returncode == 2 and "--out" in refused.stderr


def test_render_help_explains_each_option_with_an_example() -> None:
    shown = ridecast("deploy", "render", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for option in ("--image", "--model", "--namespace", "--replicas", "--max-replicas", "--out"):
        assert option in text
    assert text.count("e.g.") >= 7
    assert "ridecast deploy render --image" in text
