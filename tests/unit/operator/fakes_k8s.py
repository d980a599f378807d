"""An in-memory stand-in for distcache_operator.k8s.Api (its public methods, same answers)
and for the nodes' peer API, to drive the handlers' concerns without an API server. The real
API server path is the e2e tier on kind; these keep every call a concern makes in sight."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.k8s import NotFound, Pods
from distcache_operator.model import DistCache


def _data(obj: Mapping[str, Any]) -> dict[str, str]:
    data = dict(obj.get("data") or {})
    for k, v in (obj.get("stringData") or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    return data


class FakeApi:
    def __init__(self, body: dict[str, Any] | None = None, sts: int | None = None) -> None:
        self.body = copy.deepcopy(body) if body is not None else None
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.sts = sts
        self.ready: dict[str, bool] = {}
        self.failing: dict[str, str] = {}
        self.nodes: dict[str, str] = {}  # pod -> node
        self.zones: dict[str, str] = {}  # node -> zone label
        self.failed_create_messages: list[str] = []  # the StatefulSet's FailedCreate, newest 1st
        self.events: list[tuple[str, str, bool]] = []
        self.calls: list[tuple[str, str]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.served_apis: set[str] = set()
        self.pod_changes: asyncio.Queue[str] = asyncio.Queue()

    # -- Secrets -------------------------------------------------------------------------
    async def read_secret(self, namespace: str, name: str
                          ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        got = self.secrets.get((namespace, name))
        if got is None:
            return None
        return ({k: base64.b64decode(v) for k, v in got["data"].items()},
                dict(got["metadata"].get("annotations") or {}))

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        got = self.secrets.get((namespace, name))
        if got is None:
            raise NotFound(f"Secret {name} not found in namespace {namespace}")
        if key not in got["data"]:
            raise NotFound(f"Secret {name} has no key {key!r}")
        return base64.b64decode(got["data"][key]).decode()

    async def create_secret_if_missing(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if (meta["namespace"], meta["name"]) in self.secrets:
            return False
        self.calls.append(("create", f"Secret/{meta['name']}"))
        self.secrets[(meta["namespace"], meta["name"])] = {"metadata": copy.deepcopy(meta),
                                                           "data": _data(obj)}
        return True

    async def replace_secret(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.calls.append(("replace", f"Secret/{meta['name']}"))
        self.secrets[(meta["namespace"], meta["name"])] = {"metadata": copy.deepcopy(meta),
                                                           "data": _data(obj)}

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        return base64.b64decode(self.secrets[(namespace, name)]["data"][key]).decode()

    # -- objects, StatefulSet, pods ----------------------------------------------------------
    async def served(self, group_version: str, resource: str) -> bool:
        return group_version in self.served_apis

    async def get(self, obj: dict[str, Any]) -> Any:
        return None

    async def apply(self, obj: dict[str, Any]) -> Any:
        self.calls.append(("apply", obj["kind"]))
        if obj["kind"] == "StatefulSet":
            self.sts = int(obj["spec"]["replicas"])
        return obj

    async def delete(self, obj: dict[str, Any]) -> None:
        self.calls.append(("delete", obj["kind"]))

    async def statefulset_replicas(self, dc: DistCache) -> int | None:
        return self.sts

    async def scale_statefulset(self, dc: DistCache, replicas: int) -> None:
        self.calls.append(("scale", str(replicas)))
        self.sts = replicas

    async def pods(self, dc: DistCache) -> Pods:
        return Pods(dict(self.ready), dict(self.failing), dict(self.nodes))

    async def node_zones(self, nodes: Iterable[str]) -> dict[str, str]:
        return {n: self.zones[n] for n in nodes if n in self.zones}

    async def failed_creates(self, dc: DistCache) -> list[str]:
        self.calls.append(("list", "Event/FailedCreate"))
        return list(self.failed_create_messages)

    async def watch_pods(self, namespace: str, selector: str) -> AsyncIterator[str]:
        while True:
            yield await self.pod_changes.get()

    # -- the DistCache -----------------------------------------------------------------------
    async def get_distcache(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    async def patch_status(self, dc: DistCache, status: dict[str, Any]) -> None:
        self.status_patches.append(copy.deepcopy(status))
        if self.body is not None:  # a merge patch: the fields given replace the old ones
            self.body["status"] = {**(self.body.get("status") or {}), **copy.deepcopy(status)}

    async def event(self, dc: DistCache, reason: str, message: str,
                    warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def reasons(self) -> list[str]:
        return [e[0] for e in self.events]


class MemoryRingStore:
    """The ring ConfigMap's compare-and-swap, in memory."""

    def __init__(self, doc: RingDoc | None = None) -> None:
        self.doc = doc

    async def load(self) -> RingDoc:
        assert self.doc is not None
        return self.doc

    async def load_or_none(self) -> RingDoc | None:
        return self.doc

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        assert self.doc == expected, "ring changed under the test"
        self.doc = doc


class FakePeer:
    """GET /cluster/status, PUT and GET /cluster/ring of one node, from a table the test
    keeps (None: the node does not answer)."""

    def __init__(self, nodes: dict[str, dict[str, Any] | None], member: Member,
                 held: Mapping[str, RingDoc] | None = None) -> None:
        self.nodes, self.member, self.held = nodes, member, held or {}

    def _answer(self) -> dict[str, Any]:
        from distcache_node.cluster.peers import PeerError

        got = self.nodes.get(self.member.id)
        if got is None:
            raise PeerError(self.member.id, "unreachable")
        return got

    async def status(self) -> dict[str, Any]:
        return copy.deepcopy(self._answer())

    async def put_ring(self, doc: dict[str, Any]) -> None:
        self._answer()["ring_version"] = int(doc["version"])

    async def get_ring(self) -> dict[str, Any]:
        self._answer()
        return self.held[self.member.id].to_json()


def node_status(version: int, done: bool = True, keys: int = 10) -> dict[str, Any]:
    """A node's GET /cluster/status: on ring `version`, its migration done or not."""
    return {"ring_version": version, "keys": keys, "bytes_used": keys * 100, "ready": True,
            "migration": {"done": done, "placed_version": version if done else version - 1,
                          "keys_remaining": 0 if done else 5, "keys_moved": 0,
                          "reason": "" if done else "moving"},
            "peers": {}}
