"""deploy/: manifests load with the kubernetes client's models, and agree with the code;
dashboards and recording rules pass promtool and use only metrics the exporter serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from exporter_support import CONTRACT_LABELS
from kepler_top.cli import build_parser
from kepler_top.kube import RBAC_BY_POD_SOURCE
from kepler_top.exporter.server import parse_listen

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = ["namespace.yaml", "rbac.yaml", "daemonset.yaml", "service.yaml"]
# Apart, so that `kubectl apply -k deploy/` works on a cluster without the Prometheus Operator.
OPERATOR = ["servicemonitor/servicemonitor.yaml"]
EXPORTED = {n.removesuffix("_total") for n in CONTRACT_LABELS} | {
    n + "_total" for n in CONTRACT_LABELS if n.endswith("_total")} | set(CONTRACT_LABELS)
IN_CI = os.environ.get("CI") == "true"


def _docs() -> dict[str, dict]:
    out = {}
    for name in MANIFESTS + OPERATOR:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            out[doc["kind"]] = doc
    return out


def _unknown_fields(data, type_name: str, where: str) -> list[str]:
    """Keys in ``data`` that the model ``type_name`` does not have, recursively."""
    if data is None:
        return []
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        return [u for i, item in enumerate(data)
                for u in _unknown_fields(item, m[1], f"{where}[{i}]")]
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        return [u for k, v in data.items() for u in _unknown_fields(v, m[1], f"{where}.{k}")]
    model = getattr(client.models, type_name, None)
    if model is None:  # str, int, bool, object, datetime
        return []
    by_key = {key: attr for attr, key in model.attribute_map.items()}
    found = [f"{where}.{k}" for k in data if k not in by_key]
    for key, value in data.items():
        if key in by_key:
            found += _unknown_fields(value, model.openapi_types[by_key[key]], f"{where}.{key}")
    return found


@pytest.mark.parametrize("kind, model", [
    ("Namespace", "V1Namespace"), ("ServiceAccount", "V1ServiceAccount"),
    ("ClusterRole", "V1ClusterRole"), ("ClusterRoleBinding", "V1ClusterRoleBinding"),
    ("DaemonSet", "V1DaemonSet"), ("Service", "V1Service"),
])
def test_manifest_loads_with_the_client_model_and_no_unknown_field(kind, model):
    doc = _docs()[kind]
    obj = client.ApiClient()._ApiClient__deserialize(doc, model)
    assert type(obj).__name__ == model and obj.kind == kind
    assert _unknown_fields(doc, model, kind) == []


def test_unknown_field_check_catches_a_typo():
    doc = _docs()["DaemonSet"]
    doc["spec"]["template"]["spec"]["hostPid"] = True
    assert _unknown_fields(doc, "V1DaemonSet", "DaemonSet") == [
        "DaemonSet.spec.template.spec.hostPid"]


def test_rbac_grants_what_the_pod_source_calls_and_no_more():
    """The ClusterRole is exactly the RBAC of the pod source the DaemonSet selects; which
    requests each source makes is checked against a served API in test_kube_apiserver."""
    docs = _docs()
    (container,) = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    pod_source = build_parser().parse_args(container["args"]).pod_source
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in docs["ClusterRole"]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == RBAC_BY_POD_SOURCE[pod_source]
    binding = docs["ClusterRoleBinding"]
    sa = docs["ServiceAccount"]["metadata"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                    "namespace": sa["namespace"]}]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["name"]


def test_daemonset_runs_export_on_the_host_s_proc_and_sys():
    docs = _docs()
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert spec["hostPID"] is True
    args = build_parser().parse_args(c["args"])  # the args are ones kepler-top accepts
    assert args.command == "export"
    assert (args.procfs, args.sysfs) == ("/host/proc", "/host/sys")

    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: (volumes[m["name"]], m["readOnly"]) for m in c["volumeMounts"]}
    assert mounts == {"/host/proc": ("/proc", True), "/host/sys": ("/sys", True)}

    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}

    (port,) = c["ports"]
    assert parse_listen(args.listen[0])[1] == port["containerPort"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # The apiserver names the pods: the host's /var/log is not mounted, not read.
    assert args.pod_logs == "none"


def test_daemonset_runs_with_least_privilege():
    """uid 0 (energy_uj is root's, mode 0400) and nothing else: no capability at all, since
    SYS_PTRACE with hostPID would open every root process's /proc/PID/root, i.e. the host."""
    spec = _docs()["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsUser"] == 0 and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}  # and nothing added
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "securityContext" not in spec or not spec["securityContext"].get("privileged")
    assert all(m["readOnly"] is True for m in c["volumeMounts"])
    assert not spec.get("hostNetwork") and not spec.get("hostIPC")
    assert {v["hostPath"]["path"] for v in spec["volumes"]} == {"/proc", "/sys"}
    # The comment keeps the one exception and the cost in view.
    text = (DEPLOY / "daemonset.yaml").read_text()
    assert "--source rapl-msr" in text and "CAP_SYS_RAWIO" in text and "exe" in text


def test_readiness_waits_for_the_first_interval():
    """/healthz is 503 until the first interval (the export default, 5 s) is measured."""
    (c,) = _docs()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    interval = build_parser().parse_args(c["args"]).interval or 5.0
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready.get("initialDelaySeconds", 0) > interval
    assert ready["periodSeconds"] <= interval
    # Liveness gives a start-up of three intervals before it may restart the pod.
    assert live["initialDelaySeconds"] + live["periodSeconds"] > 3 * interval


def test_service_and_servicemonitor_reach_the_daemonset_s_port():
    docs = _docs()
    pod = docs["DaemonSet"]["spec"]["template"]
    svc, mon = docs["Service"], docs["ServiceMonitor"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (sport,) = svc["spec"]["ports"]
    assert sport["targetPort"] == pod["spec"]["containers"][0]["ports"][0]["name"]
    # ServiceMonitor is a CRD: no client model, so its few fields are checked by hand.
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(mon) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(mon["spec"]) == {"selector", "endpoints"}
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = mon["spec"]["endpoints"]
    assert set(ep) <= {"port", "path", "interval", "scheme", "scrapeTimeout"}
    assert (ep["port"], ep["path"]) == (sport["name"], "/metrics")
    namespaces = {d["metadata"].get("namespace") for d in docs.values()} - {None}
    assert namespaces == {docs["Namespace"]["metadata"]["name"]}


def test_kustomization_and_containerfile():
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kust["resources"] == MANIFESTS
    operator = yaml.safe_load((DEPLOY / "servicemonitor" / "kustomization.yaml").read_text())
    assert ["servicemonitor/" + r for r in operator["resources"]] == OPERATOR
    recipe = (DEPLOY / "Containerfile").read_text()
    assert re.search(r"^RUN pip install .*/src", recipe, re.M)
    assert 'ENTRYPOINT ["kepler-top"]' in recipe and 'CMD ["export"]' in recipe
    # The base image by an exact tag, and root said on purpose, with the reason above it.
    (base,) = re.findall(r"^FROM (\S+)", recipe, re.M)
    assert re.fullmatch(r"docker\.io/library/python:3\.\d+\.\d+-slim-\w+", base)
    assert re.search(r"^USER 0$", recipe, re.M) and "energy_uj" in recipe


def test_build_context_leaves_out_git_venv_and_caches():
    """The Containerfile builds from the root; podman and docker both read .dockerignore."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert {".git", ".venv", "**/__pycache__"} <= set(patterns)
    needed = ["pyproject.toml", "kepler_top", "backends", "exporter", "README.md"]
    assert not [n for n in needed if any(p.strip("*/") == n for p in patterns)]


# Dashboards ---------------------------------------------------------------------------------

DASHBOARDS = {"Power Monitoring / Overview": "power-monitoring-overview.json",
              "Power Monitoring / Namespace": "power-monitoring-namespace.json"}
SUBSTITUTE = {"__rate_interval": "2m", "__range": "1h", "__interval": "30s"}


def _dashboard(title: str) -> dict:
    doc = json.loads((DEPLOY / "grafana" / DASHBOARDS[title]).read_text())
    assert doc["title"] == title
    return doc


def dashboard_queries(doc: dict) -> list[str]:
    """Every target's PromQL, with Grafana's variables replaced by values of their kind."""
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    names = {v["name"] for v in doc["templating"]["list"]}
    for expr in exprs:
        for var in re.findall(r"\$\{?(\w+)\}?", expr):
            assert var in SUBSTITUTE or var in names, f"{var} is not a variable: {expr}"
    return [re.sub(r"\$\{?(\w+)\}?",
                   lambda m: SUBSTITUTE.get(m[1], "package" if m[1] == "zone" else ".*"), e)
            for e in exprs]


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(kepler_[a-z_]+)\b", expr))


def _promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run([tool, *args], capture_output=True, text=True)


def test_recording_rules_pass_promtool_and_use_exported_metrics():
    path = DEPLOY / "prometheus" / "kepler-top-rules.yaml"
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    records = {r["record"] for r in rules}
    assert {"namespace_zone:kepler_pod_cpu_watts:sum",
            "namespace_zone:kepler_pod_cpu_kwh:increase1d"} <= records
    for r in rules:
        assert _metric_names(r["expr"]) <= EXPORTED, r


@pytest.mark.parametrize("title", DASHBOARDS)
def test_every_dashboard_query_passes_promtool_as_a_rule(title, tmp_path):
    queries = dashboard_queries(_dashboard(title))
    assert queries
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    for q in queries:
        assert _metric_names(q) and _metric_names(q) <= EXPORTED, q


def test_overview_shows_source_power_by_zone_and_cpu_info():
    doc = _dashboard("Power Monitoring / Overview")
    used = set().union(*map(_metric_names, dashboard_queries(doc)))
    assert {"kepler_node_power_source_info", "kepler_node_cpu_watts",
            "kepler_node_cpu_active_watts", "kepler_node_cpu_idle_watts",
            "kepler_node_cpu_info"} <= used
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert {"datasource", "node", "zone"} <= set(variables)


def test_namespace_dashboard_ranks_namespaces_and_lists_a_namespace_s_pods():
    doc = _dashboard("Power Monitoring / Namespace")
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert any(e.startswith("topk(10, sum by (pod_namespace)") for e in exprs)
    assert any('pod_namespace=~"$namespace"' in e and "pod_name" in e for e in exprs)
