"""deploy/prometheus and deploy/grafana: promtool on the config, rules and their unit tests,
`promtool check metrics` on a live worker, a real Prometheus scraping a real worker and
evaluating the rules, and the dashboard's data source and per-key queries.

The promtool and Prometheus tests need the Debian package ``prometheus`` (``.ci/run``
installs it). Without it they skip, except under CI, where a missing binary is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from service.core.estimate import DrinkEstimate, Estimate
from service.metrics import Metrics, PrometheusObserver
from service.ports import QueueDepth
from service.readiness import Health
from service.tools.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "wait-times.json"
GRAFANA_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
RULES = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
ALERTS = {r["alert"] for g in RULES for r in g["rules"] if "alert" in r}
RECORDED = {r["record"] for g in RULES for r in g["rules"] if "record" in r}
# The dashboard reads every worker's per-key gauges through these (see alerts.yml).
FRESHEST = {
    "wait_times_average_wait_seconds": "wait_times:average_wait_seconds:freshest",
    "wait_times_window_samples": "wait_times:window_samples:freshest",
}
WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))
# Series the dashboard and rules may use that the worker does not export itself.
EXTERNAL_SERIES = {
    "up",
    "aws_sqs_approximate_number_of_messages_visible_maximum",
    "aws_sqs_approximate_age_of_oldest_message_maximum",
}


def require_binary(name: str) -> str:
    """The binary's path; a missing one skips locally and fails under CI."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} not found: install the Debian package `prometheus` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=PROMETHEUS_DIR,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def exported_metric_names() -> set[str]:
    """Every series name the worker's registry can export."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


@pytest.mark.integration
def test_promtool_check_config_and_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERTS) + len(RECORDED)} rules found" in rules.stdout


@pytest.mark.integration
def test_promtool_unit_tests_cover_every_alert_and_recording_rule() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    # Each alert fires in some case and stays silent in another.
    assert {case["alertname"] for case in cases if case.get("exp_alerts")} == ALERTS
    assert {case["alertname"] for case in cases if not case.get("exp_alerts")} == ALERTS
    assert "WaitTimesNoAveragesPublished" in ALERTS
    # Each recording rule's series is checked by value somewhere.
    checked = " ".join(case["expr"] for test in tests for case in test.get("promql_expr_test", []))
    assert {name for name in RECORDED if name in checked} >= set(FRESHEST.values())


def series_names(expr: str) -> set[str]:
    """Metric names (recorded ones included) an expression reads."""
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^]]*\]', " ", expr)
    bare = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    keywords = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
    names = set(re.findall(r"(?<![\w:])([a-z_][a-z0-9_:]*)(?![\w:])(?!\s*\()", bare))
    return names - keywords


@pytest.mark.integration
def test_rules_and_dashboard_use_only_series_that_exist(tmp_path: Path) -> None:
    known = exported_metric_names() | EXTERNAL_SERIES | RECORDED
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [r["expr"] for g in RULES for r in g["rules"]]
    for expr in expressions:
        names = series_names(expr)
        assert names, expr
        assert names <= known, f"unknown series {names - known} in {expr}"
    # The dashboard's PromQL parses: load it as recording rules (Grafana variables filled in).
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:panel{i}",
                        "expr": expr.replace("$__rate_interval", "1m").replace("$tenant", ".*"),
                    }
                    for i, expr in enumerate(expressions)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def provisioned(emulator: Emulator) -> dict[str, str]:
    """A reset, provisioned emulator; the environment a worker needs to reach it."""
    emulator.reset()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": emulator.url,
            "AWS_REGION": "us-east-1",
            "WAIT_TIMES_LOG_FORMAT": "json",
            "WAIT_TIMES_RECEIVE_WAIT_SECONDS": "1",
            "WAIT_TIMES_METRICS_HOST": "127.0.0.1",
        }
    )
    subprocess.run([WAIT_TIMES, "provision"], env=env, check=True, capture_output=True, timeout=60)
    return env


@pytest.fixture(scope="module")
def worker(provisioned: dict[str, str]) -> Iterator[int]:
    """A running `wait-times run` with averages to show; yields its metrics port."""
    port = free_port()
    env = dict(provisioned, WAIT_TIMES_METRICS_PORT=str(port))
    process = subprocess.Popen(
        [WAIT_TIMES, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "worker ready")
        subprocess.run(
            [WAIT_TIMES, "play", "--orders", "20", "--speed", "0", "--rate", "5"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(
            lambda: (
                "wait_times_average_wait_seconds{" in get(f"http://127.0.0.1:{port}/metrics")[1]
            ),
            30,
            "averages on /metrics",
        )
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            _, stderr = process.communicate()
        assert code == 0, stderr


@pytest.mark.integration
def test_promtool_check_metrics_on_a_live_worker(worker: int) -> None:
    status, body = get(f"http://127.0.0.1:{worker}/metrics")
    assert status == 200
    result = promtool("check", "metrics", stdin=body)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.integration
def test_promtool_check_metrics_on_every_series() -> None:
    """Every family with a sample, whether or not the live worker above has exported it
    (the estimate's series need tenants with orders scored, dropped, unscored)."""
    metrics = Metrics()
    observer = PrometheusObserver(metrics, Health(metrics))
    observer.flush_started(3, 1)
    observer.flush_finished(
        processed=2, ignored=1, deleted=3, seconds=0.1, windows_tracked=1, tenants_tracked=1
    )
    observer.average_published(("NYC", "Latte"), 61.5, 3)
    observer.tenant_estimate(Estimate("NYC", 1_796_126_405, 3, {"Latte": DrinkEstimate(90, 140)}))
    observer.estimate_scored("NYC", 30.0, True)
    observer.estimate_unscored("NYC", "no_estimate")
    observer.tenant_orders_dropped(1)
    observer.queue_depth("main", QueueDepth(visible=7, in_flight=2))
    body = generate_latest(metrics.registry).decode()
    assert "wait_times_estimate_error_seconds_bucket{" in body
    result = promtool("check", "metrics", stdin=body)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    status, body = get(url)
    if status != 200:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success"
    return list(answer["data"]["result"])


@pytest.mark.integration
def test_prometheus_scrapes_the_worker(worker: int, tmp_path: Path) -> None:
    binary = require_binary("prometheus")
    # The compose configuration, with the replicas' DNS discovery swapped for the worker here.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "wait-times")
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{worker}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 30, "Prometheus ready")
        wait_for(
            lambda: bool(query(port, "wait_times_average_wait_seconds")),
            30,
            "averages in Prometheus",
        )
        averages = query(port, "wait_times_average_wait_seconds")
        assert {s["metric"]["job"] for s in averages} == {"wait-times"}
        assert {s["metric"]["tenant"] for s in averages} <= {"NYC", "LDN", "SYD"}
        assert all(float(s["value"][1]) > 0 for s in averages)
        up = query(port, 'up{job="wait-times"}')
        assert [s["value"][1] for s in up] == ["1"]
        assert query(port, "wait_times_messages_processed_total")[0]["value"][1] != "0"
        assert query(port, "wait_times_ready")[0]["value"][1] == "1"
        status, body = get(f"http://127.0.0.1:{port}/api/v1/rules")
        assert status == 200
        loaded = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
        assert loaded == ALERTS | RECORDED
        # The recording rules run on a real Prometheus: one worker, so the freshest average
        # of each key is that worker's.
        wait_for(
            lambda: bool(query(port, "wait_times:average_wait_seconds:freshest")),
            30,
            "the freshest averages recorded",
        )
        freshest = {
            (s["metric"]["tenant"], s["metric"]["drink"]): s["value"][1]
            for s in query(port, "wait_times:average_wait_seconds:freshest")
        }
        latest = {
            (s["metric"]["tenant"], s["metric"]["drink"]): s["value"][1]
            for s in query(port, "wait_times_average_wait_seconds")
        }
        assert freshest == latest
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.communicate()


def datasource_references(node: Any) -> list[Any]:
    """Every "datasource" value anywhere in the dashboard."""
    found: list[Any] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            found.extend(datasource_references(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(datasource_references(item))
    return found


@pytest.mark.unit
def test_dashboard_takes_its_data_source_from_a_variable() -> None:
    """Imported into Amazon Managed Grafana, a hard-coded uid names a data source that does
    not exist there; a data source variable lets the importer pick its own."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["templating"]["list"][0]["name"] == "datasource"  # before what uses it
    references = datasource_references(dashboard)
    assert len(references) >= 1 + len(dashboard["panels"])
    assert all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in references), [
        ref for ref in references if ref != {"type": "prometheus", "uid": "${datasource}"}
    ]
    # Compose provisioning: the variable's default is the default Prometheus data source.
    (provisioned,) = yaml.safe_load((GRAFANA_DATASOURCES / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert provisioned["type"] == variables["datasource"]["query"]
    assert provisioned["isDefault"] is True


@pytest.mark.unit
def test_dashboard_reads_per_key_values_from_the_freshest_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in series_names(target["expr"])
    }
    # Never a worker's per-key gauge aggregated across workers (max by mixed stale values).
    assert used.isdisjoint(FRESHEST), used & set(FRESHEST)
    assert set(FRESHEST.values()) <= used
    assert set(FRESHEST.values()) <= RECORDED
    for panel in dashboard["panels"]:
        if any(name in target["expr"] for target in panel["targets"] for name in FRESHEST.values()):
            assert "changed" in panel.get("description", ""), panel["title"]
    tenant = next(v for v in dashboard["templating"]["list"] if v["name"] == "tenant")
    assert FRESHEST["wait_times_average_wait_seconds"] in tenant["definition"]
