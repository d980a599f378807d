"""Helpers for the operator's e2e tests: kubectl in a namespace, a port-forward to a pod, and
a plain-HTTP DistCache client with the API key (the operator's caches speak HTTP; TLS is not
in this stage)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from kubehelp import REPO, PortForward, kubectl, kubectl_json, wait_established, wait_for

NS = os.environ.get("DISTCACHE_DEV_OP_NAMESPACE", "distcache-op-e2e")
OPERATOR_NS = "distcache-system"
OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NS}:distcache-operator"

__all__ = ["NS", "OPERATOR_NS", "OPERATOR_SA", "REPO", "CacheClient", "client_for", "k", "kj",
           "wait_established", "wait_for", "wait_settled_or_explain"]


def k(*args: str, check: bool = True, input: str | None = None,
      namespace: str | None = NS, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return kubectl(*args, check=check, input=input, namespace=namespace, timeout=timeout)


def kj(*args: str, namespace: str | None = NS) -> Any:
    return kubectl_json(*args, namespace=namespace)


def secret_value(name: str, key: str) -> str:
    data = kj("get", "secret", name)["data"]
    return base64.b64decode(data[key]).decode()


class Forward(PortForward):
    """A port-forward in the operator tests' namespace (or another), plain HTTP by default."""

    def __init__(self, target: str, port: int = 8080, namespace: str | None = None) -> None:
        super().__init__(target, port, namespace or NS, scheme="http")


class CacheClient:
    """The data API through a port-forward to one pod (any pod answers for any key)."""

    def __init__(self, target: str, api_key: str, ca_pem: str | None = None,
                 namespace: str | None = None) -> None:
        self.forward = Forward(target, namespace=namespace)
        self.api_key = api_key
        self.ssl = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
        self.scheme = "https" if ca_pem else "http"

    def request(self, method: str, path: str, body: Any = None,
                retries: int = 5) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(retries):
            req = urllib.request.Request(
                self.forward.url(self.scheme) + path, data=data, method=method,
                headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60, context=self.ssl) as resp:
                    return resp.status, json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code == 503 and attempt < retries - 1:
                    time.sleep(1)
                    continue
                try:
                    return exc.code, json.loads(raw or b"null")
                except ValueError:
                    return exc.code, raw.decode(errors="replace")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                self.forward.close()
                if attempt == retries - 1:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def mset(self, items: dict[str, Any], batch: int = 1000) -> None:
        keys = list(items)
        for i in range(0, len(keys), batch):
            chunk = [{"key": key, "value": items[key]} for key in keys[i:i + batch]]
            status, answer = self.request("POST", "/mset", {"items": chunk})
            assert status == 200, f"mset: {status} {answer}"

    def mget(self, keys: list[str], batch: int = 1000) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for i in range(0, len(keys), batch):
            status, answer = self.request("POST", "/mget", {"keys": keys[i:i + batch]})
            assert status == 200, f"mget: {status} {answer}"
            found.update(answer["values"])
        return found

    def delete(self, key: str) -> None:
        status, answer = self.request("POST", "/delete", {"key": key})
        assert status in (200, 404), f"delete: {status} {answer}"

    def close(self) -> None:
        self.forward.close()


def client_for(name: str, pod: int = 0) -> CacheClient:
    """A client of DistCache `name` through pod `pod`, with its API key and (TLS on, the
    default) its CA from the Secrets the operator made."""
    dc = distcache(name)
    tls = (dc["spec"].get("tls") or {})
    ca = None
    if tls.get("enabled", True):
        ca = secret_value(tls.get("secretName") or f"{name}-tls", "ca.crt")
    return CacheClient(f"pod/{name}-{pod}", secret_value(f"{name}-api-key", "api-key"), ca)


def distcache(name: str) -> dict[str, Any]:
    return kj("get", "distcache", name)  # type: ignore[no-any-return]


def condition(dc: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (dc.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c  # type: ignore[no-any-return]
    return {}


def ring(name: str) -> dict[str, Any]:
    cm = kj("get", "configmap", f"{name}-ring")
    return json.loads(cm["data"]["ring.json"])  # type: ignore[no-any-return]


def settled(name: str, replicas: int) -> dict[str, Any] | None:
    """The DistCache when its ring has `replicas` active members, the StatefulSet as many
    pods, every pod ready and status says Running."""
    dc = distcache(name)
    st = dc.get("status") or {}
    r = ring(name)
    sts = kj("get", "statefulset", name)
    if (len(r["members"]) == replicas and all(m["state"] == "active" for m in r["members"])
            and sts["spec"]["replicas"] == replicas
            and (sts.get("status") or {}).get("readyReplicas", 0) == replicas
            and st.get("phase") == "Running" and st.get("readyReplicas") == replicas
            and st.get("observedGeneration") == dc["metadata"]["generation"]):
        return dc
    return None


def operator_logs(tail: int = 80) -> str:
    return k("logs", "deployment/distcache-operator", f"--tail={tail}", check=False,
             namespace=OPERATOR_NS).stdout


def wait_settled_or_explain(name: str, replicas: int, timeout: float) -> None:
    """Wait until `settled`; when it never is, print the namespace's objects and events and
    the operator's log before failing, so the failure says why."""
    try:
        wait_for(f"DistCache {name} Running with {replicas} ready pods",
                 lambda: settled(name, replicas), timeout, every=2)
    except AssertionError:
        print(k("get", "all,events", "-o", "wide", check=False).stdout)
        print(operator_logs())
        raise
