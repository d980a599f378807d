"""The Helm chart (charts/distcache) rendered offline with the project's pinned helm.

- manifests/ (rendered from the chart by scripts/manifests.py) does not drift from it;
- every ci/ scenario passes `helm lint --strict`;
- bad values fail at render time with a message naming the parameter (values.schema.json and
  the chart's own checks);
- what each switch renders: monitors only with the Prometheus Operator's API or when forced,
  namespace-scoped RBAC, kopf peering for two replicas, dashboards and alert rules from files.

Needs helm (scripts/helm.sh builds it; `make test` does so first): skipped, naming helm, when
it is not built. The server-side checks (`kubectl apply --dry-run=server`, install, upgrade,
uninstall) are in e2e/test_chart.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "distcache"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
HELM_VERSION = "v4.3.2"


def helm_path() -> str | None:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    cache = Path(os.environ.get("DISTCACHE_DEV_CACHE", "/var/cache/distcache"))
    built = cache / "bin" / f"helm-{HELM_VERSION}"
    if (built / ".done").exists() and (built / "helm").exists():
        return str(built / "helm")
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    path = helm_path()
    if not path:
        pytest.skip(f"helm {HELM_VERSION} is not built: scripts/helm.sh builds it "
                    "(make test and make lint do)")
    return path


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(helm: str, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    out = run(helm, "template", "rel", str(chart), "--namespace", "ns", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} in {kinds(docs)}"
    return found[0]


def operator_command(docs: list[dict[str, Any]]) -> str:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return "\n".join(container.get("command", []))


# -- one source of truth -----------------------------------------------------------------------

def test_manifests_are_rendered_from_the_chart(helm: str) -> None:
    proc = run(sys.executable, str(ROOT / "scripts" / "manifests.py"), "--check",
               check=False)
    assert proc.returncode == 0, f"manifests/ drifted from the chart:\n{proc.stdout}{proc.stderr}"


# -- lint and values ---------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_scenario_passes_helm_lint(helm: str, scenario: Path) -> None:
    run(helm, "lint", "--strict", str(CHART), "-f", str(scenario))


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "operator.replicaCount=-1"], "replicaCount"),
    (["--set", "operator.replicas=2"], "replicas"),  # unknown key: a typo of replicaCount
    (["--set", "cache.replicas=lots"], "replicas"),
    (["--set", "operator.image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "cache.maxMemory=lots"], "maxMemory"),
    (["--set", "cache.name=Not_A_Name"], "name"),
    (["--set", "metrics.serviceMonitor.interval=soon"], "interval"),
    (["--set", "cache.tls.secretName=Bad_Name"], "secretName"),
    (["--set", "cache.tls.certManager.enabled=true"], "issuerRef"),
    (["--set", "cache.tls.certManager.enabled=true", "--set", "cache.tls.enabled=false",
      "--set", "cache.tls.certManager.issuerRef.name=ca"], "enabled"),
    (["--set", "cache.enabled=true", "--set", "cache.replicas=2",
      "--set", "cache.replicationFactor=3"], "replicationFactor (3) must not exceed"),
    (["--set", "cache.enabled=true", "--set", "operator.watchNamespaces={other}"],
     "leaves out"),
], ids=["negative-replicas", "unknown-key", "wrong-type", "enum", "quantity", "dns-name",
        "duration", "tls-secret-name", "cert-manager-without-issuer",
        "cert-manager-without-tls", "rf-over-replicas",
        "cache-outside-watched"])
def test_bad_values_fail_naming_the_parameter(helm: str, args: list[str], message: str) -> None:
    proc = run(helm, "template", "rel", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"accepted: {args}"
    assert message in proc.stderr, proc.stderr


# -- what the switches render ------------------------------------------------------------------

def test_defaults_render_the_operator_only(helm: str) -> None:
    docs = [d for d in render(helm) if d["kind"] != "ConfigMap"]  # dashboards, if any
    assert kinds(docs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                           "ServiceAccount"]
    deploy = one(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deploy["metadata"]["name"] == "rel-distcache-operator"
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert "command" not in container  # the image's entrypoint: standalone, every namespace
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "ns",
                                    "name": "rel-distcache-operator"}]


def test_rbac_grants_no_wildcards_and_no_deletes_beyond_pdbs(helm: str) -> None:
    rules = one(render(helm), "ClusterRole")["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        if "delete" in rule["verbs"]:  # only what a spec switch turns off
            assert rule["resources"] in (["poddisruptionbudgets"], ["servicemonitors"],
                                         ["networkpolicies"]), rule
    assert not any("customresourcedefinitions" in r["resources"] for r in rules)


def test_monitors_only_with_the_prometheus_operator_or_when_forced(helm: str) -> None:
    assert "ServiceMonitor" not in kinds(render(helm))
    detected = kinds(render(helm, "--api-versions", "monitoring.coreos.com/v1"))
    assert "ServiceMonitor" in detected and "PodMonitor" in detected
    forced = kinds(render(helm, "--set", "metrics.serviceMonitor.enabled=true"))
    assert "ServiceMonitor" in forced and "PodMonitor" in forced
    off = render(helm, "--api-versions", "monitoring.coreos.com/v1",
                 "--set", "metrics.serviceMonitor.autodetect=false")
    assert "ServiceMonitor" not in kinds(off)


def test_watch_namespaces_bind_the_role_per_namespace(helm: str) -> None:
    docs = render(helm, "--set", "operator.watchNamespaces={a,b}")
    assert "ClusterRoleBinding" not in kinds(docs)
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    command = operator_command(docs)
    assert '"--namespace=a", "--namespace=b"' in command and "--all-namespaces" not in command
    assert "--standalone" in command


def test_two_replicas_use_kopf_peering(helm: str) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "two-replicas-values.yaml"))
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    peering = one(docs, "ClusterKopfPeering")
    command = operator_command(docs)
    assert f"--peering={peering['metadata']['name']}" in command
    assert "--standalone" not in command and "--priority=" in command
    rules = one(docs, "ClusterRole")["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"]} in rules
    scoped = render(helm, "-f", str(CHART / "ci" / "two-replicas-values.yaml"),
                    "--set", "operator.watchNamespaces={a}")
    assert one(scoped, "KopfPeering")["metadata"]["namespace"] == "a"


def test_the_launcher_is_valid_python(helm: str) -> None:
    for args in ([], ["--set", "operator.replicaCount=2"],
                 ["--set", "operator.watchNamespaces={a}"]):
        docs = render(helm, "--set", "operator.healthPort=8081", *args)
        command = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:2] == ["python3", "-c"]
        compile(command[2], "launcher", "exec")


def test_cache_instance(helm: str) -> None:
    docs = render(helm, "--set", "cache.enabled=true", "--set", "cache.name=shop",
                  "--set", "cache.replicas=5", "--set", "cache.maxMemory=256Mi")
    dc = one(docs, "DistCache")
    assert dc["metadata"] == {**dc["metadata"], "name": "shop", "namespace": "ns"}
    assert dc["spec"]["replicas"] == 5 and dc["spec"]["maxMemory"] == "256Mi"
    assert dc["spec"]["tls"] == {"enabled": True}  # the operator issues the certificate
    # helm uninstall: a pre-delete hook deletes the DistCache while the operator still runs.
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    compile(script, "cleanup", "exec")
    assert "/namespaces/%s/distcaches/%s" in script and '"ns", "shop"' in script
    role = one(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["distcache.io"], "resources": ["distcaches"],
                              "verbs": ["get", "delete"]}]
    assert all(d["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"
               for d in docs if d["kind"] in ("Role", "RoleBinding", "Job")
               or d["metadata"]["name"].endswith("-cleanup"))
    plain = one(render(helm, "--set", "cache.enabled=true", "--set", "cache.tls.enabled=false"),
                "DistCache")
    assert plain["spec"]["tls"] == {"enabled": False}
    tls = one(render(helm, "-f", str(CHART / "ci" / "tls-secret-values.yaml")), "DistCache")
    assert tls["spec"]["tls"] == {"enabled": True, "secretName": "cache-tls"}
    # cert-manager: the operator makes the Certificate from the DistCache's issuerRef.
    docs = render(helm, "-f", str(CHART / "ci" / "cert-manager-values.yaml"))
    assert "Certificate" not in kinds(docs)
    assert one(docs, "DistCache")["spec"]["tls"] == {
        "enabled": True,
        "issuerRef": {"name": "distcache-ca", "kind": "Issuer", "group": "cert-manager.io"}}
    monitored = one(render(helm, "--set", "cache.enabled=true",
                           "--set", "cache.metrics.serviceMonitor.enabled=true",
                           "--set", "metrics.serviceMonitor.labels.release=prom"), "DistCache")
    assert monitored["spec"]["metrics"] == {"serviceMonitor": {
        "enabled": True, "interval": "30s", "labels": {"release": "prom"}}}


def test_dashboards_and_rules_come_from_files(helm: str, tmp_path: Path) -> None:
    chart = tmp_path / "distcache"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "dashboards", ignore_errors=True)
    (chart / "dashboards").mkdir()
    (chart / "dashboards" / "distcache_cache.json").write_text('{"title": "DistCache"}\n')
    (chart / "files").mkdir(exist_ok=True)
    (chart / "files" / "prometheus-rules.yaml").write_text(
        "groups:\n  - name: distcache\n    rules:\n      - alert: DistCacheNodeDown\n"
        "        expr: up == 0\n")
    docs = render(helm, "--set", "metrics.serviceMonitor.enabled=true", chart=chart)
    boards = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(boards) == 1
    assert boards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert boards[0]["data"] == {"distcache_cache.json": '{"title": "DistCache"}'}
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"][0]["alert"] == "DistCacheNodeDown"
    # Without the Prometheus Operator's API the rule is not rendered; dashboards still are.
    plain = render(helm, chart=chart)
    assert "PrometheusRule" not in kinds(plain) and "ConfigMap" in kinds(plain)


def test_notes_say_how_to_reach_the_cache_and_read_the_key(helm: str) -> None:
    out = run(helm, "install", "rel", str(CHART), "--dry-run=client", "--namespace", "ns",
              "--set", "cache.enabled=true", "--set", "cache.name=shop").stdout
    notes = out[out.index("NOTES:"):]
    assert "kubectl -n ns get secret shop-api-key -o jsonpath='{.data.api-key}'" in notes
    assert "port-forward svc/shop 8080:8080" in notes
    assert "get secret shop-tls -o jsonpath='{.data.ca\\.crt}'" in notes
    assert "curl --cacert ca.crt" in notes
