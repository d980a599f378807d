"""Internal endpoints under /cluster/, for peers only: a certificate from the cluster CA or
the cluster secret (the request pipeline runs the peer check). People and clients read the
node's view of the cluster from GET /status, with the data API key."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiohttp import web

from distcache_node.appkeys import CLUSTER, CONFIG
from distcache_node.cluster.node import ClusterNode
from distcache_node.cluster.peers import (
    BATCH_TYPE,
    PeerError,
    check_version,
    decode_batch,
    decode_entries,
    encode_entries,
)
from distcache_node.cluster.ring import RingConflict, RingDoc, RingError
from distcache_node.cluster.status import node_status
from distcache_node.errors import Conflict, bad_request
from distcache_node.httpbody import read_body, read_json
from distcache_node.pipeline import PEER, add_route
from distcache_node.protocol import FROM_HEADER, RING_HEADER
from distcache_node.validate import validate_key, validate_ttl

EXPORT_BATCH = 2000
EXPORT_BATCH_BYTES = 4 * 1024**2


def _node(request: web.Request) -> ClusterNode:
    node = request.app[CLUSTER]
    assert node is not None, "cluster routes exist only on a clustered node"
    return node


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def handle_ping(request: web.Request) -> web.Response:
    node = _node(request)
    announce = request.query.get("from", "").split()
    if len(announce) == 3:
        if announce[2] == "s":
            node.membership.stopping(announce[0], announce[1])
        else:
            node.membership.heard_from(announce[0], announce[1], announce[2] == "1")
    node.reached_by(request.headers.get(FROM_HEADER, ""),
                    request.query.get("routed_around", ""))
    return _json({"id": node.id, "boot_id": node.boot_id, "ready": node.ready,
                  "stopping": node.stopping,
                  "ring_version": node.doc.version,
                  "placed_version": node.migration.placed_version})


async def handle_get_ring(request: web.Request) -> web.Response:
    return _json(_node(request).doc.to_json())


async def handle_put_ring(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        doc = RingDoc.from_json(await read_json(request))
        changed = node.update_ring(doc, "push")
    except RingConflict as exc:
        raise Conflict("ring_conflict", str(exc)) from None
    except RingError as exc:
        raise bad_request(str(exc), "invalid_ring") from None
    if not changed and doc.version < node.doc.version:
        raise Conflict("stale_ring",
                       f"ring v{doc.version} is older than this node's v{node.doc.version}")
    # Adopted, or the very ring this node follows again (a retried push): both succeed.
    return _json({"accepted": True, "changed": changed, "version": node.doc.version})


async def handle_status(request: web.Request) -> web.Response:
    return _json(node_status(_node(request)))


def _keys(request: web.Request, body: dict[str, Any]) -> list[str]:
    keys = body.get("keys")
    if not isinstance(keys, list):
        raise bad_request("'keys' must be a list")
    limit = request.app[CONFIG].max_key_size
    return [validate_key(k, limit, "keys[]", allow_reserved=True) for k in keys]


async def handle_get(request: web.Request) -> web.Response:
    entries = _node(request).replica.get(_keys(request, await read_json(request)))
    return web.Response(body=b'{"entries":[%b]}' % encode_entries(entries),
                        content_type="application/json")


async def _catch_up(request: web.Request) -> int | None:
    """Adopt the sender's newer ring first; returns the sender's ring version, if given."""
    raw = request.headers.get(RING_HEADER, "")
    if not raw.isdigit():
        return None
    await _node(request).catch_up(request.headers.get(FROM_HEADER), int(raw))
    return int(raw)


async def handle_apply(request: web.Request) -> web.Response:
    """A batch of replicated writes and deletes, as JSON or as BATCH_TYPE (values outside
    the JSON, see peers.encode_batch): all of it is checked before any of it is applied."""
    binary = request.content_type == BATCH_TYPE
    raw = await read_body(request) if binary else None
    body = await read_json(request) if raw is None else {}
    sender_ring = await _catch_up(request)
    try:
        if raw is not None:
            entries, deletes = decode_batch(raw)
        else:
            entries = decode_entries(body.get("entries") or [])
            deletes = [(str(k), check_version(v)) for k, v in body.get("deletes") or []]
    except (TypeError, ValueError) as exc:
        raise bad_request(f"bad apply batch: {exc}") from None
    result = _node(request).replica.apply(entries, deletes, sender_ring)
    # not_held: keys this node does not hold at the sent version or newer (no ack for them);
    # newer: [key, version] of keys it holds at a newer version than sent.
    return _json({"applied": result.applied, "deleted": result.deleted,
                  "not_held": result.not_held, "newer": result.newer})


async def handle_incr(request: web.Request) -> web.Response:
    from distcache_node.appkeys import BACKEND
    from distcache_node.cluster.router import ClusterRouter

    body = await read_json(request)
    key = validate_key(body.get("key"), request.app[CONFIG].max_key_size,
                       allow_reserved=True)  # rate limit counters
    delta = body.get("delta", 1)
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise bad_request("'delta' must be an integer", "invalid_delta")
    router = request.app[BACKEND]
    assert isinstance(router, ClusterRouter)
    value, version = await router.incr_as_primary(key, delta, validate_ttl(body.get("ttl")))
    return _json({"value": value, "version": version})


async def handle_export(request: web.Request) -> web.StreamResponse:
    """NDJSON: batches of the entries this node holds that `owner` should hold (lines
    `[entry, ...]`), then of its deletes of such keys still remembered (lines
    `{"deletes": [[key, version], ...]}`)."""
    node = _node(request)
    owner = (await read_json(request)).get("owner")
    if not isinstance(owner, str) or not owner:
        raise bad_request("'owner' must be a member id")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    batch, size = [], 0
    for entry in node.store.entries():
        if owner in node.target.owners(entry[0]):
            batch.append(entry)
            size += len(entry[0]) + len(entry[1])
            # Bounded in bytes too: the reader refuses a line over its answer cap (64 MiB),
            # which 2000 large values would pass.
            if len(batch) >= EXPORT_BATCH or size >= EXPORT_BATCH_BYTES:
                await response.write(b"[%b]\n" % encode_entries(batch))
                batch, size = [], 0
    if batch:
        await response.write(b"[%b]\n" % encode_entries(batch))
    owners = node.target.owners
    deletes = [d for d in node.store.deletes() if owner in owners(d[0])]
    for start in range(0, len(deletes), EXPORT_BATCH):
        await response.write(orjson.dumps({"deletes": deletes[start:start + EXPORT_BATCH]})
                             + b"\n")
    await response.write_eof()
    return response


async def handle_drain(request: web.Request) -> web.Response:
    """Put this node into `leaving`: it hands every key to the owners of the ring without it
    and keeps serving until removed. Progress is in /cluster/status."""
    node = _node(request)
    me = node.doc.member(node.id)
    if me is None:
        raise Conflict("not_a_member", "this node is not in the ring")
    if me.state != "leaving":
        doc = node.doc.with_state([node.id], "leaving")
        # Peers first: they must know we are leaving before our keys arrive.
        for peer in list(node.peers.values()):
            with contextlib.suppress(PeerError):  # ring gossip converges the rest
                await peer.put_ring(doc.to_json())
        try:
            node.update_ring(doc, "drain")
        except RingConflict as exc:  # another writer published this version meanwhile
            raise Conflict("ring_conflict", f"{exc}; retry the drain") from None
    node.migration.wake()  # a second call re-checks for writes that landed late
    return _json(node_status(node))


def setup_cluster_routes(app: web.Application) -> None:
    for method, path, handler in [
        ("GET", "/cluster/ping", handle_ping),
        ("GET", "/cluster/ring", handle_get_ring),
        ("PUT", "/cluster/ring", handle_put_ring),
        ("GET", "/cluster/status", handle_status),
        ("POST", "/cluster/get", handle_get),
        ("POST", "/cluster/apply", handle_apply),
        ("POST", "/cluster/incr", handle_incr),
        ("POST", "/cluster/export", handle_export),
        ("POST", "/cluster/drain", handle_drain),
    ]:
        add_route(app, method, path, handler, "cluster", PEER)
