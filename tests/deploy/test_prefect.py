"""The monthly job on Prefect, on Prefect's test harness (a local server) and real files: the
flows write what `ridecast batch` writes, report rows and rejects as artifacts, never duplicate a
month, retry and resume a backfill; `ridecast deploy prefect` creates the 0 3 2 * * deployment,
a process worker runs it, and `--serve` registers and serves it. The worker's run (a fresh
process that imports MLflow) is the slow test.

Prefect is imported inside the fixtures, after PREFECT_HOME points into a temporary folder, so
nothing is written into the repo or the home directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ridecast.data.schema import Month, TaxiType
from ridecast.data.synth import synthesize_month, write_month
from ridecast.errors import DataError
from ridecast.settings import Settings, get_settings

from ..conftest import Trained

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

GREEN = TaxiType.GREEN
MONTH = Month(2025, 2)
ROWS = 5000
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def prefect_trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A registry of its own with ride-duration v1 (champion, linear) trained on two small
    synthetic green months (2025-01, 2025-02), through the project's training helper."""
    from ridecast.registry import Registry
    from ridecast.training import train_on_synthetic_months

    home = tmp_path_factory.mktemp("prefect-ridecast-home")
    settings = Settings(home=home, tracking_uri=None, data_dir=None, prediction_log_url=None)
    registry = Registry(settings)
    train_on_synthetic_months(
        settings, registry, rows=ROWS, plan=(("ride-duration", "linear", "champion"),)
    )
    return Trained(settings, home, settings.resolved_data_dir, registry.tracking_uri, registry)


@pytest.fixture(scope="module")
def prefect_api(
    prefect_trained: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Prefect's test harness (a local server over a temporary database) with ridecast's
    settings pointing at the trained registry. Yields the environment a subprocess (the real
    CLI, a worker) needs to use both."""
    prefect_home = tmp_path_factory.mktemp("prefect-home")
    env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no telemetry from the test server
    }
    trained = prefect_trained
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            import prefect  # noqa: F401
        except ImportError:
            if CI:
                pytest.fail("prefect is not installed (CI=true: the dev lock installs it)")
            pytest.skip("prefect is not installed: pip install 'ridecast[prefect]'")
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        for key, value in trained.env().items():
            if key.startswith(("RIDECAST_", "MLFLOW_")):
                mp.setenv(key, value)
        get_settings.cache_clear()
        # PREFECT_HOME again, in case another module imported Prefect before the env was set.
        with temporary_settings({PREFECT_HOME: prefect_home}), prefect_test_harness():
            env = trained.env() | env | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
            yield env
    get_settings.cache_clear()


@pytest.fixture
def prefect_client(prefect_api: dict[str, str]) -> Iterator[SyncPrefectClient]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        yield client


def _parquet(root: Path) -> dict[str, pa.Table]:
    """Every parquet file of a folder sink by its path under it (runs and staging left out)."""
    return {
        str(p.relative_to(root)): pq.read_table(p)
        for p in sorted(root.rglob("*.parquet"))
        if not {"_runs", ".staging"} & set(p.relative_to(root).parts)
    }


def _without_run(table: pa.Table) -> pa.Table:
    table = table.drop_columns([c for c in table.column_names if c == "run_id"])
    return table.sort_by("ride_id")


def _artifacts(client: SyncPrefectClient, flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    return {a.key: a for a in found if a.key}


def _table(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return list(json.loads(data) if isinstance(data, str) else data)


def _logs(client: SyncPrefectClient, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    )
    return "\n".join(log.message for log in logs)


def _ridecast(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_monthly_flow_writes_what_batch_score_writes_reports_artifacts_and_never_duplicates(
    prefect_api: dict[str, str], prefect_client: SyncPrefectClient, tmp_path: Path
) -> None:
    from ridecast.deploy import flows

    state = flows.score_month(month=str(MONTH), sink=str(tmp_path / "flow"), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    cli = _ridecast(
        prefect_api, "batch", "score", "--month", str(MONTH), "--sink", str(tmp_path / "cli")
    )
    assert cli.returncode == 0, cli.stderr

    by_flow, by_cli = _parquet(tmp_path / "flow"), _parquet(tmp_path / "cli")
    assert by_flow.keys() == by_cli.keys()
    assert all("taxi_type=green/year=2025/month=02/" in path for path in by_flow)
    for path in by_flow:
        assert _without_run(by_flow[path]).equals(_without_run(by_cli[path])), path
    predictions = pa.concat_tables(t for p, t in by_flow.items() if "reject" not in p)
    rejects = pa.concat_tables(t for p, t in by_flow.items() if "reject" in p)
    assert predictions.num_rows == summary.rows_scored > 0
    assert rejects.num_rows == summary.rows_rejected > 0
    assert summary.rows_read == predictions.num_rows + rejects.num_rows

    # The artifact says what the sink holds: rows read, scored, rejected, and rejects by reason.
    artifacts = _artifacts(prefect_client, state.state_details.flow_run_id)
    rows = {r["rows"]: r["count"] for r in _table(artifacts[f"ridecast-green-{MONTH}"])}
    assert rows["read"] == summary.rows_read
    assert rows["scored"] == predictions.num_rows and rows["rejected"] == rejects.num_rows
    by_reason: dict[str, int] = {}
    for reason in rejects.column("reason").to_pylist():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert {
        k.removeprefix("rejected: "): v for k, v in rows.items() if v and ": " in k
    } == by_reason

    # A rerun replaces the month: the same files, the same rows, every ride id once.
    again = flows.score_month(month=str(MONTH), sink=str(tmp_path / "flow"))
    assert again.run_id != summary.run_id
    rerun = _parquet(tmp_path / "flow")
    assert rerun.keys() == by_flow.keys()
    for path, table in rerun.items():
        assert table.num_rows == by_flow[path].num_rows, path
        assert set(table.column("run_id").to_pylist()) == {again.run_id}
        ids = table.column("ride_id")
        assert len(ids.unique()) == len(ids), path


def test_bad_input_fails_the_run_with_its_message_not_a_traceback(
    prefect_api: dict[str, str], prefect_client: SyncPrefectClient, tmp_path: Path
) -> None:
    from ridecast.deploy import flows

    bad = flows.score_month(month="2025-13", return_state=True)
    assert bad.is_failed()
    assert bad.message is not None and "2025-13" in bad.message and "YYYY-MM" in bad.message
    logs = _logs(prefect_client, bad.state_details.flow_run_id)
    assert "2025-13" in logs and "Traceback" not in logs

    # Without a month, a run scores the month before its date (here: no file for it, yet).
    expected = {_last_month()}
    default = flows.score_month(data_dir=str(tmp_path), return_state=True)
    expected.add(_last_month())  # in case the month turned meanwhile
    assert default.is_failed() and default.message is not None
    assert any(f"no green trip file for {m}:" in default.message for m in expected)
    with pytest.raises(DataError, match="YYYY-MM"):  # a direct call raises the error itself
        flows.score_month(month="jan")


def _last_month() -> Month:
    now = datetime.now(UTC)
    return Month(now.year, now.month).prev()


def test_backfill_scores_each_month_retries_a_failing_one_then_resumes_and_skips(
    prefect_api: dict[str, str],
    prefect_client: SyncPrefectClient,
    prefect_trained: Trained,
    tmp_path: Path,
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from ridecast.deploy import flows

    months = tmp_path / "months"  # 2025-01 and 2025-02; 2025-03 comes later
    months.mkdir()
    for month in ("2025-01", "2025-02"):
        name = f"green_tripdata_{month}.parquet"
        (months / name).symlink_to(prefect_trained.data_dir / name)
    sink = tmp_path / "sink"
    args = {"start": "2025-01", "end": "2025-03", "source": str(months), "sink": str(sink)}

    first = flows.backfill(**args, retries=2, retry_delay_seconds=0, return_state=True)
    assert first.is_failed()
    assert first.message is not None and "1 of 3 months failed (2025-03)" in first.message
    run_id = first.state_details.flow_run_id
    table = _table(_artifacts(prefect_client, run_id)["ridecast-backfill-green"])
    assert [(r["month"], r["status"]) for r in table] == [
        ("2025-01", "scored"), ("2025-02", "scored"), ("2025-03", "failed"),
    ]  # fmt: skip
    assert "no green trip file for 2025-03" in table[2]["error"]
    tasks = {
        t.name: t
        for t in prefect_client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    }
    march = tasks["backfill-green-2025-03"]
    assert march.state is not None and march.state.is_failed()
    assert march.run_count == 3  # tried once, retried twice
    assert tasks["backfill-green-2025-01"].run_count == 1
    done = _parquet(sink)
    assert {Path(p).parts[2] for p in done} == {"month=01", "month=02"}

    write_month(synthesize_month(GREEN, Month(2025, 3), 3000, seed=3), months, GREEN, "2025-03")
    resumed = flows.backfill(**args, retry_delay_seconds=0)
    assert [o.status for o in resumed] == ["skipped", "skipped", "scored"]
    assert resumed[2].summary is not None and resumed[2].summary.rows_read == 3000
    again = flows.backfill(**args, retry_delay_seconds=0)
    assert [o.status for o in again] == ["skipped", "skipped", "skipped"]
    assert again[2].previous is not None
    assert again[2].previous["run_id"] == resumed[2].summary.run_id

    final = _parquet(sink)
    assert {Path(p).parts[2] for p in final} == {"month=01", "month=02", "month=03"}
    for path, table in final.items():
        if path in done:
            assert table.equals(done[path]), f"{path} was rewritten by a rerun"
        ids = table.column("ride_id")
        assert len(ids.unique()) == len(ids), path

    # `ridecast batch backfill` over the same range writes the same files with the same rows.
    cli = _ridecast(
        prefect_api,
        *("batch", "backfill", "--from", "2025-01", "--to", "2025-03"),
        *("--source", str(months), "--sink", str(tmp_path / "cli")),
    )
    assert cli.returncode == 0, cli.stderr
    by_cli = _parquet(tmp_path / "cli")
    assert by_cli.keys() == final.keys()
    for path, table in final.items():
        assert _without_run(table).equals(_without_run(by_cli[path])), path


def test_deploy_prefect_creates_the_monthly_deployment(
    prefect_api: dict[str, str], prefect_client: SyncPrefectClient, tmp_path: Path
) -> None:
    sink = tmp_path / "scheduled"
    result = _ridecast(
        prefect_api, "deploy", "prefect", "--sink", str(sink), "--work-pool", "ridecast-test"
    )
    assert result.returncode == 0, result.stderr
    assert "prefect worker start --pool ridecast-test" in result.stdout

    deployment = prefect_client.read_deployment_by_name("ridecast-score-month/monthly")
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 2 * *"]  # type: ignore[union-attr]
    assert deployment.schedules[0].schedule.timezone == "UTC"  # type: ignore[union-attr]
    assert deployment.schedules[0].active
    assert deployment.entrypoint == "ridecast.deploy.flows.score_month"
    assert deployment.parameters == {
        "taxi_type": "green", "model": "models:/ride-duration@champion", "sink": str(sink),
    }  # fmt: skip
    assert deployment.work_pool_name == "ridecast-test"
    assert prefect_client.read_work_pool("ridecast-test").type == "process"


@pytest.mark.slow
def test_a_process_worker_runs_the_deployment(
    prefect_api: dict[str, str],
    prefect_client: SyncPrefectClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sink = tmp_path / "by-worker"
    args = ["--name", "by-worker", "--sink", str(sink), "--work-pool", "ridecast-worker"]
    assert _main(monkeypatch, "deploy", "prefect", *args) == 0
    deployment = prefect_client.read_deployment_by_name("ridecast-score-month/by-worker")

    # What the schedule would start, started now for a given month; the worker's subprocess
    # loads the flow from its installed module (no image, no code storage).
    run = prefect_client.create_flow_run_from_deployment(
        deployment.id, parameters={"month": str(MONTH)}
    )
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "ridecast-worker",
         "--run-once", "--limit", "1"],
        env=prefect_api, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]
    state = prefect_client.read_flow_run(run.id).state
    assert state is not None and state.is_completed(), (state, worker.stderr[-3000:])
    written = _parquet(sink)
    assert written and all("taxi_type=green/year=2025/month=02/" in p for p in written)
    artifacts = _artifacts(prefect_client, run.id)
    rows = {r["rows"]: r["count"] for r in _table(artifacts[f"ridecast-green-{MONTH}"])}
    assert rows["read"] == sum(t.num_rows for t in written.values())


def test_deploy_prefect_serve_registers_and_serves_the_deployment(
    prefect_api: dict[str, str], prefect_client: SyncPrefectClient
) -> None:
    from prefect.exceptions import ObjectNotFound

    served = subprocess.Popen(
        [sys.executable, "-m", "ridecast", "deploy", "prefect", "--serve", "--name", "served",
         "--taxi-type", "yellow"],
        env=prefect_api, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        deployment = None
        while deployment is None and time.monotonic() < deadline and served.poll() is None:
            try:
                deployment = prefect_client.read_deployment_by_name("ridecast-score-month/served")
            except ObjectNotFound:
                time.sleep(0.5)
        assert deployment is not None, "no deployment registered by --serve"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 2 * *"]  # type: ignore[union-attr]
        assert deployment.parameters["taxi_type"] == "yellow"
        assert deployment.work_pool_name is None  # the serving process runs it, not a worker
        assert served.poll() is None, "--serve should keep running"
    finally:
        served.send_signal(signal.SIGINT)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from ridecast.cli import main

    monkeypatch.setattr(sys, "argv", ["ridecast", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--cron", "0 3 32 * *"], ["--cron", "0 3 32 * *", "0 3 2 * *"]),
        (["--timezone", "Mars/Base"], ["--timezone", "Mars/Base", "IANA"]),
        (["--source", "/nonexistent/month.parquet"], ["--source", "folder"]),
        (["--model", "ride-duration@@x"], ["ride-duration@@x"]),
    ],
)
def test_deploy_prefect_bad_options_exit_2_naming_the_option(
    prefect_api: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needles: list[str],
) -> None:
    assert _main(monkeypatch, "deploy", "prefect", "--name", "bad", *args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_serve_without_a_prefect_server_exits_2(
    prefect_api: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert _main(monkeypatch, "deploy", "prefect", "--serve") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "prefect server start" in err and "PREFECT_API_URL" in err


def test_deploy_prefect_with_no_server_at_prefect_api_url_exits_2(
    prefect_api: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens
        assert _main(monkeypatch, "deploy", "prefect", "--name", "unreachable") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot reach the Prefect API" in err and "PREFECT_API_URL" in err


def test_deploy_prefect_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The import of Prefect fails as it does where the extra is not installed.
    import ridecast.deploy

    monkeypatch.setitem(sys.modules, "prefect", None)
    monkeypatch.delitem(sys.modules, "ridecast.deploy.flows", raising=False)
    monkeypatch.delattr(ridecast.deploy, "flows", raising=False)
    assert _main(monkeypatch, "deploy", "prefect") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pip install 'ridecast[prefect]'" in err and "Traceback" not in err


def test_deploy_prefect_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ridecast", "deploy", "prefect", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    for option in ("--model", "--taxi-type", "--sink", "--work-pool", "--serve", "--cron"):
        assert option in result.stdout
