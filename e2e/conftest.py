"""The e2e tier: DistCache on a real Kubernetes cluster (kind here; any cluster whose nodes have
the node image). Takes the cluster from KUBECONFIG; `make e2e-kind` brings one up.

The `cluster` fixture deploys e2e/manifests/ once per session into the distcache-e2e namespace
(restricted Pod Security), with a fresh CA, node certificate and keys in Secrets, and leaves it
for inspection afterwards (the next run, or `make kind-down`, removes it).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubehelp import (
    NAMESPACE,
    REPO,
    NodeClient,
    kubectl,
    kubectl_json,
    kubectl_path,
    render,
    wait_for,
)

PODS = ("distcache-0", "distcache-1", "distcache-2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        here = Path(str(item.fspath)).parent == Path(__file__).parent
        if here and not any(m.name == "docker" for m in item.iter_markers()):
            item.add_marker(pytest.mark.e2e)


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


@pytest.fixture(scope="session")
def node_image() -> str:
    return os.environ.get("DISTCACHE_OPERATOR_NODE_IMAGE", f"distcache/node:{project_version()}")


@dataclass
class Cluster:
    ca_file: Path
    api_key: str
    cluster_secret: str
    clients: dict[str, NodeClient] = field(default_factory=dict)

    def client(self, pod: str) -> NodeClient:
        if pod not in self.clients:
            self.clients[pod] = NodeClient(pod, self.ca_file, self.api_key, self.cluster_secret)
        return self.clients[pod]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def _require_cluster() -> None:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("e2e needs a cluster: KUBECONFIG is not set (make e2e-kind brings one up)")
    if not kubectl_path():
        pytest.skip("e2e needs kubectl on PATH (or KUBECTL=...)")
    kubectl("version", namespace=None)  # a set KUBECONFIG that does not answer is a failure


def _make_tls(directory: Path) -> Path:
    from distcache_node.local.certs import make_ca, make_cert

    ca_pem, _ = make_ca(directory / "ca", "DistCache e2e CA")
    peers = f"distcache-peers.{NAMESPACE}.svc.cluster.local"
    hosts = (
        *(f"{pod}.{peers}" for pod in PODS), f"*.{peers}",
        f"distcache-client.{NAMESPACE}.svc", f"distcache-client.{NAMESPACE}.svc.cluster.local",
        "localhost", "127.0.0.1",  # the tests come in through kubectl port-forward
    )
    make_cert(directory / "node", "node", directory / "ca", hosts)
    return ca_pem


def delete_namespace() -> None:
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
            "--timeout=180s", namespace=None, timeout=200)


@pytest.fixture(scope="session")
def cluster(node_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _require_cluster()
    delete_namespace()
    tls = tmp_path_factory.mktemp("tls")
    ca_pem = _make_tls(tls)
    c = Cluster(ca_pem, secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    kubectl("apply", "-f", "-", input=render("00-namespace.yaml"), namespace=None)
    kubectl("create", "secret", "generic", "distcache-tls",
            f"--from-file=tls.crt={tls / 'node' / 'node.pem'}",
            f"--from-file=tls.key={tls / 'node' / 'node.key'}",
            f"--from-file=ca.crt={ca_pem}")
    kubectl("create", "secret", "generic", "distcache-auth",
            f"--from-literal=api-key={c.api_key}",
            f"--from-literal=cluster-secret={c.cluster_secret}")
    for name in ("10-services.yaml", "20-ring-configmap.yaml"):
        kubectl("apply", "-f", "-", input=render(name))
    kubectl("apply", "-f", "-", input=render("30-statefulset.yaml", NODE_IMAGE=node_image))
    try:
        wait_ready(PODS, timeout=300)
    except AssertionError:
        print(kubectl("get", "pods,events", "-o", "wide", check=False).stdout)
        for pod in PODS:
            print(kubectl("logs", pod, "--tail=50", check=False).stdout)
        raise
    yield c
    c.close()


def pod_ready(pod: str) -> dict[str, object] | None:
    doc = kubectl_json("get", "pod", pod)
    if doc["metadata"].get("deletionTimestamp"):
        return None
    conditions = {x["type"]: x["status"] for x in doc.get("status", {}).get("conditions", [])}
    return doc if conditions.get("Ready") == "True" else None


def wait_ready(pods: tuple[str, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for pod in pods:
        wait_for(f"pod {pod} ready", lambda p=pod: pod_ready(p),
                 timeout=max(1.0, deadline - time.monotonic()), every=1)


def exec_in(pod: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("exec", pod, "-c", "node", "--", *cmd, check=check)
