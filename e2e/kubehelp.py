"""Small helpers for the e2e tier: kubectl, port-forwards, an HTTPS client, deadlines.

Everything reaches the cluster through kubectl (the API server on loopback) and
`kubectl port-forward` (loopback ports): the tests never address pod or node IPs.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
NAMESPACE = "distcache-e2e"
MANIFESTS = Path(__file__).parent / "manifests"
REPO = Path(__file__).parent.parent


def kubectl_path() -> str | None:
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120,
            namespace: str | None = NAMESPACE) -> subprocess.CompletedProcess[str]:
    exe = kubectl_path()
    assert exe, "kubectl not found (set KUBECTL or put it on PATH)"
    cmd = [exe, *(["-n", namespace] if namespace else []), *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl_json(*args: str, namespace: str | None = NAMESPACE) -> Any:
    """kubectl's answer as JSON (`get --raw` answers JSON already and refuses -o)."""
    output = () if "--raw" in args else ("-o", "json")
    return json.loads(kubectl(*args, *output, namespace=namespace).stdout)


def wait_for(what: str, check: Callable[[], T | None], timeout: float,
             every: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline.
    Exceptions inside `check` count as 'not yet' (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(every)


def wait_established(*crds: str, timeout: float = 120) -> None:
    """Wait until each CRD (full name) is Established. `kubectl wait` cannot be used right
    after the CRD is created: until the API server has written the first condition it fails
    at once with '.status.conditions accessor error' instead of waiting."""
    for crd in crds:
        def established(crd: str = crd) -> bool:
            conditions = kubectl_json("get", f"crd/{crd}", namespace=None).get(
                "status", {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conditions)
        wait_for(f"CRD {crd} Established", established, timeout)


def render(name: str, **values: str) -> str:
    text = (MANIFESTS / name).read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    assert "${" not in text, f"{name}: unfilled placeholder"
    return text


class PortForward:
    """`kubectl port-forward TARGET :PORT` on loopback (TARGET: pod/NAME, svc/NAME, a bare
    pod name...), started on first use and again when the pod behind it was replaced."""

    def __init__(self, target: str, port: int = 8080, namespace: str = NAMESPACE,
                 scheme: str = "https") -> None:
        self.target = target if "/" in target else f"pod/{target}"
        self.port, self.namespace, self.scheme = port, namespace, scheme
        self.proc: subprocess.Popen[str] | None = None
        self.local_port = 0

    def _start(self) -> None:
        self.close()
        exe = kubectl_path()
        assert exe
        self.proc = subprocess.Popen(
            [exe, "-n", self.namespace, "port-forward", "--address", "127.0.0.1",
             self.target, f":{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()

        def pump(stream: Any) -> None:
            for line in stream:
                lines.put(line)

        assert self.proc.stdout is not None
        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                self.local_port = int(match.group(1))
                return
        self.close()
        raise ConnectionError(f"port-forward to {self.target} did not start")

    def url(self, scheme: str | None = None) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        return f"{scheme or self.scheme}://127.0.0.1:{self.local_port}"

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class NodeClient:
    """HTTPS to one pod through its port-forward: data API (API key) and peer API (secret)."""

    def __init__(self, pod: str, ca_file: Path, api_key: str, cluster_secret: str) -> None:
        self.pod = pod
        self.forward = PortForward(pod)
        self.ssl = ssl.create_default_context(cafile=str(ca_file))
        self.api_key, self.cluster_secret = api_key, cluster_secret

    def request(self, method: str, path: str, body: Any = None, peer: bool = False,
                timeout: float = 30, retries: int = 3) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if peer:
            headers["X-DistCache-Cluster-Secret"] = self.cluster_secret
        else:
            headers["X-API-Key"] = self.api_key
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(retries):
            req = urllib.request.Request(self.forward.url() + path, data=data, method=method,
                                         headers=headers)
            try:
                with urllib.request.urlopen(req, context=self.ssl, timeout=timeout) as resp:
                    return resp.status, json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                try:
                    return exc.code, json.loads(raw or b"null")
                except ValueError:
                    return exc.code, raw.decode(errors="replace")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                # A port-forward that lost its pod (replaced, restarting): start a new one.
                self.forward.reset()
                if attempt == retries - 1:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None, peer: bool = False) -> Any:
        status, answer = self.request(method, path, body, peer=peer)
        assert status == 200, f"{self.pod} {method} {path}: {status} {answer}"
        return answer

    def close(self) -> None:
        self.forward.close()


def load_pod(name: str, image: str, command: str, args: list[str], cache: str,
             key_secret: str | None = None, program: str | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod that runs a client load program against DistCache `cache` under the restricted
    Pod Security profile, with the cache's API key (/key/api-key, from `key_secret`, by
    default the one the operator made) and its CA (/tls/ca.crt) mounted; `program` names a
    ConfigMap mounted at /load (a program the image does not carry)."""
    mounts = [{"name": "tmp", "mountPath": "/tmp"},
              {"name": "key", "mountPath": "/key", "readOnly": True},
              {"name": "tls", "mountPath": "/tls", "readOnly": True}]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "key", "secret": {"secretName": key_secret or f"{cache}-api-key"}},
        {"name": "tls", "secret": {"secretName": f"{cache}-tls",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
    if program is not None:
        mounts.append({"name": "load", "mountPath": "/load", "readOnly": True})
        volumes.append({"name": "load", "configMap": {"name": program}})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "enableServiceLinks": False, "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "load", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": [command], "args": args,
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }
