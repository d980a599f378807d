"""redis-py in a pod against a DistCache's `redis` Service port, through a scale 3 -> 5 -> 3.

A DistCache of 3 (replicationFactor 2, TLS and the generated API key: the defaults) serves
the Redis protocol on its client Service's port named `redis`. The load program
(e2e/respload.py, mounted from a ConfigMap) runs redis-py from the client image
(`scripts/images.sh client`: the node's venv plus redis-py) in a restricted pod, with the
DistCache's CA and API key mounted from the Secrets the operator made, as an application in
the cluster would: TLS checked against the Service's name, AUTH (RESP2) and HELLO 3 AUTH
(RESP3), GET, SET, MGET, MSET and pipelines of versioned values. Meanwhile the cache grows
3 -> 5 and shrinks back to 3, each time waited for until settled.

Asserts: the port refuses plain TCP and a command before AUTH; every pod, the two that join
and leave too, took connections (some operations go through a connection of their own,
which asks INFO server which pod it reached); zero failed commands (a
command is sent again on a closed connection, a timeout or TRYAGAIN for up to 15 s, as
redis-py's Retry does, and every retry is counted and printed); zero stale reads; zero lost
acknowledged writes (every key read back at the end). Prints the counts and settle times.

DISTCACHE_DEV_RESP_CACHE_IMAGE runs the cache pods on another node build (a broken one shows
the test fail); DISTCACHE_DEV_RESP_RATE changes the operations a second (200).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kindload import load_image
from kubehelp import load_pod
from ophelp import NS, distcache, k, kj, ring, settled, wait_for, wait_settled_or_explain
from tlshelp import dc_yaml, operator_ready

from conftest import project_version

NAME = "resp"
LOADER = "resp-load"
PROGRAM = Path(__file__).parent / "respload.py"
RATE = float(os.environ.get("DISTCACHE_DEV_RESP_RATE", "200"))
CACHE_IMAGE = os.environ.get("DISTCACHE_DEV_RESP_CACHE_IMAGE", "")


@pytest.fixture(scope="module")
def client_image() -> str:
    image = os.environ.get("DISTCACHE_DEV_CLIENT_IMAGE", f"distcache/client:{project_version()}")
    load_image(image, "scripts/images.sh client builds it")
    return image


def loader_pod(image: str) -> str:
    """A restricted-Pod-Security pod running the load program with redis-py, the
    DistCache's API key and CA mounted from the Secrets the operator made."""
    args = ["/load/respload.py", "--host", f"{NAME}.{NS}.svc", "--port", "6379",
            "--ca", "/tls/ca.crt", "--api-key-file", "/key/api-key", "--rate", f"{RATE:g}",
            "--stop-file", "/tmp/stop", "--progress", "5"]
    return json.dumps(load_pod(LOADER, image, "python3", args, NAME, program=LOADER))


def program_configmap() -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LOADER},
                       "data": {"respload.py": PROGRAM.read_text()}})


def phase(pod: str) -> str:
    return str((kj("get", "pod", pod).get("status") or {}).get("phase", ""))


def log_lines() -> list[dict[str, Any]]:
    lines = []
    for line in k("logs", LOADER, check=False).stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            lines.append(doc)
    return lines


@pytest.fixture(scope="module")
def three(node_image: str) -> Iterator[None]:
    operator_ready()
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", timeout=150)
    k("apply", "-f", "-", input=dc_yaml(
        NAME, 3, f"  replicationFactor: 2\n  image: {CACHE_IMAGE or node_image}\n"))
    wait_settled_or_explain(NAME, 3, 300)
    yield
    k("delete", "pod", LOADER, "--ignore-not-found", "--wait=false", check=False)
    k("delete", "configmap", LOADER, "--ignore-not-found", "--wait=false", check=False)
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=false", check=False)


def test_the_service_and_the_pods_publish_the_redis_port(three: None) -> None:
    svc = kj("get", "service", NAME)["spec"]["ports"]
    assert {"name": "redis", "port": 6379, "targetPort": 6379, "protocol": "TCP"} in svc
    pods = kj("get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
    for pod in pods:
        (node,) = pod["spec"]["containers"]
        assert {"name": "redis", "containerPort": 6379, "protocol": "TCP"} in node["ports"]
        assert "--resp-port=6379" in node["args"]
    endpoints = kj("get", "endpoints", NAME)
    ready = [a for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []
             if any(p["name"] == "redis" for p in s["ports"])]
    assert len(ready) == 3, endpoints


def test_redis_py_through_the_service_scaled_3_5_3_fails_no_command_loses_no_write(
        three: None, client_image: str) -> None:
    k("delete", "pod", LOADER, "--ignore-not-found", "--wait=true")
    k("apply", "-f", "-", input=program_configmap())
    k("apply", "-f", "-", input=loader_pod(client_image))
    wait_for("the load pod running", lambda: phase(LOADER) == "Running", 120, every=1)
    wait_for("load under way", lambda: any(int(p.get("commands", 0)) > 0
                                           for p in log_lines()), 60, every=1)
    time.sleep(5)

    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=5")
    wait_for("5 active members, settled", lambda: settled(NAME, 5), 600, every=1)
    grow_s = time.monotonic() - t0
    time.sleep(5)

    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=3")
    wait_for("3 active members, settled", lambda: settled(NAME, 3), 600, every=1)
    shrink_s = time.monotonic() - t0
    assert len(ring(NAME)["members"]) == 3
    time.sleep(5)

    k("exec", LOADER, "--", "python3", "-c", "open('/tmp/stop', 'w').close()")
    wait_for("the load program done", lambda: phase(LOADER) in ("Succeeded", "Failed"), 180,
             every=1)
    summary = next(p for p in reversed(log_lines()) if "failed_commands" in p)
    print(f"\ngrow 3->5 {grow_s:.0f} s, shrink 5->3 {shrink_s:.0f} s; redis-py: "
          f"{summary['commands']} commands in {summary['seconds']} s "
          f"({summary['commands_per_second']}/s), {summary['failed_commands']} failed, "
          f"{summary['lost_writes']} lost writes of {summary['keys_checked']} keys, "
          f"{summary['stale_reads']} stale reads, retries {summary['retries']}, "
          f"own connections by pod {summary['served_by']}, latency {summary['latency_ms']}")
    print(json.dumps(summary, indent=1))
    checks = summary["preflight"]
    assert checks["plain"].startswith("refused"), checks
    assert checks["noauth"].startswith("refused") and "uthentication" in checks["noauth"], \
        checks
    assert summary["commands"] > RATE * 30, "the load program hardly ran"
    # The Service gave connections to every pod, the two that joined and left included.
    assert set(summary["served_by"]) == {f"{NAME}-{i}" for i in range(5)}, summary["served_by"]
    by = summary["by_command"]
    assert all(by.get(c, 0) > 0 for c in ("GET", "SET", "MGET", "MSET", "pipeline SET")), by
    assert summary["stale_reads"] == 0, (
        f"{summary['stale_reads']} stale reads: {summary['stale_examples']}")
    assert summary["lost_writes"] == 0, (
        f"{summary['lost_writes']} lost writes: {summary['lost_examples']}")
    assert summary["failed_commands"] == 0, summary["failure_examples"]
    assert phase(LOADER) == "Succeeded"
    assert distcache(NAME)["status"]["readyReplicas"] == 3


def test_redis_enabled_false_takes_the_listener_and_every_port_away(three: None) -> None:
    """On an existing cache: the Services and the NetworkPolicy lose the port, and the pods
    roll (one at a time, as any template change) onto args without --resp-port."""
    k("patch", f"distcache/{NAME}", "--type=merge",
      "-p", json.dumps({"spec": {"redis": {"enabled": False}}}))

    def no_service_port() -> bool:
        return all(p["name"] != "redis" for svc in (NAME, f"{NAME}-peers")
                   for p in kj("get", "service", svc)["spec"]["ports"])

    wait_for("both Services without the redis port", no_service_port, 60, every=1)

    def rolled() -> bool:
        sts = kj("get", "statefulset", NAME)
        st = sts.get("status") or {}
        pods = kj("get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
        return (st.get("updateRevision") == st.get("currentRevision")
                and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3
                and len(pods) == 3
                and not any("--resp-port=6379" in p["spec"]["containers"][0]["args"]
                            or any(port["name"] == "redis"
                                   for port in p["spec"]["containers"][0]["ports"])
                            for p in pods))

    wait_for("every pod rolled without the RESP listener", rolled, 600, every=2)
    wait_settled_or_explain(NAME, 3, 300)
    ingress = kj("get", "networkpolicy", NAME)["spec"]["ingress"]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8080}] for rule in ingress), ingress
