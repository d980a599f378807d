"""The Redis protocol (RESP) port on every cache pod: on by default, off with
spec.redis.enabled: false, and the same number wherever it appears (the node's flag as the
node itself parses it, the container port, both Services, the NetworkPolicy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distcache_node.config import load_config
from distcache_operator.builders import (
    build_client_service,
    build_headless_service,
    build_network_policy,
    build_statefulset,
)
from distcache_operator.model import DistCache

MOUNTS = "/etc/distcache"  # where the pod's Secrets and ConfigMap are mounted


def _container(dc: DistCache) -> dict[str, Any]:
    (c,) = build_statefulset(dc, 3)["spec"]["template"]["spec"]["containers"]
    return c


def _node_config(dc: DistCache, root: Path) -> Any:
    """The node's settings from the container's args, parsed by the node's own parser: the
    pod's $(VAR)s replaced as kubelet would, the mounted files (which the parser checks)
    under `root`, no DISTCACHE_* from this machine's environment."""
    args = [a.replace("$(POD_NAME)", "cache-0").replace("$(POD_NAMESPACE)", "ns")
            .replace(MOUNTS, str(root)) for a in _container(dc)["args"]]
    for arg in args:
        value = arg.partition("=")[2]
        if value.startswith(str(root)):
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).write_text("a-key\n")  # the key files must list a key
    return load_config(args, environ={})


def _port(ports: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((p for p in ports if p["name"] == name), None)


def test_every_pod_serves_redis_on_6379_with_the_http_ports_tls(make_dc, tmp_path) -> None:
    dc = make_dc()
    config = _node_config(dc, tmp_path)
    assert config.resp_port == 6379
    # The node serves the RESP port with the HTTP port's SSLContext whenever it has a
    # certificate (serve.py): TLS on (the default) is TLS on both ports.
    assert config.tls_cert and config.tls_key
    assert _port(_container(dc)["ports"], "redis") == {"name": "redis", "containerPort": 6379}
    assert _port(_container(dc)["ports"], "https") == {"name": "https", "containerPort": 8080}


@pytest.mark.parametrize("build", [build_client_service, build_headless_service])
def test_both_services_route_the_redis_port_to_the_pods_listener(make_dc, build,
                                                                  tmp_path) -> None:
    dc = make_dc()
    ports = build(dc)["spec"]["ports"]
    redis = _port(ports, "redis")
    assert redis == {"name": "redis", "port": 6379, "targetPort": 6379}
    assert redis["targetPort"] == _node_config(dc, tmp_path).resp_port
    assert _port(ports, "https") == {"name": "https", "port": 8080, "targetPort": 8080}
    assert len({p["name"] for p in ports}) == len(ports) == 2


def test_clients_may_reach_the_redis_port_peers_and_the_operator_only_http(make_dc) -> None:
    peers, clients = build_network_policy(make_dc(), "ops")["spec"]["ingress"]
    assert clients["ports"] == [{"protocol": "TCP", "port": 8080},
                                {"protocol": "TCP", "port": 6379}]
    assert peers["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_redis_enabled_false_removes_the_listener_and_every_port(make_dc, tmp_path) -> None:
    dc = make_dc(redis={"enabled": False})
    assert _node_config(dc, tmp_path).resp_port == 0  # the node's "off"
    assert not any(a.startswith("--resp-port") for a in _container(dc)["args"])
    assert [p["name"] for p in _container(dc)["ports"]] == ["https"]
    for build in (build_client_service, build_headless_service):
        assert [p["port"] for p in build(dc)["spec"]["ports"]] == [8080]
    for rule in build_network_policy(dc, "ops")["spec"]["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_without_tls_the_redis_port_is_plain_beside_http(make_dc, tmp_path) -> None:
    dc = make_dc(tls={"enabled": False})
    config = _node_config(dc, tmp_path)
    assert config.resp_port == 6379 and not config.tls_cert
    assert [p["name"] for p in build_client_service(dc)["spec"]["ports"]] == ["http", "redis"]


def test_an_empty_redis_section_keeps_the_default(make_dc, tmp_path) -> None:
    assert _node_config(make_dc(redis={}), tmp_path).resp_port == 6379
    assert _node_config(make_dc(redis=None), tmp_path).resp_port == 6379
