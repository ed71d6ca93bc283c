# One piece (462 lines): the metric-name contract checked everywhere it appears (docs, dashboards,
# alert rules, code, collector config); one table of names feeds every check.
"""deploy/observability and the compose `observability` profile: the metric names contract (the same in
docs/operations.md, the dashboards, the alert rules and, once it exists, parley_common.metrics), the
Grafana dashboards (valid, every query parsed with a real PromQL parser and using only contract
metrics, every datasource provisioned), the OpenTelemetry Collector config (every pipeline component
defined and used, ports that agree with compose, Tempo and .env.example), and Prometheus's config
(`promtool check config` / `check rules` where installed). No Docker engine needed."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from parley_common import metrics
from parley_common.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
DASHBOARDS = OBS / "grafana" / "dashboards"
DOCS = REPO / "docs" / "operations.md"
PROFILE = {"otel-collector", "tempo", "prometheus", "grafana"}
PARLEY_SERVICES = {"auth", "catalog", "session-gateway", "runtime", "speech", "media", "edge-meta"}

# The metric contract: name -> (type, labels). docs/operations.md lists exactly these; the services
# expose them on /metrics. Labels stay low-cardinality (no agent, user or conversation ids).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "parley_http_requests_total": ("counter", ("service", "method", "route", "status")),
    "parley_http_request_duration_seconds": ("histogram", ("service", "method", "route")),
    "parley_ws_connections_active": ("gauge", ("protocol",)),
    "parley_sessions_active": ("gauge", ()),
    "parley_worker_capacity_in_use": ("gauge", ()),
    "parley_turns_total": ("counter", ("outcome",)),
    "parley_turn_latency_seconds": ("histogram", ()),
    "parley_llm_time_to_first_token_seconds": ("histogram", ("provider",)),
    "parley_llm_errors_total": ("counter", ("provider", "code")),
    "parley_bus_request_seconds": ("histogram", ("subject",)),
    "parley_jetstream_consumer_pending": ("gauge", ("stream", "consumer")),
    "parley_rate_limit_rejections_total": ("counter", ("action",)),
    "parley_speech_sessions_active": ("gauge", ()),
    "parley_speech_stt_seconds": ("histogram", ("engine",)),
    "parley_speech_tts_first_chunk_seconds": ("histogram", ("engine",)),
    "parley_speech_errors_total": ("counter", ("engine", "code")),
    "parley_media_calls_active": ("gauge", ()),
    "parley_media_answer_seconds": ("histogram", ()),
    "parley_media_calls_ended_total": ("counter", ("reason",)),
    "parley_gc_seconds_total": ("counter", ("generation",)),
}
# Labels Prometheus adds to every series (target labels), and the histogram bucket label.
TARGET_LABELS = {"job", "instance", "le"}
# Grafana's built-in variables, replaced by a PromQL-valid stand-in before parsing.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


def series_names() -> set[str]:
    """Every series name a query may select: counters and gauges as named, histograms' parts."""
    names = set()
    for name, (kind, _) in METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def contract_labels() -> set[str]:
    return {label for _, labels in METRICS.values() for label in labels} | TARGET_LABELS


# ---- PromQL ------------------------------------------------------------------------------------
def grafana_to_promql(expr: str) -> str:
    for var in GRAFANA_INTERVALS:
        expr = expr.replace(var, "5m")
    expr = re.sub(r"\$\{(\w+)(:\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", "x", expr)
    return expr


def selectors(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) a PromQL expression refers to, from the parsed AST."""
    tree = promql_parser.parse(grafana_to_promql(expr))
    names: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = list(node.matchers.matchers)
            by_name = [m.value for m in matchers if m.name == "__name__"]
            names.add(node.name or (by_name[0] if by_name else "<no name>"))
            labels.update(m.name for m in matchers if m.name != "__name__")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier and node.modifier.matching:
            labels.update(node.modifier.matching.labels)
        return True

    promql_parser.walk(tree, visit)
    return names, labels


def check_query(expr: str, where: str) -> list[str]:
    try:
        names, labels = selectors(expr)
    except (ValueError, SyntaxError) as err:
        return [f"{where}: does not parse: {err}: {expr}"]
    problems = [f"{where}: {n} is not in the metric contract" for n in sorted(names - series_names())]
    problems += [f"{where}: label {label} is not in the contract" for label in labels - contract_labels()]
    if not names:
        problems.append(f"{where}: selects no metric: {expr}")
    return problems


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(parley_turns_totl[5m]))",  # misspelt metric
        "histogram_quantile(0.95, sum by (le) (rate(parley_turn_latency_seconds[5m])))",  # no _bucket
        'sum(parley_sessions_active{agent_id="a1"})',  # a label the contract does not have
        "sum by (user) (parley_sessions_active)",  # grouping by one either
        "sum(rate(parley_turns_total[5m]",  # does not parse
        'sum({__name__="process_cpu_seconds_total"})',  # hidden behind __name__
    ],
)
def test_query_check_is_not_vacuous(expr: str) -> None:
    assert check_query(expr, "probe") != []


# ---- the contract is the same everywhere -------------------------------------------------------
def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The table in docs/operations.md: | `name` | type | `label`, `label` or — | ... |"""
    rows = re.findall(r"^\| `(parley_\w+)` \| (\w+) \| ([^|]*) \|", DOCS.read_text(), flags=re.M)
    out = {}
    for name, kind, labels in rows:
        out[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)))
    return out


def test_docs_state_the_contract() -> None:
    assert documented_metrics() == METRICS


def test_services_expose_the_contract() -> None:
    """parley_common.metrics defines exactly the documented metrics and labels."""

    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            kind = family.type
            name = family.name + ("_total" if kind == "counter" else "")
            found[name] = (kind, tuple(value._labelnames))
    assert found == METRICS


# ---- Grafana -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((OBS / "grafana/provisioning/datasources/datasources.yaml").read_text())
    uids = [d["uid"] for d in doc["datasources"]]
    assert len(uids) == len(set(uids))
    return {d["uid"]: d for d in doc["datasources"]}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    loaded = {p.name: json.loads(p.read_text()) for p in dashboard_files()}
    assert set(loaded) == {"parley-realtime-overview.json", "parley-runtime-fleet.json", "parley-traces.json"}
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboards_are_well_formed(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for file, d in dashboards.items():
        assert d["title"].startswith("Parley / ") and d["schemaVersion"] >= 36, file
        assert d.get("editable") is False, f"{file}: provisioned read-only; edit the JSON"
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{file}: panel ids are unique"
        for p in panels(d):
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, f"{file}: {p['title']}"
            if p["type"] != "row":
                assert p["targets"], f"{file}: {p['title']} has no query"
                refs = [t["refId"] for t in p["targets"]]
                assert len(refs) == len(set(refs)), f"{file}: {p['title']}"
        for link in d.get("links", []):
            target = re.fullmatch(r"/d/([\w-]+)", link["url"])
            assert target and target.group(1) in uids, f"{file}: link {link['url']}"


def test_every_datasource_is_provisioned(
    dashboards: dict[str, dict[str, Any]], datasources: dict[str, dict[str, Any]]
) -> None:
    for file, d in dashboards.items():
        variables = d.get("templating", {}).get("list", [])
        used = [(p["title"], p["datasource"]) for p in panels(d) if p["type"] != "row"]
        used += [
            (f"{p['title']}/{t['refId']}", t["datasource"]) for p in panels(d) for t in p.get("targets", [])
        ]
        used += [(f"${v['name']}", v["datasource"]) for v in variables if "datasource" in v]
        for where, ds in used:
            assert ds["uid"] in datasources, f"{file}: {where} uses {ds}"
            assert ds["type"] == datasources[ds["uid"]]["type"], f"{file}: {where}"


def test_every_query_uses_only_contract_metrics(
    dashboards: dict[str, dict[str, Any]], datasources: dict[str, dict[str, Any]]
) -> None:
    problems: list[str] = []
    counted = 0
    for file, d in dashboards.items():
        for p in panels(d):
            for t in p.get("targets", []):
                kind = datasources[t["datasource"]["uid"]]["type"]
                where = f"{file}: {p['title']}/{t['refId']}"
                if kind == "prometheus":
                    counted += 1
                    problems += check_query(t["expr"], where)
                elif kind == "tempo":
                    assert t["queryType"] == "traceql", where
                    assert t["query"].strip(), where
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
                assert match, f"{file}: ${v['name']}: {query}"
                problems += check_query(match.group(1), f"{file}: ${v['name']}")
                assert match.group(2) in contract_labels(), f"{file}: ${v['name']}"
    assert problems == []
    assert counted >= 30, "the dashboards are mostly Prometheus panels"


def test_dashboards_cover_the_contract(dashboards: dict[str, dict[str, Any]]) -> None:
    used: set[str] = set()
    for d in dashboards.values():
        for p in panels(d):
            for t in p.get("targets", []):
                if "expr" in t:
                    used |= selectors(t["expr"])[0]
    shown = {n for n in METRICS if n in used or any(f"{n}_{s}" in used for s in ("bucket", "sum", "count"))}
    assert shown == set(METRICS), f"not on any dashboard: {set(METRICS) - shown}"


def test_trace_view(dashboards: dict[str, dict[str, Any]]) -> None:
    d = dashboards["parley-traces.json"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["trace_id"]["type"] == "textbox"
    (trace_panel,) = [p for p in panels(d) if p["type"] == "traces"]
    assert trace_panel["targets"][0]["query"] == "$trace_id"
    search = next(p for p in panels(d) if p["type"] == "table")
    assert "resource.service.name" in search["targets"][0]["query"]
    # Service names are what libs/common's telemetry sets: "parley-<service_name>".
    for option in variables["service"]["options"]:
        assert option["value"].startswith("parley-"), option


def test_grafana_provisioning_matches_compose(
    compose: dict[str, Any], datasources: dict[str, dict[str, Any]]
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/observability/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((OBS / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    (provider,) = providers["providers"]
    assert mounts["./deploy/observability/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DASHBOARDS / Path(home).name).is_file()
    for ds in datasources.values():
        url = urlsplit(ds["url"])
        assert url.hostname in compose["services"], ds["uid"]
    assert urlsplit(datasources["parley-prometheus"]["url"]).port == 9090
    tempo = yaml.safe_load((OBS / "tempo.yaml").read_text())
    assert urlsplit(datasources["parley-tempo"]["url"]).port == tempo["server"]["http_listen_port"]


# ---- OpenTelemetry Collector ---------------------------------------------------------------------
# Component types of the contrib distribution this config relies on (a typo such as `memorylimiter`
# is an unknown type for the collector, and here).
COLLECTOR_TYPES = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp", "otlphttp", "debug"},
    "extensions": {"health_check"},
}


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    doc = yaml.safe_load((OBS / "otel-collector.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def collector_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for section, known in COLLECTOR_TYPES.items():
        for component in doc.get(section, {}):
            if component.split("/", 1)[0] not in known:
                problems.append(f"{section}: unknown component type {component}")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in doc["service"]["pipelines"].items():
        assert name.split("/", 1)[0] in {"traces", "metrics", "logs"}, name
        for section in used:
            if section != "processors" and not pipeline.get(section):
                problems.append(f"pipeline {name} has no {section}")
            for component in pipeline.get(section, []):
                used[section].add(component)
                if component not in (doc.get(section) or {}):
                    problems.append(f"pipeline {name}: {section[:-1]} {component} is not defined")
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors and processors[0] != "memory_limiter":
            problems.append(f"pipeline {name}: memory_limiter must come first")
    for section, names in used.items():
        for unused in set(doc.get(section) or {}) - names:
            problems.append(f"{section}: {unused} is defined but in no pipeline")
    for ext in doc["service"].get("extensions", []):
        if ext not in (doc.get("extensions") or {}):
            problems.append(f"extension {ext} is not defined")
    return problems


def test_collector_config_is_consistent(collector: dict[str, Any]) -> None:
    assert collector_problems(collector) == []
    assert "traces" in collector["service"]["pipelines"]


@pytest.mark.parametrize(
    ("section", "change"),
    [
        ("service", lambda d: d["service"]["pipelines"]["traces"]["exporters"].append("otlp/jaeger")),
        ("processors", lambda d: d["processors"].update({"memorylimiter": {}})),
        ("exporters", lambda d: d["exporters"].update({"debug": {}})),
        ("service", lambda d: d["service"]["pipelines"]["traces"]["processors"].reverse()),
    ],
)
def test_collector_check_is_not_vacuous(collector: dict[str, Any], section: str, change: Any) -> None:
    broken = copy.deepcopy(collector)
    change(broken)
    assert collector_problems(broken) != [], section


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_collector_ports_agree_with_compose_tempo_and_env_example(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    services = compose["services"]
    # Parley -> collector: the endpoint .env.example suggests is the collector's OTLP/HTTP receiver.
    example = re.search(r"e\.g\. (http://\S+)", (REPO / ".env.example").read_text())
    assert example, ".env.example shows an OTLP endpoint"
    url = urlsplit(example.group(1))
    assert url.hostname == "otel-collector" and url.hostname in services
    assert port_of(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]) == url.port
    # telemetry.py appends /v1/traces itself: the setting is the base URL, no path.
    assert url.path in {"", "/"}
    # collector -> Tempo
    exporter = collector["exporters"]["otlp/tempo"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    tempo = yaml.safe_load((OBS / "tempo.yaml").read_text())
    assert host == "tempo" and host in services
    assert int(port) == port_of(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
    # compose mounts the files where the commands read them
    otel = services["otel-collector"]
    (config_arg,) = [a for a in otel["command"] if a.startswith("--config=")]
    assert f"./deploy/observability/otel-collector.yaml:{config_arg.split('=', 1)[1]}:ro" in otel["volumes"]
    tempo_svc = services["tempo"]
    (tempo_arg,) = [a for a in tempo_svc["command"] if a.startswith("-config.file=")]
    assert f"./deploy/observability/tempo.yaml:{tempo_arg.split('=', 1)[1]}:ro" in tempo_svc["volumes"]
    storage = tempo["storage"]["trace"]
    writable = [*tempo_svc.get("tmpfs", []), *(v.split(":")[1] for v in tempo_svc["volumes"] if ":" in v)]
    for path in (storage["wal"]["path"], storage["local"]["path"]):
        assert any(path.startswith(w.split(":")[0] + "/") for w in writable), path


def test_tracing_is_off_by_default(compose: dict[str, Any]) -> None:
    """`make run` and compose export nothing unless PARLEY_OTLP_ENDPOINT is set."""
    assert compose["x-parley-env"]["PARLEY_OTLP_ENDPOINT"] == "${PARLEY_OTLP_ENDPOINT:-}"
    assert CommonSettings.model_fields["otlp_endpoint"].default is None


# ---- Prometheus --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    doc = yaml.safe_load((OBS / "prometheus/prometheus.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_prometheus_scrapes_every_service(prometheus_config: dict[str, Any], compose: dict[str, Any]) -> None:
    jobs = {j["job_name"]: j for j in prometheus_config["scrape_configs"]}
    assert set(jobs) == PARLEY_SERVICES
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name] and name in compose["services"], name
        assert sd["port"] == int(compose["x-parley-env"]["PARLEY_HTTP_PORT"]), name
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/observability/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for rule_file in prometheus_config["rule_files"]:
        assert (OBS / "prometheus" / rule_file).is_file(), rule_file


def test_alert_rules_use_only_contract_metrics() -> None:
    doc = yaml.safe_load((OBS / "prometheus/alerts.yml").read_text())
    problems = []
    rules = [r for group in doc["groups"] for r in group["rules"]]
    assert rules
    for rule in rules:
        problems += check_query(rule["expr"], rule.get("alert") or rule.get("record"))
    assert problems == []


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")
    return found


def test_promtool_accepts_the_config_and_rules() -> None:
    config = subprocess.run(
        [promtool(), "check", "config", str(OBS / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        [promtool(), "check", "rules", str(OBS / "prometheus/alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_check_is_not_vacuous(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text((OBS / "prometheus/alerts.yml").read_text().replace("for: 2m", "for: 2 minutes", 1))
    result = subprocess.run(
        [promtool(), "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
