"""A small async client for the Kubernetes API over aiohttp (already the node's HTTP library).

Credentials: in a pod, the ServiceAccount token (re-read, as bound tokens rotate) and CA;
outside, the current context of $KUBECONFIG (or ~/.kube/config): client certificate or
token. Only what the operator needs: JSON requests, server-side apply, errors as ApiError.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client import Counter

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def operator_namespace() -> str:
    """Where the operator runs (its ServiceAccount's namespace): the NetworkPolicy lets it
    reach the pods. DISTCACHE_OPERATOR_NAMESPACE overrides (an operator run outside)."""
    if os.environ.get("DISTCACHE_OPERATOR_NAMESPACE"):
        return os.environ["DISTCACHE_OPERATOR_NAMESPACE"]
    try:
        return (SA_DIR / "namespace").read_text().strip() or "distcache-system"
    except OSError:
        return "distcache-system"


API_REQUESTS = Counter("distcache_operator_api_requests_total",
                       "Requests to the Kubernetes API server, by HTTP method and resource "
                       "(secrets, statefulsets, ...; status for a status patch)",
                       ["method", "resource"])


def _resource(path: str) -> str:
    """The resource a request is about: /api/v1/namespaces/N/secrets/X -> secrets;
    .../distcaches/X/status -> status; /apis/group/version (discovery) -> discovery."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts:
        rest = parts[parts.index("namespaces") + 2:]
        if not rest:
            return "namespaces"
        return rest[-1] if len(rest) >= 3 else rest[0]
    return "discovery" if len(parts) <= 3 else parts[-2] if len(parts) % 2 else parts[-1]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Credentials:
    def __init__(self, server: str, ssl_ctx: ssl.SSLContext | bool,
                 token_file: Path | None = None, token: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.ssl = ssl_ctx
        self.token_file = token_file
        self._token = token
        self._read_at = 0.0

    def token(self) -> str | None:
        if self.token_file is not None and time.monotonic() - self._read_at > 60:
            self._token = self.token_file.read_text().strip()
            self._read_at = time.monotonic()
        return self._token

    @classmethod
    def in_cluster(cls) -> Credentials:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return cls(f"https://{host}:{port}", ctx, token_file=SA_DIR / "token")

    @classmethod
    def from_kubeconfig(cls, path: str | None = None) -> Credentials:
        path = path or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
            or str(Path.home() / ".kube" / "config")
        conf = yaml.safe_load(Path(path).read_text())
        ctx_name = conf.get("current-context")
        context = next(c["context"] for c in conf["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in conf["clusters"] if c["name"] == context["cluster"])
        users = [u["user"] for u in conf.get("users", []) if u["name"] == context["user"]]
        user: dict[str, Any] = users[0] if users else {}
        tmp = Path(tempfile.mkdtemp(prefix="distcache-kube-"))

        def material(data_key: str, file_key: str, holder: dict[str, Any]) -> str | None:
            if holder.get(data_key):
                out = tmp / data_key
                out.write_bytes(base64.b64decode(holder[data_key]))
                out.chmod(0o600)
                return str(out)
            return holder.get(file_key)

        ca = material("certificate-authority-data", "certificate-authority", cluster)
        if cluster.get("insecure-skip-tls-verify"):
            ssl_ctx: ssl.SSLContext = ssl.create_default_context()
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
        else:
            ssl_ctx = ssl.create_default_context(cafile=ca)
        cert = material("client-certificate-data", "client-certificate", user)
        key = material("client-key-data", "client-key", user)
        if cert and key:
            ssl_ctx.load_cert_chain(cert, key)
        token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
        return cls(cluster["server"], ssl_ctx, token_file=token_file, token=user.get("token"))

    @classmethod
    def load(cls) -> Credentials:
        if SA_DIR.joinpath("token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return cls.from_kubeconfig()


class KubeApi:
    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.creds.ssl),
                timeout=aiohttp.ClientTimeout(total=30, connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        token = self.creds.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        API_REQUESTS.labels(method, _resource(path)).inc()
        async with self.session().request(method, self.creds.server + path, data=data,
                                          headers=headers, params=params) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                try:
                    doc = orjson.loads(raw)
                    reason, message = str(doc.get("reason", "")), str(doc.get("message", ""))
                except orjson.JSONDecodeError:
                    reason, message = resp.reason or "", raw[:500].decode(errors="replace")
                raise ApiError(resp.status, reason, message)
            return orjson.loads(raw) if raw else None

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Any:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body)

    async def merge_patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, body, "application/merge-patch+json")

    async def apply(self, path: str, body: Any, manager: str) -> Any:
        """Server-side apply (JSON is YAML), conflicts forced: what we own is put back."""
        return await self.request("PATCH", path, body, "application/apply-patch+yaml",
                                  params={"fieldManager": manager, "force": "true"})
