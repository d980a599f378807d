"""The OpenAPI document against a live 3-node cluster: schemathesis fuzzes one node of it
(node-0) and checks every answer against the document (no 5xx but the documented 503s, a
documented status, media type, headers and body schema; invalid input rejected).

Real `distcache-node` processes from the local runner (R=2, API key and cluster secret), in
four stages, in this order (one module-scoped cluster; pytest runs the tests as written):

1. healthy: the data API, operations and the read-only /cluster/* endpoints (with the cluster
   secret) through node-0. Fuzzed keys land anywhere on the ring, so most requests are
   forwarded; explicit cases then use keys node-0 does not own (Ring.owners).
2. one node SIGKILLed: writes go to stand-ins, reads fail over; still no 503.
3. two nodes SIGKILLed: node-0 alone cannot reach a write quorum: 503 `unavailable` with
   Retry-After, which the document describes.
4. the /cluster/* endpoints that change the node (ring pushes, drain, replicated writes,
   increments, exports), last because a fuzzed ring or drain changes the cluster for good.

Every stage is bounded in examples and time (the module stays around a minute on a quiet
machine). Each node's log is checked at the end for tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from distcache_node.cluster.ring import Ring
from distcache_node.local.runner import LocalCluster
from support import free_port_range

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_PATH = ROOT / "node" / "distcache_node" / "openapi.json"
API_KEY = "cluster-fuzz-key"
SECRET = "cluster-fuzz-secret"
AUTH = {"X-API-Key": API_KEY}
MEMBERS = ["node-0", "node-1", "node-2"]
# The nodes rate-limit each client IP, with the counters in the cluster itself (an increment
# on the counter key's primary, often another node). Fuzzed requests come from a new client
# address each (X-Forwarded-For from the trusted loopback), so only the burst test is limited.
RATE = 10
_CLIENTS = itertools.count(1)


def _client() -> dict[str, str]:
    n = next(_CLIENTS)
    return {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
RING = Ring(MEMBERS, replication=2)


# DISTCACHE_DEV_FUZZ_SCALE=10 runs ten times the examples per stage, for a longer hunt.
SCALE = float(os.environ.get("DISTCACHE_DEV_FUZZ_SCALE", "1"))


def fuzz_config(max_examples: int, coverage: bool, accepted: list[Any],
                negative: bool = True) -> schemathesis.Config:
    max_examples = max(1, round(max_examples * SCALE))
    return schemathesis.Config.from_dict({
        "request-timeout": 15,
        # Generation is timed on a machine busy with three nodes (and whatever else runs).
        "suppress-health-check": ["too_slow"],
        "auth": {"openapi": {"ApiKeyHeader": {"api_key": API_KEY},
                             "ClusterSecret": {"api_key": SECRET}}},
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": coverage},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            # 503 (documented: `unavailable` with Retry-After) only where owners are down.
            "not_a_server_error": {
                "enabled": True, "expected-statuses": ["2xx", "3xx", "4xx",
                                                       *([503] if 503 in accepted else [])],
            },
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "negative_data_rejection": {
                "enabled": negative, "expected-statuses": [400, 401, 404, 405, 413],
            },
            "positive_data_acceptance": {"enabled": True, "expected-statuses": accepted},
            "ignored_auth": {"enabled": True},
            "unsupported_method": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "use_after_free": {"enabled": False},
            "ensure_resource_availability": {"enabled": False},
        },
    })


# A valid request may find no key (404), a non-integer to /incr (409), a key over 1024 bytes
# within maxLength characters (400), a stale or conflicting ring (409), a ring naming an
# unusable url (400, the url's shape is not in the schema), a write whose X-DistCache-Deadline
# is already past (408).
ACCEPTED = ["2xx", 400, 404, 408, 409]


def _schema(config: schemathesis.Config, paths: str) -> Any:
    """The document's operations on `paths` (one include: schemathesis does not combine an
    include with an exclude on the same attribute)."""
    return schemathesis.openapi.from_path(OPENAPI_PATH, config=config).include(
        path_regex=paths)


DATA = r"^/(get|set|delete|mget|mset|incr|status)$"
HEALTHY = _schema(fuzz_config(10, True, ACCEPTED),
                  r"^/(get|set|delete|mget|mset|incr|status|healthz|readyz|metrics|openapi\.json)$")
HEALTHY_PEER = _schema(fuzz_config(8, True, ACCEPTED),
                       r"^/cluster/(ring|status|ping|get|export)$").exclude(method="PUT")
ONE_DOWN = _schema(fuzz_config(6, False, ACCEPTED), DATA)
TWO_DOWN = _schema(fuzz_config(6, False, [*ACCEPTED, 503]), DATA)
PEER_WRITES = _schema(fuzz_config(8, True, [*ACCEPTED, 503]),
                      r"^/cluster/(ring|status|ping|get|incr|export)$")
# The wire protocol is lenient by design about what it skips (an entry whose ttl is not a
# positive number expired in flight; absent or empty lists apply nothing): its answers are
# held to the document, not its strictness.
APPLY = _schema(fuzz_config(10, True, [*ACCEPTED, 503], negative=False), r"^/cluster/apply$")
EXPLICIT = _schema(fuzz_config(1, False, [*ACCEPTED, 503]), r"^/")  # hand-written requests


class Cluster:
    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.url = local.state.nodes[0].url  # every request goes to node-0

    def kill(self, node_id: str) -> None:
        """SIGKILL by PID (only a node this module started), then reap it: the runner
        started it as this process' child."""
        node = next(n for n in self.local.state.nodes if n.id == node_id)
        os.kill(node.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(node.pid, 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("fuzzed-cluster")
    local = LocalCluster.create(directory, free_port_range(12), API_KEY, 2, False, "64MiB",
                                ["--rate-limit", str(RATE), "--trusted-proxies", "127.0.0.1/32"])
    local.state.secret = SECRET

    async def up() -> None:
        try:
            await local.up(3)
        finally:
            await local.close()

    try:
        asyncio.run(up())
        assert [n.id for n in local.state.nodes] == MEMBERS
        yield Cluster(local)
    finally:
        local.stop_all()
    for node in local.state.nodes:
        logged = (directory / f"{node.id}.log").read_text(errors="replace")
        assert "Traceback" not in logged and "internal error" not in logged, \
            f"{node.id}:\n{logged[-5000:]}"


def _non_owned_keys(count: int, excluded: set[str]) -> list[str]:
    """Keys none of whose owners (R=2) is in `excluded`: node-0 must forward every one."""
    keys = []
    index = 0
    while len(keys) < count:
        key = f"far:{index}"
        if not excluded & set(RING.owners(key)):
            keys.append(key)
        index += 1
    return keys


def _call(schema: Any, url: str, path: str, method: str, **kwargs: Any) -> Any:
    """One explicit request, checked against the document like the fuzzed ones."""
    kwargs.setdefault("headers", AUTH)
    kwargs["headers"] = {**_client(), **kwargs["headers"]}
    if "body" in kwargs:  # /cluster/apply documents a second, binary body type
        kwargs.setdefault("media_type", "application/json")
    return schema[path][method].Case(**kwargs).call_and_validate(base_url=url)


def _header(response: Any, name: str) -> str | None:
    values = response.headers.get(name.lower())
    return values[0] if values else None


@pytest.fixture(scope="module")
def node0(cluster: Cluster) -> str:
    return cluster.url


# ---------------------------------------------------------------------------------------------
# 1. healthy


@HEALTHY.parametrize()
def test_fuzz_healthy_cluster(case: Any, node0: str) -> None:
    case.call_and_validate(base_url=node0, headers=_client())


@HEALTHY_PEER.parametrize()
def test_fuzz_read_only_peer_endpoints(case: Any, node0: str) -> None:
    case.call_and_validate(base_url=node0, headers=_client())


def test_forwarded_keys_round_trip_through_a_non_owner(node0: str) -> None:
    keys = _non_owned_keys(4, {"node-0"})
    schema, url = EXPLICIT, node0
    for i, key in enumerate(keys):
        assert _call(schema, url, "/set", "POST", body={"key": key, "value": {"i": i}, "ttl": 60}
                     ).json() == {"stored": True, "key": key}
        got = _call(schema, url, "/get", "GET", query={"key": key})
        assert got.json()["value"] == {"i": i}
        assert _header(got, "X-DistCache-Ring-Version") == "1"
    items = [{"key": k, "value": "x" * 600} for k in keys]  # > 1 KiB answers: gzip
    assert _call(schema, url, "/mset", "POST", body={"items": items}).json() == {"stored": 4}
    got = _call(schema, url, "/mget", "POST", body={"keys": [*keys, "far:absent"]},
                headers={**AUTH, "Accept-Encoding": "gzip"})
    assert _header(got, "Content-Encoding") == "gzip"
    assert set(got.json()["values"]) == set(keys)
    counter = keys[0] + ":n"
    got = _call(schema, url, "/incr", "POST", body={"key": counter, "delta": 3})
    assert got.json()["value"] == 3
    got = _call(schema, url, "/delete", "DELETE", query={"key": keys[1]})
    assert got.json() == {"deleted": True}
    assert _call(schema, url, "/get", "GET", query={"key": keys[1]}).status_code == 404


def test_incr_of_a_non_integer_through_a_non_primary_is_409(node0: str) -> None:
    """Regression (found by this fuzz run): the primary's 409 `not_an_integer` reached the
    client as a 503 `unavailable` when another node coordinated the increment."""
    key = next(k for k in _non_owned_keys(10, {"node-0"}) if RING.owners(k)[0] != "node-0")
    assert _call(EXPLICIT, node0, "/set", "POST", body={"key": key, "value": "text"}
                 ).status_code == 200
    got = _call(EXPLICIT, node0, "/incr", "POST", body={"key": key})
    assert got.status_code == 409, got.text
    assert got.json()["error"] == "not_an_integer"
    assert "is not an integer" in got.json()["message"]
    assert _call(EXPLICIT, node0, "/get", "GET", query={"key": key}).json()["value"] == "text"


def test_rate_limited_through_the_cluster(node0: str) -> None:
    """One client over its limit: 429 with Retry-After and X-RateLimit-*, as documented; the
    counters live on the counter key's owners, not on node-0 alone."""
    client = {**AUTH, "X-Forwarded-For": "192.0.2.1"}
    answers = [_call(EXPLICIT, node0, "/get", "GET", query={"key": "rl"}, headers=client)
               for _ in range(3 * RATE)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert limited[0].json()["error"] == "rate_limited"
    assert int(_header(limited[0], "Retry-After") or 0) >= 1
    assert _header(limited[0], "X-RateLimit-Limit") == str(RATE)
    assert _header(answers[0], "X-RateLimit-Remaining") is not None


def test_ring_version_header_and_peer_doors(node0: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(
            f"{node0}/status", headers=AUTH), timeout=10) as resp:
        assert resp.headers["X-DistCache-Ring-Version"] == "1"
    # The data API key is not a peer credential: 403, as documented.
    got = _call(EXPLICIT, node0, "/cluster/status", "GET")
    assert got.status_code == 403 and got.json()["error"] == "forbidden"


# ---------------------------------------------------------------------------------------------
# 2. one node down: every key still has a live owner or stand-in


@pytest.fixture(scope="module")
def one_down(cluster: Cluster, node0: str) -> str:
    cluster.kill("node-2")
    return node0


@ONE_DOWN.parametrize()
def test_fuzz_with_one_node_killed(case: Any, one_down: str) -> None:
    case.call_and_validate(base_url=one_down, headers=_client())


def test_non_owner_writes_with_an_owner_killed(one_down: str) -> None:
    for key in _non_owned_keys(3, {"node-0"}):  # owned by node-1 and node-2
        got = _call(EXPLICIT, one_down, "/set", "POST", body={"key": key, "value": 1})
        assert got.status_code == 200, got.text
        assert _call(EXPLICIT, one_down, "/get", "GET", query={"key": key}).json()["value"] == 1


# ---------------------------------------------------------------------------------------------
# 3. two nodes down: no write quorum


@pytest.fixture(scope="module")
def two_down(cluster: Cluster, one_down: str) -> str:
    cluster.kill("node-1")
    return one_down


@TWO_DOWN.parametrize()
def test_fuzz_with_two_nodes_killed(case: Any, two_down: str) -> None:
    case.call_and_validate(base_url=two_down, headers=_client())


def test_writes_without_quorum_are_documented_503s(two_down: str) -> None:
    key = _non_owned_keys(1, {"node-0"})[0]
    for path, method, kwargs in [
        ("/set", "POST", {"body": {"key": key, "value": 1}}),
        ("/mset", "POST", {"body": {"items": [{"key": key, "value": 1}]}}),
        ("/incr", "POST", {"body": {"key": key + ":n"}}),
        ("/delete", "DELETE", {"query": {"key": key}}),
        ("/delete", "POST", {"body": {"key": key}}),
    ]:
        got = _call(EXPLICIT, two_down, path, method, **kwargs)
        assert got.status_code == 503, (path, got.status_code, got.text)
        assert got.json()["error"] == "unavailable"
        assert _header(got, "Retry-After") == "1"
        assert _header(got, "X-DistCache-Ring-Version") == "1"


# ---------------------------------------------------------------------------------------------
# 4. what changes the node: peer writes, ring pushes, drain


def test_drain_answers_as_documented(two_down: str) -> None:
    got = _call(EXPLICIT, two_down, "/cluster/drain", "POST",
                headers={"X-DistCache-Cluster-Secret": SECRET})
    assert got.status_code == 200, got.text
    assert got.json()["state"] == "leaving"


def test_ring_pushes_answer_as_documented(two_down: str) -> None:
    """The PUT /cluster/ring answers the fuzzer is unlikely to reach on its own."""
    peer = {"X-DistCache-Cluster-Secret": SECRET}
    ring = _call(EXPLICIT, two_down, "/cluster/ring", "GET", headers=peer).json()
    version = ring["version"]
    assert version >= 2  # the drain published a ring with node-0 leaving
    for doc, status, error in [
        ({**ring, "version": version - 1}, 409, "stale_ring"),
        ({**ring, "replication": 3 - ring["replication"]}, 409, "ring_conflict"),
        ({**ring, "version": version + 1,
          "members": [{"id": "x", "url": "ftp://127.0.0.1:1"}]}, 400, "invalid_ring"),
        ({**ring, "version": "2"}, 400, "invalid_ring"),
    ]:
        got = _call(EXPLICIT, two_down, "/cluster/ring", "PUT", body=doc, headers=peer)
        assert (got.status_code, got.json()["error"]) == (status, error), got.text
    got = _call(EXPLICIT, two_down, "/cluster/ring", "PUT", body=ring, headers=peer)
    assert got.json() == {"accepted": True, "changed": False, "version": version}
    got = _call(EXPLICIT, two_down, "/cluster/ring", "PUT", body=ring, headers=AUTH)
    assert (got.status_code, got.json()["error"]) == (403, "forbidden")


@PEER_WRITES.parametrize()
def test_fuzz_peer_endpoints(case: Any, two_down: str) -> None:
    case.call_and_validate(base_url=two_down, headers=_client())


@APPLY.parametrize()
def test_fuzz_replicated_writes(case: Any, two_down: str) -> None:
    case.call_and_validate(base_url=two_down, headers=_client())


def test_a_version_at_the_end_of_the_range_is_refused_not_a_500(two_down: str) -> None:
    """Regression: a replicated write carrying the largest version (2^63-1, which
    /cluster/apply accepts, as the fuzzed document allows) left the node's clock unable to
    issue a version, and every later write on the node was a 500 (ValueError from pack). It
    is now a documented 503 saying why. Last: it leaves node-0 unable to write."""
    secret = {"X-DistCache-Cluster-Secret": SECRET}
    got = _call(EXPLICIT, two_down, "/cluster/apply", "POST", headers=secret,
                body={"entries": [["clock:end", 1, None, 2**63 - 1]]})
    assert got.status_code == 200, got.text
    for path, body, headers in [("/cluster/incr", {"key": "clock:n"}, secret),
                                ("/set", {"key": "clock:x", "value": 1}, AUTH)]:
        got = _call(EXPLICIT, two_down, path, "POST", body=body, headers=headers)
        assert got.status_code == 503, (path, got.text)
        assert got.json()["error"] == "unavailable"
        assert "end of the version range" in got.json()["message"]
