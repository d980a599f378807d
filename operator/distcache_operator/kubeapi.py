"""The connection to the Kubernetes API server, through kubernetes_asyncio (the official
client's asyncio twin, on aiohttp like kopf and the node).

Configuration is the library's: in a pod the ServiceAccount (its token re-read as bound
tokens rotate), else the kubeconfig ($KUBECONFIG or ~/.kube/config) with every auth it
knows, exec plugins (EKS, GKE, ...) included. Failures come out as ApiError; each request
is counted by method and resource.
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import kube_config
from prometheus_client import Counter

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The library's default is no timeout at all: an API server that stops answering would
# hang a reconcile step for good.
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
WATCH_SLACK = 30.0  # seconds a watch may stay silent past its timeoutSeconds: then it is dead


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
    """A request the API server refused (status >= 400), with the reason and message of
    the Status it answered."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_exception(cls, exc: ApiException) -> ApiError:
        """The library's ApiException as an ApiError: reason and message from the Status
        body when there is one (its reason is 'NotFound', 'Conflict', ...; the HTTP reason
        phrase only when the body is not a Status)."""
        raw = exc.body or b""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            return cls(int(exc.status or 0), str(doc.get("reason") or exc.reason or ""),
                       str(doc.get("message", "")))
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return cls(int(exc.status or 0), str(exc.reason or ""), text[:500])


class _CountingClient(client.ApiClient):
    """The library's ApiClient; every request it sends is counted, and has a timeout."""

    def request(self, method: Any, url: Any, query_params: Any | None = None,
                headers: dict[Any, Any] | None = None,
                post_params: dict[Any, Any] | None = None, body: Any | None = None,
                _preload_content: bool = True,
                _request_timeout: float | tuple[float] | aiohttp.ClientTimeout | None = None,
                ) -> Any:
        API_REQUESTS.labels(method, _resource(urlsplit(url).path)).inc()
        return super().request(method, url, query_params, headers, post_params, body,
                               _preload_content, _request_timeout or _timeout(query_params))


def _timeout(query_params: Any) -> aiohttp.ClientTimeout:
    """TIMEOUT for a request; a watch streams for up to its timeoutSeconds, so it has no
    total, only a limit on silence (none when it has no timeoutSeconds)."""
    params = dict(query_params or [])
    if not params.get("watch"):
        return TIMEOUT
    seconds = params.get("timeoutSeconds")
    return aiohttp.ClientTimeout(
        connect=TIMEOUT.connect,
        sock_read=float(seconds) + WATCH_SLACK if seconds is not None else None)


async def _configuration() -> tuple[client.Configuration, str | None, str]:
    """In a pod, the ServiceAccount; else the kubeconfig. Certificate and key data in a
    kubeconfig are files for the library (and for Python's ssl): they are written to a
    private folder (returned), which connect removes as soon as the client has read it;
    and where the configuration came from, for errors."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return cfg, None, "the pod's ServiceAccount"
    except config.ConfigException:
        pass
    scratch = tempfile.mkdtemp(prefix="distcache-kube-")
    try:
        # $KUBECONFIG read now (the library's default is read once, at its import); a
        # list of files (a:b) is merged by the library as kubectl does.
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        loader = await config.load_kube_config(config_file=path, client_configuration=cfg,
                                               temp_file_path=scratch, persist_config=False)
    except BaseException:
        _remove_scratch(scratch)
        raise
    if getattr(loader, "exec_plugin_expiry", None) is not None:
        cfg.refresh_api_key_hook = _ExecToken(loader)
    return cfg, scratch, f"kubeconfig {path}"


@dataclass(frozen=True)
class Login:
    """What kopf's own watches need to reach the API server, from the same loader as the
    client (kopf's built-in kubeconfig reader runs no exec plugin: EKS and GKE kubeconfigs
    would reach our client but not kopf). Key material as data, so no file outlives it; an
    exec plugin's expiry, so kopf logs in again before the token lapses."""

    server: str
    ca_data: bytes | None
    insecure: bool
    token: str | None
    certificate_data: bytes | None
    private_key_data: bytes | None
    expiration: datetime.datetime | None
    source: str


async def login() -> Login:
    cfg, scratch, source = await _configuration()
    try:
        def data(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        hook = cfg.refresh_api_key_hook
        if isinstance(hook, _ExecToken):  # an exec plugin: a token that is valid now
            await hook(cfg)
        bearer = str(cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
                     or "")
        token = bearer.removeprefix("Bearer ").strip() or None
        return Login(server=str(cfg.host), ca_data=data(cfg.ssl_ca_cert),
                     insecure=not cfg.verify_ssl, token=token,
                     certificate_data=data(cfg.cert_file), private_key_data=data(cfg.key_file),
                     expiration=hook.expiry if isinstance(hook, _ExecToken) else None,
                     source=source)
    finally:
        if scratch is not None:
            _remove_scratch(scratch)


class _ExecToken:
    """An exec plugin's token expires (EKS: 15 minutes): the loader runs the plugin again
    once it has (and only then), before a request. A token without an expiry stays valid,
    as client-go takes it. The library calls it as the configuration's refresh hook."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    async def __call__(self, cfg: Any) -> None:
        await self.loader.load_from_exec_plugin()
        cfg.api_key["BearerToken"] = self.loader.token

    @property
    def expiry(self) -> datetime.datetime | None:
        return getattr(self.loader, "exec_plugin_expiry", None)


def _remove_scratch(scratch: str) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    # The library remembers the files it wrote, by content, to reuse them: forget ours, or a
    # second load of the same kubeconfig would be handed a removed file.
    memo: dict[str, str] = getattr(kube_config, "_temp_files", {})
    for content, name in list(memo.items()):
        if name.startswith(scratch + os.sep):
            del memo[content]


class KubeApi:
    """The library's client and the API groups the operator uses. `call` runs one of their
    methods: the answer as plain JSON-shaped data (dicts with the API's camelCase names),
    a refusal as ApiError."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    async def connect(cls) -> KubeApi:
        cfg, scratch, source = await _configuration()
        # The operator builds its bodies as dicts and reads answers as dicts; the models'
        # client-side checks would only refuse server data newer than this library.
        cfg.client_side_validation = False
        try:
            api_client = _CountingClient(cfg)  # the SSL context reads certificates here
        except ssl.SSLError as exc:  # OpenSSL's own words name no file ("PEM lib")
            raise config.ConfigException(
                f"{source}: the CA, client certificate or key cannot be used: {exc}") from exc
        finally:
            if scratch is not None:
                _remove_scratch(scratch)
        # Audit logs and `kubectl get --raw /metrics` name clients by it (the library's own
        # is the code generator's).
        api_client.user_agent = "distcache-operator"
        return cls(api_client)

    async def close(self) -> None:
        await self.client.close()

    async def call(self, method: Callable[..., Awaitable[Any]], *args: Any,
                   **kwargs: Any) -> Any:
        try:
            got = await method(*args, **kwargs)
        except ApiException as exc:
            raise ApiError.from_exception(exc) from None
        return self.client.sanitize_for_serialization(got)

    async def call_or_none(self, method: Callable[..., Awaitable[Any]], *args: Any,
                           **kwargs: Any) -> Any:
        """As call; None when the object (or the API) does not exist."""
        try:
            return await self.call(method, *args, **kwargs)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
