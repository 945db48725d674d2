"""PromQL in the dashboards and rules evaluates on a real Prometheus scraping a real collector;
promtool and amtool accept the shipped configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.grafana import build
from driftline.alerts.metrics import AlertMetrics
from driftline.detectors.metrics import DetectorMetrics
from driftline.ingest.metrics import CollectorMetrics
from tests import factory
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.deploy.prometheus import Prometheus, needs_prometheus

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"


def tool(name: str, *args: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_checks_config_and_rules(tmp_path: Path) -> None:
    # The token file is compose's secret at run time; promtool wants it to exist.
    (tmp_path / "token").write_text("t0ken\n")
    shipped = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert shipped.count(SECRET_PATH) == 2  # the collector's jobs, not the workers'
    config = tmp_path / "prometheus.yml"
    config.write_text(shipped.replace(SECRET_PATH, str(tmp_path / "token")))
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    out = tool("promtool", "check", "config", str(config))
    assert "SUCCESS" in out and "1 rule files found" in out
    assert "SUCCESS" in tool("promtool", "check", "rules", str(RULES))


SECRET_PATH = "/run/secrets/driftline_metrics_token"


@needs_prometheus
def test_metrics_want_the_token_prometheus_sends(
    scraped: tuple[Prometheus, ServerProcess],
) -> None:
    """/metrics names every project's services, models and costs: with a token file set, only
    a scraper with the token reads it; the real Prometheus above scrapes it with its file."""
    prom, server = scraped
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-it"}
    assert httpx.get(server.url + "/metrics", headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": "Bearer s3cret-metrics-token"}
    answer = httpx.get(server.url + "/metrics", headers=right, timeout=10)
    assert answer.status_code == 200 and "driftline_" in answer.text
    up = wait_for(lambda: prom.api("query", query="up")["result"], "no scrape yet")
    assert up[0]["value"][1] == "1"


def test_amtool_checks_alertmanager_config() -> None:
    out = tool("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in out


def dashboard_promql() -> list[str]:
    exprs = []
    for text in build.render().values():
        for panel in json.loads(text)["panels"]:
            exprs += [t["expr"] for t in panel["targets"] if "expr" in t]
    return [
        e.replace("$project", ".*").replace("$service", ".*").replace("$model", ".*") for e in exprs
    ]


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Prometheus, ServerProcess]]:
    token = tmp_path / "metrics-token"
    token.write_text("s3cret-metrics-token\n")
    server = start_server(tmp_path / "data", env={"DRIFTLINE_METRICS_TOKEN_FILE": str(token)})
    prom = None
    try:
        spans = [factory.span(factory.genai_attrs(), error=i % 5 == 0) for i in range(20)]
        response = httpx.post(
            server.url + "/v1/traces",
            content=factory.request(spans).SerializeToString(),
            headers={**factory.auth(server.ingest_key), **factory.PROTOBUF},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        # The shipped rules, evaluated every second here instead of each group's interval.
        groups = yaml.safe_load(RULES.read_text())["groups"]
        fast = tmp_path / "rules.yml"
        fast.write_text(yaml.safe_dump({"groups": [{**g, "interval": "1s"} for g in groups]}))
        prom = Prometheus(tmp_path / "prom", [server.url.removeprefix("http://")], [fast], token)
        yield prom, server
    finally:
        if prom is not None:
            prom.stop()
        stop_server(server)


@needs_prometheus
def test_promql_evaluates_on_prometheus_scraping_driftline(
    scraped: tuple[Prometheus, ServerProcess],
) -> None:
    prom, _ = scraped

    def stored_calls() -> float:
        result = prom.api("query", query="sum(driftline_llm_calls_total)")["result"]
        return float(result[0]["value"][1]) if result else 0.0

    assert wait_for(stored_calls, "Prometheus never saw the collector's LLM calls") == 20
    time.sleep(3)  # a few scrapes, so rate() has two points
    expressions = dashboard_promql()
    rules = yaml.safe_load(RULES.read_text())["groups"]
    expressions += [r.get("expr") for g in rules for r in g["rules"]]
    assert len(expressions) > 25
    now = str(time.time())
    for expr in expressions:
        prom.api("query", query=expr, time=now)
        prom.api("query_range", query=expr, start=str(time.time() - 60), end=now, step="5")
    recorded = wait_for(
        lambda: prom.api("query", query="driftline:llm_calls:rate5m")["result"],
        "the recording rule never produced the collector's series",
        timeout=20,
    )
    assert recorded[0]["metric"]["service"] == "support-bot"

    def evaluated() -> list[dict]:
        groups = prom.api("rules")["groups"]
        ran = [r for g in groups for r in g["rules"] if r.get("lastEvaluation", "").startswith("2")]
        return ran if len(ran) == sum(len(g["rules"]) for g in rules) else []

    for rule in wait_for(evaluated, "rules never all evaluated", timeout=30):
        assert rule["health"] == "ok", rule


def test_every_metric_named_is_one_driftline_exports() -> None:
    registry = CollectorMetrics().registry
    DetectorMetrics(registry)
    AlertMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        f.name + suffix for f in registry.collect() for suffix in suffixes.get(f.type, ("",))
    }
    rules = yaml.safe_load(RULES.read_text())["groups"]
    text = " ".join(dashboard_promql() + [r["expr"] for g in rules for r in g["rules"]])
    named = set(re.findall(r"(?<![:\w])driftline_\w+", text))
    assert named and named <= exported, named - exported
