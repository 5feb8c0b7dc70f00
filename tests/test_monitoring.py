"""Operations artefacts: Prometheus rules (promtool), Grafana dashboard, runbook and deploy manifests.

Every metric named in monitoring/ or docs/runbook.md must be one gateway/metrics.py exports, every alert must
link to a heading of the runbook, and every log message or command the runbook quotes must exist in the code.
promtool comes from the Debian package `prometheus` (scripts/install-system-deps.sh); without it the promtool
tests are skipped with that reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "gateway-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
KUBERNETES = ROOT / "deploy" / "kubernetes"

SEVERITIES = {"critical", "warning", "info"}
# Log messages the runbook and the alert descriptions quote; the code must emit them verbatim.
LOG_MESSAGES = (
    "Stripe webhook signature verification failed",
    "Webhook rate limit exceeded (429)",
    "request failed outside the middleware stack",
    "missed webhook events found by the watchdog",
    "Stripe API rate limit (429); waiting before the next attempt",
    "Stripe events listing failed",
    "background task failed",
)


# ---------------------------------------------------------------------------------------------- helpers


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def exported_series() -> set[str]:
    """Every series name the metrics of gateway/metrics.py expose (counter `x` -> `x_total`, ...)."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase | metrics.HttpMetrics):
            for family in obj.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard_exprs() -> list[str]:
    return [value for key, value in walk(dashboard()["panels"]) if key == "expr"]


def dashboard_variable_queries() -> list[str]:
    queries = []
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            queries.append(query)
    return queries


def github_slug(heading: str) -> str:
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_text() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in runbook_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        slug = github_slug(match[1])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: install the Debian package `prometheus` (scripts/install-system-deps.sh)")
    return path


# ---------------------------------------------------------------------------------------------- the extractor


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (job) (rate(a_total{status=~"5.."}[5m])) / sum by (job) (rate(a_total[5m]))', {"a_total"}),
        ("histogram_quantile(0.95, sum by (le, route) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("count by (job) (g offset 6h) > 0 and on (job) max(g) == 1 unless on (job) x > 0", {"g", "x"}),
        ('absent(gateway_ready{job="a b"}) or vector(1e3)', {"gateway_ready"}),
        ("a / ignoring (instance) group_left (version) b", {"a", "b"}),
    ],
)
def test_promql_metric_names(expr: str, expected: set[str]) -> None:
    assert promql_metric_names(expr) == expected


def test_exported_series_include_suffixes() -> None:
    series = exported_series()
    assert {
        "stripe_webhook_responses_total",
        "http_request_duration_seconds_bucket",
        "gateway_ready",
        "gateway_build_info",
        "db_pool_in_use",
    } <= series
    assert "stripe_webhook_responses" not in series


# ---------------------------------------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no query checker: load every panel query as a recording rule and check that file."""
    rules = []
    for number, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- metric names


def test_alert_rules_use_only_exported_metrics() -> None:
    known = exported_series()
    for rule in alert_rules():
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} not in gateway/metrics.py"


def test_dashboard_uses_only_exported_metrics() -> None:
    known = exported_series()
    variables = [re.match(r"label_values\((.+),", query) for query in dashboard_variable_queries()]
    exprs = dashboard_exprs() + [match[1] for match in variables if match]
    assert exprs
    for expr in exprs:
        unknown = promql_metric_names(expr) - known
        assert not unknown, f"dashboard query {expr!r}: {sorted(unknown)} not in gateway/metrics.py"


def test_rule_test_series_use_only_exported_metrics() -> None:
    known = exported_series()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for series in case.get("input_series", []):
            name = series["series"].split("{", 1)[0].strip()
            assert name in known, f"{case['name']}: input series {name} not in gateway/metrics.py"


def test_runbook_metrics_exist() -> None:
    known = exported_series()
    families = {name.split("_")[0] + "_" + name.split("_")[1] + "_" for name in known if name.count("_") >= 2}
    pattern = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, families))) + r")[a-z0-9_]*")
    named = set(pattern.findall(runbook_text()))
    assert named, "the runbook names no metric"
    assert not named - known, f"runbook names unknown metrics: {sorted(named - known)}"


# ---------------------------------------------------------------------------------------------- alerts


def test_every_alert_is_documented() -> None:
    anchors = runbook_anchors()
    names = [rule.get("alert") for rule in alert_rules()]
    assert all(names), "alerts.yml holds only alerting rules"
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: labels.severity"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: annotations.{key} missing"
        match = re.fullmatch(r"docs/runbook\.md#([\w-]+)", annotations["runbook_url"])
        assert match, f"{name}: runbook_url must be docs/runbook.md#<anchor>"
        assert match[1] in anchors, f"{name}: no heading of docs/runbook.md has the anchor #{match[1]}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"


def test_runbook_internal_links_resolve() -> None:
    anchors = runbook_anchors()
    links = re.findall(r"\]\(#([^)]+)\)", runbook_text())
    assert links
    broken = sorted(set(links) - anchors)
    assert not broken, f"broken runbook links: {broken}"


# ---------------------------------------------------------------------------------------------- code names


def test_quoted_log_messages_exist_in_code() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "gateway").rglob("*.py"))
    quoted = runbook_text() + RULES.read_text(encoding="utf-8")
    for message in LOG_MESSAGES:
        assert message in quoted, f"{message!r} is no longer quoted by the runbook or alerts"
        assert f'"{message}"' in source, f"{message!r} is quoted in docs or monitoring but not in gateway/"


def runbook_commands() -> list[str]:
    commands = set(re.findall(r"`(gateway [^`]+)`", runbook_text()))
    in_fence = False
    for line in runbook_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif in_fence and line.startswith("gateway "):
            commands.add(line.strip())
    return sorted(c for c in commands if c != "gateway ...")


def test_runbook_commands_parse() -> None:
    from gateway.cli import build_parser

    commands = runbook_commands()
    assert {"gateway events replay --pending", "gateway events reconcile --since 30d"} <= set(commands)
    parser = build_parser()
    top_level = next(a for a in parser._actions if a.dest == "command").choices or {}
    if not {"events", "reservations"} <= set(top_level):
        pytest.skip("the `gateway events` / `gateway reservations` support commands are not registered yet")
    placeholders = {
        "<evt_id>": "evt_1NexampleAbc",
        "<id>": "5f0c6c4e-8f7e-4c47-9a38-8c1a0b3d2e11",
        "cs_...": "cs_test_abc",
        "pi_...": "pi_abc",
    }
    for command in commands:
        argv = command.split()[1:]
        argv = [placeholders.get(arg, arg) for arg in argv]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"the runbook quotes `{command}` but the CLI refuses it (exit {exc.code})")


# ---------------------------------------------------------------------------------------------- dashboard


def test_dashboard_structure() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    titles = {panel["title"] for panel in data["panels"]}
    wanted = {
        "Webhook responses by status",
        "Events by type and outcome",
        "Signature failures by reason",
        "Latency p50 / p95 / p99 by route",
        "Rate limited by policy",
        "Database pool",
        "Ledger rows waiting",
        "Bridge outbox backlog",
        "Readiness by pod",
    }
    assert wanted <= titles, sorted(wanted - titles)
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


# ---------------------------------------------------------------------------------------------- deploy


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def test_deployment_probes_ports_and_security() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "lifecycle" not in container, "the app drains itself on SIGTERM; no preStop hook"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9102}
    env = {e["name"]: e for e in container["env"]}
    assert env["METRICS_HOST"]["value"] == "0.0.0.0"
    assert env["METRICS_PORT"]["value"] == "9102"
    for name in ("DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "JWT_SECRET"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} comes from a Secret"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9102"


def test_service_does_not_expose_metrics() -> None:
    for service in by_kind("Service"):
        for port in service["spec"]["ports"]:
            assert port["port"] != 9102, service["metadata"]["name"]
            assert port.get("targetPort") not in (9102, "metrics"), service["metadata"]["name"]


def test_metrics_port_only_reachable_from_monitoring() -> None:
    (policy,) = by_kind("NetworkPolicy")
    rules = policy["spec"]["ingress"]
    metrics_rules = [r for r in rules if any(p["port"] in (9102, "metrics") for p in r.get("ports", []))]
    assert metrics_rules
    for rule in metrics_rules:
        for source in rule["from"]:
            selector = source["namespaceSelector"]["matchLabels"]
            assert selector == {"kubernetes.io/metadata.name": "monitoring"}
    for rule in rules:
        if rule not in metrics_rules:
            assert all(p["port"] not in (9102, "metrics") for p in rule.get("ports", [])), rule
            assert rule.get("ports"), "every ingress rule names its ports"


def test_migration_job_and_disruption_budget() -> None:
    (job,) = by_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container.get("args") == ["migrate"] or container.get("command", [])[-1:] == ["migrate"]
    assert by_kind("PodDisruptionBudget")


def test_install_script_is_valid_shell() -> None:
    script = ROOT / "scripts" / "install-system-deps.sh"
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    result = subprocess.run(["sh", str(script), "--check"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
