"""Prometheus and Grafana as deploy/compose.yaml provisions them: the scrape targets are the
stack's services on the ports they listen on, Grafana's dashboards use the datasource it
provisions, and every metric a dashboard queries is one the project really exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from ridecast.monitoring.metrics import Histogram, MetricSet
from ridecast.stream.services import SERVICES
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


# --- what the project exports -------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")


def _families(exposition: str) -> dict[str, str]:
    """sample name -> metric family, from the Prometheus text format."""
    out: dict[str, str] = {}
    family = ""
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif line and not line.startswith("#") and (match := _SAMPLE.match(line)):
            out[match.group(1)] = family
    return out


def _web_exposition() -> str:
    """What `ridecast serve` answers on /metrics, with one series in every metric."""
    metrics = MetricSet()
    for metric in metrics.all:
        labels = tuple("x" for _ in metric.labelnames)
        if isinstance(metric, Histogram):
            metric.observe(labels, 1.0)
        else:
            metric.inc(labels)
    return metrics.render().decode()


# A consumer's metrics server is prometheus_client's default registry: ridecast's metrics plus
# the process and Python collectors. Its own process, so this test adds no series to the test
# run's registry.
_CONSUMER_EXPOSITION = """
from prometheus_client import generate_latest
from ridecast.stream.stats import _metrics
for metric in _metrics().values():
    metric.labels(*["x"] * len(metric._labelnames))
print(generate_latest().decode())
"""


def _consumer_exposition() -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CONSUMER_EXPOSITION],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _exported() -> dict[str, str]:
    return {**_families(_web_exposition()), **_families(_consumer_exposition())}


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


def test_every_metric_a_dashboard_queries_is_exported() -> None:
    exported = _exported()
    assert "ridecast_http_requests_total" in exported  # the web service's /metrics
    assert "ridecast_stream_events_total" in exported  # a consumer's metrics server
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        queries = _queries(dashboard)
        used: set[str] = set()
        for title, expr in queries:
            names = metric_names(expr)
            assert names, f"{title!r}: no metric in {expr!r}"
            unknown = names - exported.keys() - PROMETHEUS_SERIES
            assert not unknown, f"{path.name}, {title!r}: nothing exports {sorted(unknown)}"
            used |= {exported[n] for n in names if n in exported}
        if path.name == "ridecast.json":
            # The TaxiApp's dashboard shows every ridecast metric: a new one needs a panel.
            # (prometheus_client also exports each counter's and histogram's creation time.)
            families = {
                f
                for f in exported.values()
                if f.startswith("ridecast_") and not f.endswith("_created")
            }
            assert families <= used, f"no panel shows {sorted(families - used)}"
            exprs = " ".join(expr for _, expr in queries)
            assert "by (model_version) (rate(ridecast_http_requests_total" in exprs
            for q in ("0.5", "0.99"):
                assert f"histogram_quantile({q}, sum by (le, endpoint) (rate(" in exprs
            assert "ridecast_prediction_value_bucket" in exprs
