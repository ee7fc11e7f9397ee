"""`ridecast serve` from the command line: help, and a one-line error for a missing model."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def test_serve_help_lists_the_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ridecast", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    for option in ("--model", "--workers", "--port", "--no-batching", "--max-batch-size",
                   "--max-batch-time-ms", "--watch-interval", "--shutdown-delay"):  # fmt: skip
        assert option in out


def test_an_unknown_model_is_one_line_and_exit_2(server_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ridecast", "serve", "--model", "models:/ride-nothing@champion"],
        capture_output=True,
        text=True,
        env=server_env,
        timeout=170,
    )
    assert done.returncode == 2
    assert "ride-nothing" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # one message (rich may wrap it)
