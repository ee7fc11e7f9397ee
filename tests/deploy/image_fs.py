"""The image's build, read and replayed without a Docker engine.

:func:`parse` reads ``deploy/Dockerfile`` into stages and instructions; :class:`DockerIgnore`
applies ``.dockerignore`` as Docker does; :func:`build_builder_stage` replays the builder stage
(its context copies, its venv and its ``pip install`` lines) with uv into a folder, so the tests
check the file system the image gets; :func:`unprivileged` runs a command as a non-root user, as
the image does. Kept apart from the tests so the static and the runtime checks share one reading.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
NOBODY = 65534  # an unprivileged uid with a passwd entry on Debian, as 10001 has in the image


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: object, what: str) -> None:
    """Skip on a laptop, fail in CI, when a tool the test needs is missing."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{what} (CI=true: every tool must be there)")
    pytest.skip(what)


# --- the Dockerfile ---


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def words(self) -> list[str]:
        return shlex.split(self.args)

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT (or a HEALTHCHECK's CMD)."""
        text = self.args.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [s for s in self.steps if s.keyword == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for step in self.all("ENV"):
            for word in step.words():
                key, sep, value = word.partition("=")
                assert sep, f"line {step.line}: ENV {word!r} is not KEY=VALUE"
                env[key] = value
        return env


@dataclass
class Dockerfile:
    global_args: list[Instruction]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found

    def chain(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it is built FROM, base first."""
        names = {s.name: s for s in self.stages}
        out = [stage]
        while out[0].base in names:
            out.insert(0, names[out[0].base])
        return out


def parse(text: str) -> Dockerfile:
    """Instructions with continuation lines joined; comment lines dropped (also inside a
    continuation, as Docker does)."""
    joined: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            joined.append((start, " ".join(p for p in pending if p)))
            pending = []
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for number, line in joined:
        keyword, _, rest = line.partition(" ")
        step = Instruction(keyword.upper(), rest.strip(), number)
        if step.keyword == "FROM":
            words = [w for w in step.words() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].steps.append(step)
        else:
            global_args.append(step)
    return Dockerfile(global_args, stages)


def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text())


def expand(word: str, args: dict[str, str]) -> str:
    """Docker's ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alternative}``."""

    def one(match: re.Match[str]) -> str:
        name, op, word = match["name"] or match["bare"], match["op"], match["word"] or ""
        value = args.get(name, "")
        if op == ":-":
            return value or word
        if op == ":+":
            return word if value else ""
        return value

    pattern = r"\$(?:\{(?P<name>\w+)(?:(?P<op>:[-+])(?P<word>[^}]*))?\}|(?P<bare>\w+))"
    return re.sub(pattern, one, word)


# --- .dockerignore ---


def _pattern(text: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[" and "]" in text[i:]:
            end = text.index("]", i)
            out, i = out + text[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


class DockerIgnore:
    """Docker's rule: the last pattern that matches a path or one of its parents decides."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.rules.append((keep, _pattern(cleaned)))

    def ignored(self, relative: str) -> bool:
        parts = Path(relative).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for keep, pattern in self.rules:
            if any(pattern.fullmatch(p) for p in prefixes):
                result = not keep
        return result


def dockerignore() -> DockerIgnore:
    return DockerIgnore((ROOT / ".dockerignore").read_text())


def copy_pairs(step: Instruction, args: dict[str, str]) -> list[tuple[str, str]]:
    """``(context path, destination)`` of a COPY from the build context (none for ``--from``)."""
    words = step.words()
    if any(w.startswith("--from=") for w in words):
        return []
    paths = [expand(w, args) for w in words if not w.startswith("--")]
    return [(source, paths[-1]) for source in paths[:-1]]


def copy_sources(stage: Stage, args: dict[str, str]) -> list[tuple[str, str]]:
    """Every ``(context path, destination)`` the stage copies from the build context."""
    return [pair for step in stage.all("COPY") for pair in copy_pairs(step, args)]


# --- replaying the builder stage ---


@dataclass
class Built:
    """The replayed builder stage: its folder (``/`` of the stage) and the venv in it."""

    root: Path
    venv: Path
    seconds: float
    commands: list[list[str]]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _copy_into(source: Path, target: Path, ignore: DockerIgnore) -> None:
    """Docker's COPY of a context path: a folder's contents, less what .dockerignore drops."""
    if source.is_file():
        target = target / source.name if target.is_dir() else target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignore.ignored(relative):
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def build_builder_stage(uv: Path, python: Path, root: Path, stage: Stage) -> Built:
    """Replay ``stage``'s WORKDIR, COPY and RUN lines: ``python -m venv`` becomes ``uv venv`` on
    ``python`` and ``pip install`` becomes ``uv pip install`` (same lock, same flags, not
    editable, bytecode compiled as pip does). Paths of the image map to ``root``."""
    ignore, workdir, venv = dockerignore(), "/", None
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    commands: list[list[str]] = []
    started = time.perf_counter()

    def here(path: str) -> Path:
        return root / os.path.join(workdir, path).lstrip("/")

    for step in stage.steps:
        if step.keyword == "WORKDIR":
            workdir = os.path.join(workdir, step.args)
            here(".").mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            for source, dest in copy_pairs(step, {}):
                assert not ignore.ignored(source), f"COPY {source}: .dockerignore drops it"
                target = here(dest)
                if dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                _copy_into(ROOT / source, target, ignore)
        elif step.keyword == "RUN":
            for command in step.args.split("&&"):
                words = shlex.split(command)
                if (made := venv_made(words)) is not None:
                    # uv seeds no pip, as --without-pip (the venv holds just what is installed).
                    assert "--without-pip" in words, "the image's venv would hold pip"
                    venv = here(made)
                    commands.append([str(uv), "venv", "-q", "--python", str(python), str(venv)])
                elif (install := pip_install(words)) is not None:
                    into, args = install
                    assert venv is not None, "pip install before the venv exists"
                    assert into == f"{venv_path(venv, root)}/bin/python", f"pip into {into}"
                    commands.append(_uv_install(uv, venv, args, here))
    assert venv is not None, f"stage {stage.name} makes no venv"
    for replayed in commands:  # every path in them is absolute
        subprocess.run(replayed, check=True, cwd=root)
    return Built(root, venv, time.perf_counter() - started, commands)


def venv_made(words: list[str]) -> str | None:
    """The folder ``python -m venv [options] DIR`` makes."""
    return words[-1] if words[:3] == ["python", "-m", "venv"] else None


def pip_install(words: list[str]) -> tuple[str, list[str]] | None:
    """``(target python, install arguments)`` of ``pip --python PY install ARGS``."""
    if words[:2] != ["pip", "--python"] or words[3:4] != ["install"]:
        return None
    return words[2], words[4:]


def venv_path(venv: Path, root: Path) -> str:
    return "/" + venv.relative_to(root).as_posix()


def _uv_install(uv: Path, venv: Path, words: list[str], here: Callable[[str], Path]) -> list[str]:
    # Compiled, as pip does by default: the unprivileged user cannot write __pycache__ here.
    out = [str(uv), "pip", "install", "-q", "--compile-bytecode", "--python", str(venv)]
    rest = iter(words)
    for word in rest:
        if word in ("--requirement", "-r"):
            out += ["-r", str(here(next(rest)))]
        elif word == "--no-deps":
            out.append(word)
        elif word == "--no-cache-dir":
            continue  # uv's cache is outside the venv; pip's flag only keeps the layer small
        else:
            assert not word.startswith("-"), f"pip install {word}: not replayed here"
            assert word not in ("-e", "--editable")
            out.append(str(here(word)))
    return out


# --- running as a non-root user ---


def unprivileged(command: list[str]) -> list[str]:
    """``command`` as uid/gid 65534 with no groups when this process is root (CI is), else as
    this (already unprivileged) user."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv is missing"
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]


def can_drop_root() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


def runtime_python() -> Path | None:
    """A Python 3.11 (the image's) that the unprivileged user can run: the dev venv's base
    Python may sit in root's home, which that user cannot enter."""
    probe = "import sys; print(sys.version, sys.prefix)"
    for candidate in (
        Path(sys.base_prefix) / "bin" / "python3.11",
        Path("/usr/local/bin/python3.11"),
        Path("/usr/bin/python3.11"),
    ):
        if not candidate.is_file():
            continue
        mine = subprocess.run([str(candidate), "-c", probe], capture_output=True, text=True)
        theirs = subprocess.run(
            unprivileged([str(candidate), "-c", probe]), capture_output=True, text=True
        )
        # The same interpreter for both: a launcher whose libpython and stdlib the other user
        # cannot read may start another Python's (seen here: 3.11.7's launcher ran 3.11.2).
        same = mine.returncode == theirs.returncode == 0 and mine.stdout == theirs.stdout
        if same and mine.stdout.startswith("3.11."):
            return candidate
    return None


def uids(pid: int) -> list[int]:
    """Real, effective, saved and file-system uid of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


def open_to_all(path: Path) -> None:
    """Let the unprivileged user read and write everything below ``path``."""
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | (0o777 if p.is_dir() else 0o666))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
