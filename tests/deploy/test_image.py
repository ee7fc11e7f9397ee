"""The container image's recipe, checked without a Docker engine: hadolint passes with no rule
ignored silently; the stages install the runtime lock only, run as a non-root user, check the
web service's readiness and run every mode in exec form; the optional bake stage is wired; the
.dockerignore lets in what the build copies and keeps the dev files out. The file system the
recipe builds is run in tests/deploy/test_image_runtime.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
from typer.testing import CliRunner

from ridecast.modelref import parse_model_uri
from ridecast.web.cli import DEFAULT_PORT

from .image_fs import (
    DOCKERFILE,
    ROOT,
    Dockerfile,
    DockerIgnore,
    Stage,
    copy_sources,
    dockerfile,
    dockerignore,
    expand,
    pip_install,
    require,
    venv_made,
)

HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.fixture(scope="module")
def df() -> Dockerfile:
    return dockerfile()


def _final(df: Dockerfile, bake: str = "") -> list[Stage]:
    """The stages the image is built from (base first) for a BAKE_MODELS value."""
    defaults = _global_args(df)
    assert "BAKE_MODELS" in defaults, "the bake build arg must be declared before the first FROM"
    base = expand(df.stages[-1].base, {**defaults, "BAKE_MODELS": bake})
    return [*df.chain(df.stage(base)), df.stages[-1]]


def _global_args(df: Dockerfile) -> dict[str, str]:
    args = {}
    for step in df.global_args:
        assert step.keyword == "ARG", step
        name, _, default = step.words()[0].partition("=")
        args[name] = default
    return args


def _commands(stage: Stage) -> list[list[str]]:
    """Each shell command of the stage's RUN lines, as words."""
    return [shlex.split(c) for run in stage.all("RUN") for c in run.args.split("&&")]


def _hadolint(*flags: str, cwd: Path) -> list[dict[str, object]]:
    require(HADOLINT.is_file(), f"hadolint is not installed at {HADOLINT} (make test installs it)")
    # Away from any .hadolint.yaml (cwd, HOME, XDG): no configuration may ignore a rule.
    env = {"HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "-t", "style", "-f", "json", *flags, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert done.returncode == (1 if findings else 0), done.stderr
    return list(findings)


def test_hadolint_passes_and_each_ignored_rule_says_why(tmp_path: Path) -> None:
    assert _hadolint(cwd=tmp_path) == []
    lines = DOCKERFILE.read_text().splitlines()
    pragmas = {
        n + 1: set(m.group(1).split(","))
        for n, line in enumerate(lines)
        if (m := re.match(r"#\s*hadolint ignore=([\w,]+)", line.strip()))
    }
    # Without the pragmas, each finding sits on the instruction right after a pragma for it,
    # and each pragma is still needed.
    found = _hadolint("--disable-ignore-pragma", cwd=tmp_path)
    by_line = {(int(f["line"]), str(f["code"])) for f in found}  # type: ignore[call-overload]
    assert by_line == {(n + 1, c) for n, codes in pragmas.items() for c in codes}
    for n, codes in pragmas.items():
        above = n - 1  # the comment block right above the pragma says why
        while above > 1 and lines[above - 2].strip().startswith("#"):
            above -= 1
        why = " ".join(lines[above - 1 : n - 1])
        assert why and all(c in why for c in codes), f"line {n}: say above it why {codes}"


def test_builder_installs_the_runtime_lock_then_the_project_without_deps(df: Dockerfile) -> None:
    assert len(df.stages) >= 2, "multi-stage: a builder, then a slim runtime"
    builder = df.stage("builder")
    (venv,) = [v for c in _commands(builder) if (v := venv_made(c)) is not None]
    targets = [p for c in _commands(builder) if (p := pip_install(c)) is not None]
    assert {t for t, _ in targets} == {f"{venv}/bin/python"}, "pip installs into the venv"
    installs = [args for _, args in targets]
    requirements = [
        words[i + 1]
        for words in installs
        for i, w in enumerate(words[:-1])
        if w in ("-r", "--requirement")
    ]
    assert requirements == ["requirements.lock"]
    project = [w for w in installs if "." in w]
    assert len(project) == 1 and "--no-deps" in project[0], installs
    assert not {"-e", "--editable"} & set(project[0]), "the image installs the project, not a link"
    sources = {s for stage in df.stages for s, _ in copy_sources(stage, {"BAKE_MODELS": "x"})}
    assert "requirements.lock" in sources
    for stage in df.stages:
        for step in stage.steps:
            assert "requirements-dev" not in step.args, f"line {step.line}: the dev lock"


def test_builder_copies_everything_the_wheel_is_built_from(df: Dockerfile) -> None:
    """pyproject's wheel packages and force-included folders must be in the builder stage."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    wheel = wheel["targets"]["wheel"]
    needed = [*wheel.get("packages", []), *wheel.get("force-include", {}), "pyproject.toml"]
    needed.append(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"])
    copied = [source for source, _ in copy_sources(df.stage("builder"), {})]
    missing = [n for n in needed if not any(n == c or n.startswith(f"{c}/") for c in copied)]
    assert not missing, (
        f"the builder stage must COPY {missing} (pyproject builds the wheel from it)"
    )


def test_runtime_is_slim_holds_only_the_venv_and_runs_as_a_non_root_user(df: Dockerfile) -> None:
    builder, runtime = df.stage("builder"), df.stage("runtime")
    assert runtime.base == builder.base and runtime.base.endswith("-slim"), runtime.base
    (venv,) = [v for c in _commands(builder) if (v := venv_made(c)) is not None]
    copies = [s.words() for s in runtime.all("COPY")]
    assert copies == [[f"--from={builder.name}", venv, venv]], "the runtime copies only the venv"
    assert not any("pip" in c for c in _commands(runtime)), "nothing is installed in the runtime"
    env = runtime.env()
    assert env["PATH"].startswith(f"{venv}/bin:")
    home = env["RIDECAST_HOME"]
    (user,) = runtime.all("USER")
    assert user.args.split(":")[0] == "10001"
    setup = " ".join(" ".join(c) for c in _commands(runtime))
    assert re.search(r"useradd .*--uid 10001", setup)
    assert f"chown 10001:10001 {home}" in setup, "RIDECAST_HOME must be the user's to write"
    assert runtime.all("WORKDIR")[-1].args == home
    for bake in ("", "baked-models"):
        users = [s.args for stage in _final(df, bake) for s in stage.all("USER")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), users


def test_healthcheck_asks_a_real_readiness_route_in_exec_form(
    df: Dockerfile, tmp_path: Path
) -> None:
    from ridecast.settings import Settings
    from ridecast.web.app import create_app

    runtime = df.stage("runtime")
    (check,) = runtime.all("HEALTHCHECK")
    options = dict(w.split("=", 1) for w in check.args.split(" CMD ", 1)[0].split())
    assert {"--interval", "--timeout", "--start-period"} <= options.keys()
    command = check.exec_form()
    assert command[0] == "python", "the venv's python, on PATH"
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(command))
    parsed = urlparse(url)
    assert parsed.hostname == "127.0.0.1" and parsed.port == DEFAULT_PORT
    assert parsed.path == "/health/ready"
    settings = Settings(home=tmp_path, tracking_uri=None, prediction_log_url=None)
    routes = {getattr(r, "path", "") for r in create_app(settings).api.routes}
    assert parsed.path in routes
    assert [e.args for e in runtime.all("EXPOSE")] == [str(DEFAULT_PORT)]


def test_one_image_runs_every_mode_in_exec_form(df: Dockerfile) -> None:
    from ridecast.cli import app

    runtime = df.stage("runtime")
    assert runtime.all("ENTRYPOINT")[-1].exec_form() == ["ridecast"]
    cmd = runtime.all("CMD")[-1].exec_form()
    assert cmd[0] == "serve"
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert flags["--host"] == "0.0.0.0" and flags["--port"] == str(DEFAULT_PORT)
    parse_model_uri(flags["--model"])
    for stage in df.stages:
        for step in stage.all("CMD") + stage.all("ENTRYPOINT"):
            step.exec_form()  # JSON arrays only: signals reach ridecast, not a shell
    # The header's `docker run IMAGE ARGS...` lines: ridecast ARGS is a real command with real
    # options (click refuses an unknown option before it prints --help).
    runner, modes = CliRunner(), set()
    for args in [cmd, *_documented_runs()]:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        modes.add(" ".join(a for a in args[:2] if not a.startswith("-")))
    assert {"serve", "stream consume", "batch score", "batch backfill"} <= modes, modes
    assert any(m.startswith("rollout ") for m in modes), modes


def _documented_runs() -> list[list[str]]:
    """Arguments after the image name in the Dockerfile's `docker run ... ridecast ...` lines
    (those with ENTRYPOINT ridecast; `--entrypoint mlflow` lines run MLflow's own CLI)."""
    runs = []
    for line in DOCKERFILE.read_text().splitlines():
        text = line.lstrip("#").strip()
        if not text.startswith("docker run "):
            continue
        words = shlex.split(text)
        image = words.index("ridecast")
        if "--entrypoint" in words[:image]:
            continue
        if words[image + 1 :]:
            runs.append(words[image + 1 :])
    assert len(runs) >= 5, runs
    return runs


def test_no_model_is_baked_in_unless_the_build_arg_names_one(df: Dockerfile) -> None:
    assert _global_args(df)["BAKE_MODELS"] in ("", '""'), "no model by default"
    plain, baked = _final(df), _final(df, "baked-models")
    assert [s.name for s in plain[:-1]] == ["runtime"]
    assert [s.name for s in baked[:-1]] == ["runtime", "runtime-baked"]
    assert not any("MLFLOW_TRACKING_URI" in s.env() for s in plain), "the registry URI decides"
    froms = [c.words()[0] for s in plain for c in s.all("COPY")]
    assert froms == ["--from=builder"], "by default the image copies the venv only"
    baker = df.stage("baker")
    assert [a.args for a in baker.all("ARG")] == ["BAKE_MODELS"]
    copied = copy_sources(baker, {"BAKE_MODELS": "baked-models"})
    assert ("baked-models", "/build/bake/") in copied
    assert any(s == "deploy/bake_models.py" for s, _ in copied)
    (run,) = _commands(baker)
    assert run[:2] == ["python", "/build/bake_models.py"] and run[2] == "/build/bake"
    registry = run[3]
    (copy,) = df.stage("runtime-baked").all("COPY")
    assert copy.words() == ["--from=baker", "--chown=10001:10001", registry, registry]
    uri = df.stage("runtime-baked").env()["MLFLOW_TRACKING_URI"]
    assert uri == f"sqlite:///{registry}/mlflow.db"


def test_bake_script_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    script = ROOT / "deploy" / "bake_models.py"
    for source in (tmp_path / "missing", tmp_path):
        done = subprocess.run(
            [sys.executable, str(script), str(source), str(tmp_path / "registry")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "BAKE_MODELS" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "registry").exists()


def test_dockerignore_lets_in_what_the_build_copies_and_keeps_dev_files_out(
    df: Dockerfile,
) -> None:
    ignore = dockerignore()
    for stage in df.stages:
        for source, _ in copy_sources(stage, {"BAKE_MODELS": "baked-models"}):
            if source == "baked-models":
                continue  # the user's folder, not in the repository
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the context"
            assert not ignore.ignored(source), f"COPY {source}: .dockerignore drops it"
    kept = ["src/ridecast/cli.py", "src/ridecast/data/taxi_zone_lookup.csv", "README.md"]
    kept += ["baked-models/ride-duration/MLmodel", "baked-models/ride-duration/python_model.pkl"]
    kept += ["deploy/k8s/base/kustomization.yaml"]
    assert not [p for p in kept if ignore.ignored(p)]
    dropped = ["requirements-dev.lock", ".venv/bin/pytest", ".git/config", "tests/conftest.py"]
    dropped += [".ridecast/mlflow.db", "src/ridecast/__pycache__/cli.cpython-311.pyc", ".env"]
    dropped += ["deploy/compose.yaml", "deploy/k8s/overlays/dev/kustomization.yaml", "bench/x"]
    assert not [p for p in dropped if not ignore.ignored(p)]


def test_dockerignore_matching_follows_docker() -> None:
    ignore = DockerIgnore("# c\n**/*.pyc\ndocs\n!docs/keep.md\n/build\nsrc/a?.txt\n")
    assert ignore.ignored("x/y/z.pyc") and ignore.ignored("z.pyc")
    assert ignore.ignored("docs/a.md") and not ignore.ignored("docs/keep.md")
    assert ignore.ignored("build/lib/x") and not ignore.ignored("src/build")
    assert ignore.ignored("src/ab.txt") and not ignore.ignored("src/abc.txt")
