"""Prometheus and Grafana as deploy/compose.yaml provisions them: the Prometheus config is well
formed and its targets are the stack's services on the ports they listen on, Grafana's
dashboards use the datasource it provisions, and every metric a dashboard queries is one that a
real server, a real consumer and a real batch job export (scraped, not assumed)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from ridecast.stream.services import SERVICES
from tests.conftest import require_tool
from tests.deploy.compose_file import (
    COMPOSE,
    DEPLOY,
    command,
    environment,
    is_job,
    is_ridecast,
    listen_port,
    mounts,
    services,
)
from tests.web.conftest import start_server, stop_server

RIDECAST = str(Path(sys.executable).parent / "ridecast")
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Series Prometheus makes itself for every target, not exported by anyone.
PROMETHEUS_SERIES = {"up"}


def _yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def _prometheus() -> dict[str, Any]:
    return _yaml(DEPLOY / "prometheus" / "prometheus.yml")


def _mounted(service: str, source: str) -> str:
    """Where ``source`` (relative to deploy/) is mounted in ``service``."""
    found = [dst for dst, src in mounts(services()[service]).items() if src == source]
    assert found, f"{service} does not mount {source}"
    return found[0]


# --- what the project exports: real processes, scraped -----------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def _families(exposition: str) -> dict[str, str]:
    """sample name -> metric family, from the Prometheus text format. A family announced by its
    ``# TYPE`` line counts even before its first sample (a counter of rare events)."""
    out: dict[str, str] = {}
    family = ""
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()[:4]
            for suffix in _SUFFIXES.get(kind, ("",)):
                out[family + suffix] = family
        elif line and not line.startswith("#") and (match := _SAMPLE.match(line)):
            out[match.group(1)] = family
    return out


def _declared(*groups: object) -> set[str]:
    """The family names of the prometheus_client metrics (and collectors) in ``groups``."""
    names: set[str] = set()
    for group in groups:
        for value in vars(group).values():
            if hasattr(value, "describe"):
                for family in value.describe():
                    kind = family.type
                    names.add(family.name + ("_total" if kind == "counter" else ""))
    return names


ROLLOUT = """model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 50
  - analysis: {duration: 1s}
  - pause: {}
analysis:
  min_samples: 5
  max_error_rate: 0.5
  max_mae_ratio: null
  max_p99_latency_ms: null
  max_mean_shift: null
"""


def _scrape_a_server(trained: Any, where: Path) -> str:
    """``ridecast serve --workers 2`` with a canary (and a 100% shadow) that the controller
    analyses, traffic on both versions, feedback and a bad request; its /metrics once every
    metric the service declares has a sample."""
    from ridecast.control import ops
    from ridecast.control.store import store_for
    from ridecast.monitoring.metrics import log_metrics, rollout_metrics, web_metrics
    from ridecast.settings import Settings

    log_url = f"sqlite:///{where / 'predictions.db'}"
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_SERVE_")}
    env.update(RIDECAST_PREDICTION_LOG_URL=log_url, PYTHONUNBUFFERED="1")
    args = ["--model", "models:/ride-duration@champion", "--model", "models:/ride-tip@champion"]
    server = start_server(env, [*args, "--workers", "2"], where / "server.log")
    try:
        settings = Settings(
            home=trained.home, tracking_uri=trained.tracking_uri, prediction_log_url=log_url
        )
        store = store_for(settings)
        state = ops.start(settings, ROLLOUT, store=store, actor="test")
        store.save(state.evolve(shadow_percent=100), reason="test: shadow every request")
        wanted = _declared(web_metrics(), log_metrics(), rollout_metrics())
        deadline = time.monotonic() + 120
        text = ""
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            n = 0
            while time.monotonic() < deadline:
                for _ in range(20):
                    n += 1
                    ride = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.0}
                    client.post("/predict", json={**ride, "ride_id": f"r{n}", "user_id": f"u{n}"})
                    client.post("/predict/ride-tip", json=ride)
                    client.post("/feedback", json={"ride_id": f"r{n}", "actual_duration": 12.0})
                client.post("/predict", json={"PULocationID": "x"})
                text = client.get("/metrics").text
                if wanted <= set(_families(text).values()):
                    return text
                time.sleep(0.5)
        missing = sorted(wanted - set(_families(text).values()))
        raise AssertionError(f"the server's /metrics never showed {missing}:\n{server.log()}")
    finally:
        stop_server(server)


def _scrape_a_consumer(trained: Any, redis_url: str, where: Path) -> str:
    """``ridecast stream consume --metrics-port`` on a Redis stream with a few events."""
    from ridecast.stream.redis_streams import RedisStreamBroker
    from ridecast.stream.stats import consumer_metrics

    name = f"ridecast-test:{uuid.uuid4().hex[:10]}"
    events, outputs = f"{name}:events", f"{name}:predictions"
    port = _free_port()
    env = {
        **trained.env(),
        "RIDECAST_STATE_URL": f"sqlite:///{where / 'consumer-state.db'}",
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{where / 'consumer-log.db'}",
    }
    args = ["stream", "consume", "--broker", redis_url, "--metrics-port", str(port)]
    args += ["--input-stream", events, "--output-stream", outputs, "--group", name]
    broker = RedisStreamBroker(redis_url)
    event = (
        b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 1}'
    )
    broker.publish(events, [event] * 20)
    log = (where / "consumer.log").open("wb")
    process = subprocess.Popen([RIDECAST, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    wanted = _declared(consumer_metrics())
    text = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, (where / "consumer.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            if (
                wanted <= set(_families(text).values())
                and "ridecast_stream_predictions_total{" in text
            ):
                return text
            time.sleep(0.3)
        raise AssertionError(f"the consumer never exported {sorted(wanted)}:\n{text}")
    finally:
        process.terminate()
        process.wait(timeout=30)
        broker.delete([events, outputs, f"{events}:dead-letter"])
        broker.close()


def _run_a_batch_job(trained: Any, where: Path, pushgateway: str | None) -> tuple[str, str | None]:
    """``ridecast batch score`` with RIDECAST_METRICS_TEXTFILE_DIR (and, where this machine has
    one, a real Pushgateway): the file it leaves, and what the Pushgateway then serves."""
    textfiles = where / "textfile"
    env = {
        **trained.env(),
        "RIDECAST_METRICS_TEXTFILE_DIR": str(textfiles),
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{where / 'batch-log.db'}",
        "RIDECAST_STATE_URL": f"sqlite:///{where / 'batch-state.db'}",
    }
    if pushgateway is not None:
        env["RIDECAST_METRICS_PUSHGATEWAY"] = pushgateway
    args = ["batch", "score", "--taxi-type", "green", "--month", "2025-02"]
    args += ["--sink", str(where / "scored")]
    done = subprocess.run([RIDECAST, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = textfiles.glob("*.prom")
    assert written.name == "ridecast-batch_green_2025-02.prom"
    assert str(written) in done.stdout.replace("\n", ""), done.stdout
    if pushgateway is None:
        return written.read_text(encoding="utf-8"), None
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10) as response:
        return written.read_text(encoding="utf-8"), response.read().decode()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real Pushgateway (Debian's prometheus-pushgateway) on a free port, if installed."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        yield None
        return
    port = _free_port()
    log = (tmp_path_factory.mktemp("pushgateway") / "pushgateway.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the Pushgateway exited"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the Pushgateway never got ready"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Exported:
    web: str
    consumer: str
    batch: str
    pushed: str | None  # the Pushgateway's /metrics after the batch job, when one ran

    def families(self) -> dict[str, str]:
        return {**_families(self.web), **_families(self.consumer), **_families(self.batch)}


@pytest.fixture(scope="module")
def exported(
    trained: Any,
    redis_url: str,
    pushgateway: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Exported:
    where = tmp_path_factory.mktemp("exported")
    batch, pushed = _run_a_batch_job(trained, where, pushgateway)
    return Exported(
        web=_scrape_a_server(trained, where),
        consumer=_scrape_a_consumer(trained, redis_url, where),
        batch=batch,
        pushed=pushed,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PromQL -------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: not its functions, aggregations,
    keywords, label names, label values or durations."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {m for m in _NAME.findall(text) if m.lower() not in _KEYWORDS}


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(ridecast_nope_bucket{model="a b",'
        ' le!="1"}[$__rate_interval]))) / on (model) group_left sum without (x) (up offset 5m)'
        " > 1e-9 and bool ridecast_other:ratio"
    )
    assert metric_names(expr) == {"ridecast_nope_bucket", "up", "ridecast_other:ratio"}


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' inner panels included."""
    out = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            out.append((panel["title"], str(target.get("expr", ""))))
    return out


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


# --- Prometheus ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_SCRAPE_KEYS = {
    "job_name", "metrics_path", "scheme", "honor_labels", "honor_timestamps", "scrape_interval",
    "scrape_timeout", "static_configs", "params", "relabel_configs", "metric_relabel_configs",
}  # fmt: skip


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


def test_prometheus_config_is_well_formed() -> None:
    """What promtool's `check config` would refuse, checked in Python (no promtool here)."""
    config = _prometheus()
    assert set(config) <= {"global", "scrape_configs", "rule_files", "alerting"}, set(config)
    settings = config["global"]
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        assert _DURATION.match(str(settings[key])), f"global.{key}: {settings[key]!r}"
    assert _seconds(settings["scrape_timeout"]) <= _seconds(settings["scrape_interval"])
    assert config["scrape_configs"], "nothing to scrape"
    for job in config["scrape_configs"]:
        assert set(job) <= _SCRAPE_KEYS, f"{job.get('job_name')}: {set(job) - _SCRAPE_KEYS}"
        assert isinstance(job["job_name"], str) and job["job_name"]
        assert str(job.get("metrics_path", "/metrics")).startswith("/")
        assert isinstance(job.get("honor_labels", False), bool)
        assert job["static_configs"], job["job_name"]
        for group in job["static_configs"]:
            assert set(group) <= {"targets", "labels"}, group
            for target in group["targets"]:
                host, _, port = str(target).rpartition(":")
                assert host and port.isdigit() and 0 < int(port) < 65536, target


def test_prometheus_scrapes_every_service_that_exports_metrics_on_its_port() -> None:
    all_services = services()
    config = _prometheus()
    prometheus = all_services["prometheus"]
    config_file = next(a for a in command(prometheus) if a.startswith("--config.file="))
    assert _mounted("prometheus", "./prometheus/prometheus.yml") == config_file.split("=", 1)[1]
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs)), jobs
    scraped: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, _, port = str(target).rpartition(":")
                if host == "localhost":  # Prometheus itself
                    assert job["job_name"] == "prometheus" and int(port) == listen_port(prometheus)
                    continue
                assert host in all_services, f"{target}: no compose service {host}"
                assert int(port) == listen_port(all_services[host]), f"{target}: wrong port"
                assert not is_job(all_services[host]), f"{target} is a one-shot job"
                scraped[host] = job["job_name"]
    exporters = {
        n
        for n, s in all_services.items()
        if is_ridecast(s) and (command(s)[:1] == ["serve"] or "--metrics-port" in command(s))
    }
    assert exporters == {"api"} | {f"consumer-{s}" for s in SERVICES}
    assert exporters <= scraped.keys(), exporters - scraped.keys()
    # Jobs push to the Pushgateway; their own job and instance labels must survive the scrape.
    batch = next(j for j in config["scrape_configs"] if j["job_name"] == scraped["pushgateway"])
    assert batch.get("honor_labels") is True


# --- Grafana ------------------------------------------------------------------------------------


def _datasource() -> dict[str, Any]:
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    return dict(source)


def test_grafana_provisions_prometheus_and_the_dashboards() -> None:
    all_services = services()
    assert _mounted("grafana", "./grafana/provisioning") == "/etc/grafana/provisioning"
    source = _datasource()
    url = urlparse(source["url"])
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert url.hostname == "prometheus" and url.port == listen_port(all_services["prometheus"])
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "ridecast.yaml")["providers"]
    mounted = _mounted("grafana", "./grafana/dashboards")
    assert provider["type"] == "file" and provider["options"]["path"] == mounted
    home = environment(all_services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounted + "/")
    assert (COMPOSE.parent / "grafana" / "dashboards" / Path(home).name).is_file()
    assert DASHBOARDS, "no dashboard to provision"


def test_dashboards_parse_and_use_the_provisioned_datasource() -> None:
    uid = _datasource()["uid"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"] and dashboard["title"], path
        panels = _panels(dashboard)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not area & cells, f"{path.name}: {panel['title']!r} overlaps another panel"
            cells |= area
            if panel["type"] in ("row", "text"):
                continue
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], f"{panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid and target["expr"], panel["title"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_processes_export_what_they_declare(exported: Exported) -> None:
    """Each mode's scrape holds its metrics, in prometheus_client's formats and modes."""
    web, consumer, batch = (_families(e) for e in (exported.web, exported.consumer, exported.batch))
    # The web service: multiprocess mode (a pid label on the versions each worker serves).
    assert re.search(r'^ridecast_model_info\{[^}]*pid="\d+"[^}]*\} 1\.0$', exported.web, re.M)
    assert re.search(r'^ridecast_rollout_phase\{[^}]*strategy="canary"', exported.web, re.M)
    assert re.search(r'^ridecast_rollout_analyses_total\{[^}]*verdict="pass"', exported.web, re.M)
    assert "ridecast_stream_events_total" in consumer and "ridecast_http_requests_total" in web
    # A consumer counts its prediction-log rows with the same metric as the web service.
    assert "ridecast_prediction_log_rows_total" in consumer
    assert {f for f in set(batch.values()) if f.startswith("ridecast_")} == {
        "ridecast_batch_job_rows",
        "ridecast_batch_job_rejected_rows",
        "ridecast_batch_job_duration_seconds",
        "ridecast_batch_job_prediction_mean_minutes",
        "ridecast_batch_job_prediction_std_minutes",
        "ridecast_batch_job_rmse_minutes",
        "ridecast_batch_job_last_success_timestamp_seconds",
    }
    assert 'state="scored"' in exported.batch and 'month="2025-02"' in exported.batch


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_batch_job_pushes_its_run_to_the_pushgateway(exported: Exported) -> None:
    if exported.pushed is None:
        # Skips on a laptop, fails under CI=true (where .ci/run installs it).
        require_tool("prometheus-pushgateway", "Debian: apt-get install prometheus-pushgateway")
    pushed = _samples_of(exported.pushed, "ridecast_batch_job_rows")
    written = _samples_of(exported.batch, "ridecast_batch_job_rows")
    group = {"job": "ridecast-batch", "taxi_type": "green", "month": "2025-02"}
    scored = [v for labels, v in pushed if labels.get("state") == "scored"]
    assert scored and scored == [v for labels, v in written if labels.get("state") == "scored"]
    assert all(group.items() <= labels.items() for labels, _ in pushed), pushed


def _samples_of(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_metric_a_dashboard_queries_is_exported(exported: Exported) -> None:
    families = exported.families()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        queries = _queries(dashboard)
        used: set[str] = set()
        for title, expr in queries:
            names = metric_names(expr)
            assert names, f"{title!r}: no metric in {expr!r}"
            unknown = names - families.keys() - PROMETHEUS_SERIES
            assert not unknown, f"{path.name}, {title!r}: nothing exports {sorted(unknown)}"
            used |= {families[n] for n in names if n in families}
        if path.name == "ridecast.json":
            # The TaxiApp's dashboard shows every ridecast metric: a new one needs a panel.
            ours = {f for f in families.values() if f.startswith("ridecast_")}
            assert ours <= used, f"no panel shows {sorted(ours - used)}"
            exprs = " ".join(expr for _, expr in queries)
            # Page 1: the live service by model version.
            assert "by (model_version) (rate(ridecast_http_requests_total" in exprs
            assert "by (model_version) (rate(ridecast_http_request_errors_total" in exprs
            for q in ("0.5", "0.99"):
                assert f"histogram_quantile({q}, sum by (le, model_version) (rate(" in exprs
            assert "ridecast_prediction_value_bucket" in exprs
            # Page 2: rollouts.
            for name in (
                "ridecast_rollout_phase",
                "ridecast_rollout_step",
                "ridecast_rollout_weight_percent",
                "ridecast_rollout_analyses_total",
                "ridecast_rollout_transitions_total",
                "ridecast_rollout_analysis_mean_absolute_error",
            ):
                assert name in exprs, name
