"""``ridecast dashboard`` as a user meets it: one line and exit 2 when the database cannot be
read, and otherwise the dashboard of that database alone (no registry, no data folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import free_port

RIDECAST = [sys.executable, "-m", "ridecast"]
pytestmark = pytest.mark.timeout(120)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RIDECAST_", "MLFLOW_"))}
    return {**env, "RIDECAST_HOME": str(home)}


@pytest.mark.parametrize(
    ("db", "needles"),
    [
        (None, ["no database at", "predictions.db", "--db"]),
        ("sqlite:///{tmp}/nothing/here.db", ["no database at", "here.db"]),
        (
            "postgresql+psycopg://someone:secret@127.0.0.1:1/none",
            ["not reachable", "127.0.0.1:1", "***"],
        ),
    ],
)
def test_a_database_that_cannot_be_read_is_one_line_and_exit_2(
    db: str | None, needles: list[str], tmp_path: Path
) -> None:
    args = [*RIDECAST, "dashboard", "--port", str(free_port())]
    if db is not None:
        args += ["--db", db.format(tmp=tmp_path)]
    result = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    text = " ".join(" ".join(lines).split())
    assert text.startswith("error:"), result.stderr
    for needle in needles:
        assert needle in text, result.stderr


def test_the_dashboard_serves_a_database_on_its_own(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The batch results and the rollouts come from the database alone: this home has no
    registry and no data."""
    port = free_port()
    process = subprocess.Popen(
        [*RIDECAST, "dashboard", "--db", world.log_url, "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"{base}/dashboard/api/batch", timeout=5)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        runs = answer.json()["runs"]
        assert [(r["month"], r["version"], r["rows_read"]) for r in runs] == [
            ("2025-02", "1", world.batch_rows_read)
        ]
        rollouts = httpx.get(f"{base}/dashboard/api/rollouts", timeout=10).json()
        assert {r["id"] for r in rollouts["rollouts"]} == set(world.rollouts.values())
        assert httpx.get(base, timeout=5).headers["location"] == "/dashboard/"
        home = httpx.get(base, timeout=5, follow_redirects=True)
        assert home.url.path == "/dashboard/" and "Live service" in home.text
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/dashboard/" in output


def test_the_demo_ends_with_the_dashboard_url(world, trained) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from ridecast.dashboard.demo import show_dashboard
    from ridecast.demo import DemoContext

    out = io.StringIO()
    ctx = DemoContext(Console(file=out, width=200), world.settings, trained.registry)
    show_dashboard(ctx)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith("dashboard: http://127.0.0.1:") and last.endswith("/dashboard/")
    text = "\n".join(lines)
    assert "live service: ride-duration answers in the last 15m: v1 " in text
    assert "rollouts: shadow v1→v2 paused" in text
    assert "batch results: green 2025-02 v1 MAE" in text
    assert "drift: green 2025-03 against" in text and ": drift (" in text
    assert "--keep-serving" in text
