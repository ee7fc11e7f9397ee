"""``ridecast rollout …`` as a user meets it: real processes over a private copy of the registry,
no server and no token, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Trained
from . import CANARY, Home, private_home

RIDECAST = [sys.executable, "-m", "ridecast", "rollout"]

QUICK = """\
model: ride-duration
candidate: 2
strategy: canary
steps:
  - set_weight: 50
  - pause: 1s
"""


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home") as h:
        yield h


def rollout(home: Home, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RIDECAST, *args],
        env=home.env(dict(os.environ)),
        cwd=home.path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_help_shows_an_example_rollout_file(home: Home) -> None:
    result = rollout(home, "--help")
    assert result.returncode == 0
    for command in ("start", "status", "promote", "abort", "pause", "resume", "history", "run"):
        assert command in result.stdout
    assert "candidate: challenger" in result.stdout and "set_weight: 20" in result.stdout
    start_help = rollout(home, "start", "--help")
    assert start_help.returncode == 0 and "analysis: {duration: 20s}" in start_help.stdout


def test_bad_files_fail_on_one_line_and_start_nothing(home: Home, tmp_path: Path) -> None:
    cases = {
        "typo.yaml": (CANARY.replace("candidate:", "candiate:"), ["unknown field 'candiate'"]),
        "weight.yaml": (CANARY.replace("50", "101"), ["steps.2.set_weight", "0..100"]),
        "model.yaml": (CANARY.replace("ride-duration", "ride-durtion"), ["model: ride-durtion"]),
        "cand.yaml": (CANARY.replace("challenger", "nobody"), ["candidate:", "@nobody"]),
    }
    for name, (text, needles) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        one_line_error(rollout(home, "start", str(tmp_path / name)), "rollout file:", *needles)
    one_line_error(rollout(home, "status"), "no rollout yet", "rollout start")
    assert home.store.recent(10) == []


def test_start_status_pause_resume_abort_history(home: Home, tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(CANARY, encoding="utf-8")
    started = rollout(home, "start", str(path))
    assert started.returncode == 0, started.stderr
    assert "v1 → v2" in started.stdout and "progressing" in started.stdout
    one_line_error(rollout(home, "start", str(path)), "model: ride-duration", "active rollout")

    info = json.loads(rollout(home, "status", "--json").stdout)
    for key in ("phase", "strategy", "step", "weights", "analysis", "reason", "lease"):
        assert key in info
    assert (info["phase"], info["strategy"], info["step"]["index"]) == ("progressing", "canary", 1)
    assert info["weights"] == {"1": 80, "2": 20}
    table = rollout(home, "status", "--model", "ride-duration")
    assert table.returncode == 0 and "1 of 0..3: analysis: {duration: 20s}" in table.stdout
    assert "v1 80% · v2 20%" in table.stdout

    assert "paused" in rollout(home, "pause").stdout
    assert "progressing" in rollout(home, "resume", "-m", info["id"]).stdout
    aborted = rollout(home, "abort", "--reason", "enough for today")
    assert aborted.returncode == 0 and "aborted" in aborted.stdout
    assert home.champion() == "1"
    one_line_error(rollout(home, "promote"), "no active rollout", info["id"])

    rows = json.loads(rollout(home, "history", "--json").stdout)
    assert [r["phase"] for r in rows] == ["progressing", "paused", "progressing", "aborted"]
    assert rows[-1]["reason"] == "enough for today"
    assert rows[0]["actor"] == "cli"
    assert "enough for today" in rollout(home, "history").stdout


def test_promote_by_hand_moves_champion(home: Home, tmp_path: Path) -> None:
    path = tmp_path / "quick.yaml"
    path.write_text(QUICK, encoding="utf-8")
    assert rollout(home, "start", str(path)).returncode == 0
    promoted = rollout(home, "promote", "--model", "ride-duration")
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted" in promoted.stdout
    assert home.champion() == "2"


def test_run_drives_a_rollout_to_its_end_without_a_server(home: Home, tmp_path: Path) -> None:
    path = tmp_path / "quick.yaml"
    path.write_text(QUICK, encoding="utf-8")
    assert rollout(home, "start", str(path)).returncode == 0
    proc = subprocess.Popen(
        [*RIDECAST, "run", "--interval", "0.2"],
        env=home.env(dict(os.environ)),
        cwd=home.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = None
        for _ in range(150):
            state = home.store.latest("ride-duration")
            if state is not None and not state.active:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(2)  # Ctrl-C
        out, err = proc.communicate(timeout=30)
    assert state is not None and state.phase == "promoted", (out, err)
    assert home.champion() == "2"
    assert "promoted" in out
    assert proc.returncode == 0, err
    lease = home.store.lease_holder("rollout-controller")
    assert lease is not None and lease[1] == 0.0  # released on Ctrl-C
