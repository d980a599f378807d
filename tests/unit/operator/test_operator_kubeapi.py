"""The operator's connection to the API server (kubeapi, over kubernetes_asyncio), without a
cluster: the kubeconfig loaded by the library (key material, exec plugins), refusals as
ApiError. Requests themselves are proven against kind (e2e/)."""

from __future__ import annotations

import base64
import json
import logging
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException

from distcache_node.local import certs
from distcache_operator import kopf_main
from distcache_operator.kubeapi import ApiError, KubeApi

SERVER = "https://kube.example:6443"


def _exception(status: int, reason: str, body: str) -> ApiException:
    # As the library raises it: the HTTP status and reason phrase, the body decoded to text.
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc


def test_api_error_takes_reason_and_message_from_the_status_body() -> None:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
              "reason": "Conflict", "message": 'configmaps "cache-ring": the object has been '
                                               "modified"}
    err = ApiError.from_exception(_exception(409, "Conflict", json.dumps(status)))
    assert (err.status, err.reason) == (409, "Conflict")
    assert err.message == status["message"]
    assert "409 Conflict" in str(err)


def test_api_error_from_a_body_that_is_not_a_status_keeps_the_http_reason_and_text() -> None:
    # A proxy or load balancer in front of the API server answers with HTML.
    err = ApiError.from_exception(_exception(502, "Bad Gateway", "<html>bad gateway</html>"))
    assert (err.status, err.reason, err.message) == (502, "Bad Gateway",
                                                     "<html>bad gateway</html>")


@pytest.fixture
def scratch_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder, for this test alone: what is left in it is what we leave."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    return tmp


def _kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None
                ) -> Path:
    conf = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "c", "cluster": {"server": SERVER, **(cluster or {})}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}]}
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture
def kubeconfig_with_key_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                             ) -> tuple[Path, bytes]:
    """A kubeconfig as kind writes it: CA, client certificate and key inline (base64)."""
    cert, key = certs.make_ca(tmp_path / "pki", "test client")
    b64 = {name: base64.b64encode(p.read_bytes()).decode() for name, p in
           (("cert", cert), ("key", key))}
    path = _kubeconfig(tmp_path / "kubeconfig",
                       {"client-certificate-data": b64["cert"], "client-key-data": b64["key"]},
                       {"certificate-authority-data": b64["cert"]})
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path, key.read_bytes()


async def _connect() -> AsyncIterator[KubeApi]:
    kube = await KubeApi.connect()
    try:
        yield kube
    finally:
        await kube.close()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


async def test_kubeconfig_key_material_is_not_left_on_disk(
        scratch_tmp: Path, kubeconfig_with_key_data: tuple[Path, bytes]) -> None:
    async for kube in _connect():
        assert kube.client.configuration.host == SERVER
        # The client is built (its SSL context holds the key); no copy of the key remains.
        assert list(scratch_tmp.iterdir()) == []


async def test_the_same_kubeconfig_loads_again_in_one_process(
        scratch_tmp: Path, kubeconfig_with_key_data: tuple[Path, bytes]) -> None:
    """The library remembers the files it wrote; once ours are removed, a second load must
    write them again, not be handed the removed ones."""
    async for _ in _connect():
        pass
    async for kube in _connect():
        assert kube.client.configuration.host == SERVER
    assert list(scratch_tmp.iterdir()) == []


async def test_a_kubeconfig_that_cannot_be_loaded_leaves_nothing_behind(
        scratch_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Key data that is no certificate: written out by the loader, refused by OpenSSL.
    path = _kubeconfig(tmp_path / "bad", {"client-certificate-data": "%%%",
                                          "client-key-data": "%%%"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(ConfigException, match=f"kubeconfig {path}: .*cannot be used"):
        await KubeApi.connect()
    assert list(scratch_tmp.iterdir()) == []


def _exec_user(tmp_path: Path, expires: str) -> dict[str, Any]:
    """An exec plugin (as aws eks get-token, gke-gcloud-auth-plugin are) that hands out a
    new token each run: tok-1, tok-2, ..."""
    counter = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, pathlib, sys\n"
        f"runs = pathlib.Path({str(counter)!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', 'status': {'token': f'tok-{n}', "
        f"'expirationTimestamp': {expires!r}}}}}, sys.stdout)\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                     "command": sys.executable, "args": [str(plugin)],
                     "interactiveMode": "Never"}}


async def _bearer(kube: KubeApi) -> str:
    # What the library puts in the Authorization header of the next request.
    settings = await kube.client.configuration.auth_settings()
    return str(settings["BearerToken"]["value"])


async def test_an_exec_plugin_token_is_used(scratch_tmp: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    user = _exec_user(tmp_path, "2999-01-01T00:00:00Z")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", user)))
    async for kube in _connect():
        assert await _bearer(kube) == "Bearer tok-1"
        assert await _bearer(kube) == "Bearer tok-1"  # valid: the plugin is not run again


async def test_an_expired_exec_plugin_token_is_renewed_before_the_next_request(
        scratch_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # EKS tokens live 15 minutes; the operator runs for months.
    user = _exec_user(tmp_path, "2000-01-01T00:00:00Z")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", user)))
    async for kube in _connect():
        first = await _bearer(kube)
        assert first.startswith("Bearer tok-")
        assert await _bearer(kube) != first


async def test_no_kubeconfig_and_no_service_account_is_a_clear_error(
        scratch_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigException, match="kube-config"):
        await KubeApi.connect()
    assert list(scratch_tmp.iterdir()) == []


async def test_requests_name_the_operator_as_their_user_agent(
        scratch_tmp: Path, kubeconfig_with_key_data: tuple[Path, bytes]) -> None:
    # Audit logs and API Priority and Fairness tell clients apart by it.
    async for kube in _connect():
        assert kube.client.user_agent == "distcache-operator"


class _Transport:
    """Stands in for the library's REST transport (aiohttp, sockets): records the timeout
    each request is sent with."""

    def __init__(self) -> None:
        self.timeouts: list[Any] = []

    async def GET(self, url: str, **kwargs: Any) -> None:  # the library calls it so
        self.timeouts.append(kwargs["_request_timeout"])

    async def close(self) -> None:
        pass


async def test_a_watch_is_not_cut_by_the_request_timeout(
        scratch_tmp: Path, kubeconfig_with_key_data: tuple[Path, bytes]) -> None:
    """A request has 30 s in all; a pod watch streams for minutes (handlers/daemon.py): with
    the same total it ended in a TimeoutError after 30 s (seen on kind)."""
    async for kube in _connect():
        transport = _Transport()
        await kube.client.rest_client.close()
        kube.client.rest_client = transport
        url = f"{SERVER}/api/v1/namespaces/ns/pods"
        await kube.client.request("GET", url, query_params=[("labelSelector", "a=b")])
        await kube.client.request("GET", url, query_params=[
            ("labelSelector", "a=b"), ("timeoutSeconds", 300), ("watch", True)])
        plain, watch = transport.timeouts
        assert plain.total == 30
        assert watch.total is None and watch.sock_read > 300


# --- kopf's own login (kopf_main.login): the same loader, so exec plugins work for kopf too

async def test_kopf_logs_in_with_an_exec_plugin_token_and_its_expiry(
        scratch_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kopf's built-in kubeconfig reader runs no exec plugin: an EKS/GKE kubeconfig would
    # give kopf's watches no credentials at all.
    user = _exec_user(tmp_path, "2999-01-01T00:00:00Z")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", user)))
    info = await kopf_main.login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert info is not None
    assert (info.server, info.scheme, info.token) == (SERVER, "Bearer", "tok-1")
    assert info.expiration is not None and info.expiration.year == 2999  # kopf re-logs then
    assert list(scratch_tmp.iterdir()) == []


async def test_kopf_logs_in_with_key_data_and_leaves_no_file(
        scratch_tmp: Path, kubeconfig_with_key_data: tuple[Path, bytes]) -> None:
    _, key = kubeconfig_with_key_data
    info = await kopf_main.login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert info is not None
    assert info.private_key_data == key and info.certificate_data and info.ca_data
    assert info.token is None and info.expiration is None
    assert list(scratch_tmp.iterdir()) == []
