"""spec.metrics.serviceMonitor on a real API server: without the Prometheus Operator's CRDs
the cache runs (not Degraded) with an Event and a note; once the real CRDs are applied
(from the prometheus-operator Go module, scripts/prometheus-operator-crds.sh) the operator
creates a ServiceMonitor that the CRD's schema accepts, that selects exactly the headless
Service, whose port is the pods' port, and whose key and CA, used the way Prometheus uses
them (bearer token, CA, server name), scrape every pod's /metrics. Drift is put back and
switching it off removes it.

No Prometheus runs here: the scrape is done by the test with the ServiceMonitor's own
settings. Skipped without a cluster, the operator, or the Go toolchain to fetch the CRDs.
"""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess

import pytest
from kubehelp import REPO
from ophelp import Forward, condition, distcache, k, kj, settled, wait_established, wait_for
from tlshelp import dc_yaml, operator_ready

NAME = "mon"
CRD = "servicemonitors.monitoring.coreos.com"
MONITOR = ("  metrics:\n    serviceMonitor:\n      enabled: true\n      interval: 15s\n"
           "      labels: {release: prom}\n")


def served() -> bool:
    return k("get", "crd", CRD, namespace=None, check=False).returncode == 0


def scrape(pod: str, token: str | None, ca_pem: str, server_name: str) -> tuple[int, str]:
    """GET /metrics from `pod` as Prometheus would with this endpoint's settings."""
    fwd = Forward(f"pod/{pod}")
    try:
        port = int(fwd.url().rsplit(":", 1)[1])
        ctx = ssl.create_default_context(cadata=ca_pem)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_name) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {server_name}\r\n{auth}"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    finally:
        fwd.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


@pytest.fixture(scope="module")
def mon() -> str:
    operator_ready()
    proc = subprocess.run([str(REPO / "scripts" / "prometheus-operator-crds.sh")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"the Prometheus Operator's CRDs are not available: {proc.stderr.strip()}")
    return proc.stdout.strip()


def test_without_the_crd_the_cache_runs_with_a_note(mon: str) -> None:
    if served():
        pytest.skip("the ServiceMonitor CRD is already installed here (never deleted by tests)")
    k("apply", "-f", "-", input=dc_yaml(NAME, 3, MONITOR))
    dc = wait_for("mon Running", lambda: settled(NAME, 3), 240, every=2)
    assert condition(dc, "Degraded")["status"] == "False"
    assert "no ServiceMonitor" in condition(dc, "Available")["message"]
    events = k("get", "events", "--field-selector",
               f"involvedObject.name={NAME},reason=ServiceMonitorUnavailable").stdout
    assert "monitoring.coreos.com/v1" in events


def test_service_monitor_selects_the_pods_and_scrapes_with_key_and_ca(mon: str) -> None:
    k("apply", "--server-side", "-f", mon, namespace=None, timeout=180)
    wait_established(CRD)
    k("apply", "-f", "-", input=dc_yaml(NAME, 3, MONITOR))
    wait_for("mon Running", lambda: settled(NAME, 3), 240, every=2)
    sm = wait_for("the ServiceMonitor", lambda: (
        kj("get", "servicemonitor", NAME) if k("get", "servicemonitor", NAME,
                                               check=False).returncode == 0 else None),
        90, every=2)
    uid = distcache(NAME)["metadata"]["uid"]
    assert [o["uid"] for o in sm["metadata"]["ownerReferences"]] == [uid]
    assert sm["metadata"]["labels"]["release"] == "prom"
    # The selector picks exactly the headless Service, which lists every pod.
    match = ",".join(f"{key}={v}" for key, v in sm["spec"]["selector"]["matchLabels"].items())
    services = kj("get", "services", "-l", match)["items"]
    assert [s["metadata"]["name"] for s in services] == [f"{NAME}-peers"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in [p["name"] for p in services[0]["spec"]["ports"]]
    slices = kj("get", "endpointslices", "-l", f"kubernetes.io/service-name={NAME}-peers")
    targets = sorted(e["targetRef"]["name"] for s in slices["items"] for e in s["endpoints"])
    assert targets == [f"{NAME}-{i}" for i in range(3)]
    for pod in targets:
        ports = kj("get", "pod", pod)["spec"]["containers"][0]["ports"]
        assert ep["port"] in [p["name"] for p in ports]
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [distcache(NAME)["metadata"][
        "namespace"]]
    # Its key and CA, used as Prometheus uses them, scrape every pod.
    cred = ep["authorization"]["credentials"]
    token = base64.b64decode(kj("get", "secret", cred["name"])["data"][cred["key"]]).decode()
    ca_ref = ep["tlsConfig"]["ca"]["secret"]
    ca_pem = base64.b64decode(kj("get", "secret", ca_ref["name"])["data"][ca_ref["key"]]
                              ).decode()
    for pod in targets:
        status, text = scrape(pod, token, ca_pem, ep["tlsConfig"]["serverName"])
        assert status == 200 and "distcache_requests_total" in text, (pod, status)
    status, _ = scrape(targets[0], None, ca_pem, ep["tlsConfig"]["serverName"])
    assert status == 401  # the key is what lets Prometheus in
    assert condition(distcache(NAME), "Available")["message"].count("no ServiceMonitor") == 0


def test_service_monitor_drift_is_put_back_and_off_removes_it(mon: str) -> None:
    if not served():
        pytest.skip("needs the previous test's CRD")
    uid = kj("get", "servicemonitor", NAME)["metadata"]["uid"]
    k("delete", "servicemonitor", NAME)
    wait_for("ServiceMonitor recreated", lambda: k(
        "get", "servicemonitor", NAME, "-o", "jsonpath={.metadata.uid}",
        check=False).stdout not in ("", uid), 90, every=2)
    k("patch", f"distcache/{NAME}", "--type=merge",
      "-p", '{"spec":{"metrics":{"serviceMonitor":{"enabled":false}}}}')
    wait_for("ServiceMonitor removed", lambda: k("get", "servicemonitor", NAME,
                                                 check=False).returncode != 0, 90, every=2)
    k("delete", "distcache", NAME)


@pytest.mark.parametrize(("verb", "allowed"), [
    ("create", True), ("patch", True), ("get", True), ("delete", True), ("list", False)])
def test_operator_may_manage_service_monitors_and_nothing_more(mon: str, verb: str,
                                                               allowed: bool) -> None:
    from ophelp import OPERATOR_SA

    if not served():
        pytest.skip("needs the ServiceMonitor CRD (can-i answers no for an unknown resource)")
    proc = k("auth", "can-i", verb, CRD, f"--as={OPERATOR_SA}", check=False)
    assert proc.stdout.strip() == ("yes" if allowed else "no"), (verb, proc.stdout)
