"""`distcache local up|scale|status`: a local multi-node cluster, no Kubernetes needed."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from distcache_node.config import ConfigError, load_config
from distcache_node.local.runner import ClusterState, LocalCluster, running_nodes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distcache", description="DistCache tools")
    sub = parser.add_subparsers(dest="area", required=True)
    local = sub.add_parser("local", help="a local cluster of node processes").add_subparsers(
        dest="command", required=True)
    up = local.add_parser("up", help="start N nodes and stay in the foreground (Ctrl-C stops)")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--base-port", type=int, default=8080)
    up.add_argument("--resp-base-port", type=int, default=6379,
                    help="node-N speaks the Redis protocol on this port + N (0: off)")
    up.add_argument("--dir", type=Path, default=Path(".local"))
    up.add_argument("--api-key", default=None, help="default: api_key from --config")
    up.add_argument("--config", default=None, help="node YAML config to take the API key from")
    up.add_argument("--replication", type=int, default=2)
    up.add_argument("--max-memory", default="256MiB")
    up.add_argument("--tls", action="store_true", help="mutual TLS between all nodes")
    scale = local.add_parser("scale", help="grow or shrink a running local cluster")
    scale.add_argument("--dir", type=Path, default=Path(".local"))
    scale.add_argument("--nodes", type=int, required=True)
    scale.add_argument("--force", action="store_true",
                       help="shrink even when the remaining nodes cannot hold the data "
                            "(they will evict keys)")
    status = local.add_parser("status", help="members, states, keys and migration progress")
    status.add_argument("--dir", type=Path, default=Path(".local"))
    return parser


async def _up(args: argparse.Namespace) -> int:
    api_key = args.api_key
    if api_key is None and args.config:
        try:
            api_key = load_config(["--config", args.config], environ={}).api_key
        except ConfigError as exc:
            print(f"distcache: {exc}", file=sys.stderr)
            return 2
    if args.nodes < 1 or args.replication < 1:
        print("distcache: --nodes and --replication must be at least 1", file=sys.stderr)
        return 2
    running = running_nodes(args.dir)
    if running:
        # Starting over would orphan them: their PIDs live only in this folder's state.
        print(f"distcache: a local cluster is already running from {args.dir} (pids "
              f"{', '.join(str(p) for p in running)}); stop it with Ctrl-C where it runs, "
              "or use another --dir and --base-port", file=sys.stderr)
        return 2
    cluster = LocalCluster.create(args.dir, args.base_port, api_key or "", args.replication,
                                  args.tls, args.max_memory,
                                  resp_base_port=args.resp_base_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.up(args.nodes)
        print(f"DistCache local cluster: {args.nodes} nodes, replication {args.replication}"
              f"{', mutual TLS' if args.tls else ''}")
        for node in cluster.state.nodes:
            resp = f"  redis://127.0.0.1:{node.resp_port}" if node.resp_port else ""
            print(f"  {node.id}  {node.url}{resp}  (pid {node.pid})")
        print(f"API key: {api_key or '(none: API open)'}")
        example = cluster.state.nodes[0].url
        print(f'Try: curl -X POST "{example}/set?api_key={api_key}" -H "Content-Type: '
              f'application/json" -d \'{{"key":"user:1","value":"Alice"}}\'')
        if cluster.state.nodes[0].resp_port:
            auth = f" -a {api_key}" if api_key else ""
            tls = f" --tls --cacert {cluster.tls_dir / 'ca.pem'}" if args.tls else ""
            print(f"Redis: redis-cli{tls} -p {cluster.state.nodes[0].resp_port}{auth} "
                  "SET user:1 Alice")
        print(f"Scale: distcache local scale --dir {args.dir} --nodes N; Ctrl-C stops all.",
              flush=True)
        await stop.wait()
    finally:
        print("stopping nodes...", flush=True)
        # `scale` may have changed the node list: stop what the state file says now.
        cluster.state = ClusterState.load(args.dir)
        cluster.stop_all()
        await cluster.close()
    return 0


async def _scale(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir, ClusterState.load(args.dir))
    try:
        await cluster.scale(args.nodes, force=args.force)
        print(f"settled at {len(cluster.state.nodes)} nodes")
    finally:
        await cluster.close()
    return 0


async def _status(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.dir, ClusterState.load(args.dir))
    try:
        rows = await cluster.status()
    finally:
        await cluster.close()
    print(f"{'ID':10} {'STATE':8} {'UP':4} {'READY':5} {'KEYS':>8} {'RING':>5} MIGRATION")
    for row in rows:
        st = row["status"]
        if st is None:
            print(f"{row['id']:10} {row['state']:8} {'no':4} {'-':5} {'-':>8} {'-':>5} -")
            continue
        mig = st["migration"]
        progress = ("done" if mig["done"] else
                    f"moving: {mig['keys_moved']} moved, {mig['keys_remaining']} remaining")
        print(f"{row['id']:10} {row['state']:8} {'yes':4} {str(st['ready']).lower():5} "
              f"{st['keys']:>8} {st['ring_version']:>5} {progress}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"up": _up, "scale": _scale, "status": _status}[args.command]
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(handler(args))


if __name__ == "__main__":
    sys.exit(main())
