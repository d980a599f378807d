"""Local cluster runner: node processes on 127.0.0.1, their ring file and state in one folder.

The folder (`--dir`, default .local) holds:
  cluster.json  what the runner started: settings and each node's id, port, url and PID
  ring.json     the ring document every node watches (the local stand-in for a ConfigMap)
  tls/          CA and certificates when --tls is on
  node-N.log    each node's output
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from distcache_node.cluster.coordinator import Coordinator, RingConflict
from distcache_node.cluster.peers import PeerClient, client_ssl_context, make_session
from distcache_node.cluster.ring import Member, RingDoc
from distcache_node.local import certs
from distcache_node.local.scale import Scaler


@dataclass
class NodeProc:
    id: str
    port: int
    url: str
    pid: int = 0
    resp_port: int = 0  # the Redis protocol port, 0 when off


@dataclass
class ClusterState:
    api_key: str
    secret: str
    replication: int
    tls: bool
    base_port: int
    max_memory: str = "256MiB"
    node_args: list[str] = field(default_factory=list)  # extra distcache-node flags
    resp_base_port: int = 0  # node-N speaks RESP on this + N; 0: no RESP listener
    nodes: list[NodeProc] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> ClusterState:
        path = directory / "cluster.json"
        if not path.exists():
            raise SystemExit(f"no local cluster in {directory} "
                             "(start one with `distcache local up`)")
        data = json.loads(path.read_text())
        data["nodes"] = [NodeProc(**n) for n in data["nodes"]]
        return cls(**data)

    def save(self, directory: Path) -> None:
        _atomic_write(directory / "cluster.json", json.dumps(asdict(self), indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FileRingStore:
    """The ring in a file, replaced atomically; `save` is a compare-and-swap under an
    exclusive lock, like a ConfigMap update with its resourceVersion."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> RingDoc:
        return RingDoc.from_json(orjson.loads(self.path.read_bytes()))

    async def load_or_none(self) -> RingDoc | None:
        """The ring, or None when there is no ring file (deleted by hand)."""
        try:
            return await self.load()
        except FileNotFoundError:
            return None

    def reset(self, doc: RingDoc) -> None:
        """A new cluster's first ring, over whatever an earlier cluster left in the folder."""
        _atomic_write(self.path, orjson.dumps(doc.to_json(), option=orjson.OPT_INDENT_2))

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        # A local lock file, held for a few milliseconds: blocking is fine here.
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        with open(lock_path, "w") as lock:  # noqa: ASYNC230
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = await self.load_or_none()
            if current != expected:
                raise RingConflict(
                    f"{self.path} changed under us: expected ring "
                    f"v{expected.version if expected else '-'}, found "
                    f"v{current.version if current else '-'}")
            _atomic_write(self.path, orjson.dumps(doc.to_json(), option=orjson.OPT_INDENT_2))


class LocalCluster:
    def __init__(self, directory: Path, state: ClusterState) -> None:
        self.dir = directory
        self.state = state
        self.ring_path = directory / "ring.json"
        self._session: aiohttp.ClientSession | None = None

    # -- setup ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, base_port: int, api_key: str, replication: int,
               tls: bool, max_memory: str, node_args: list[str] | None = None,
               resp_base_port: int = 0) -> LocalCluster:
        directory.mkdir(parents=True, exist_ok=True)
        state = ClusterState(api_key=api_key, secret="" if tls else secrets.token_urlsafe(24),
                             replication=replication, tls=tls, base_port=base_port,
                             max_memory=max_memory, node_args=list(node_args or []),
                             resp_base_port=resp_base_port)
        cluster = cls(directory, state)
        if tls:
            certs.make_ca(cluster.tls_dir)
            certs.make_cert(cluster.tls_dir, "coordinator", cluster.tls_dir)
        return cluster

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def scheme(self) -> str:
        return "https" if self.state.tls else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.state.tls:
            return None
        return client_ssl_context(str(self.tls_dir / "coordinator.pem"),
                                  str(self.tls_dir / "coordinator.key"),
                                  str(self.tls_dir / "ca.pem"))

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = make_session(self.state.secret, self.ssl_context())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def client(self, member: Member) -> PeerClient:
        return PeerClient(member.id, member.url, self.session(), timeout=10.0)

    def ring_store(self) -> FileRingStore:
        return FileRingStore(self.ring_path)

    def coordinator(self) -> Coordinator:
        return Coordinator(self.ring_store(), self.client)

    # -- processes -----------------------------------------------------------------------------
    # Nodes are numbered like a StatefulSet's pods: node-N listens on base port + N.
    @staticmethod
    def node_id(ordinal: int) -> str:
        return f"node-{ordinal}"

    @staticmethod
    def ordinal(node_id: str) -> int:
        return int(node_id.rsplit("-", 1)[1])

    def node_url(self, ordinal: int) -> str:
        return f"{self.scheme}://127.0.0.1:{self.state.base_port + ordinal}"

    def new_node(self, ordinal: int) -> NodeProc:
        resp = self.state.resp_base_port
        return NodeProc(self.node_id(ordinal), self.state.base_port + ordinal,
                        self.node_url(ordinal), resp_port=resp + ordinal if resp else 0)

    def _next_nodes(self, count: int) -> list[NodeProc]:
        used = {self.ordinal(n.id) for n in self.state.nodes}
        return [self.new_node(i) for i in range(count + len(used)) if i not in used][:count]

    def _command(self, node: NodeProc) -> list[str]:
        cmd = [
            sys.executable, "-m", "distcache_node.cli",
            "--host", "127.0.0.1", "--port", str(node.port), "--node-id", node.id,
            "--advertise-url", node.url, "--ring-file", str(self.ring_path),
            "--replication", str(self.state.replication), "--max-memory", self.state.max_memory,
            *self.state.node_args,
        ]
        if node.resp_port:
            cmd += ["--resp-port", str(node.resp_port)]
        if self.state.tls:
            cert, key = certs.make_cert(self.tls_dir, node.id, self.tls_dir)
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key),
                    "--tls-ca", str(self.tls_dir / "ca.pem")]
        return cmd

    def _environment(self) -> dict[str, str]:
        """Secrets go to the nodes through the environment, not the command line: `ps` shows
        every user the command line, and a value that starts with '-' reads as a flag."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTCACHE_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.state.api_key:
            env["DISTCACHE_API_KEY"] = self.state.api_key
        if self.state.secret:
            env["DISTCACHE_CLUSTER_SECRET"] = self.state.secret
        return env

    def spawn(self, node: NodeProc) -> None:
        log = open(self.dir / f"{node.id}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(self._command(node), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=self._environment())
        log.close()
        node.pid = proc.pid

    async def wait_ready(self, nodes: list[NodeProc], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        session = self.session()
        for node in nodes:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with session.get(node.url + "/readyz",
                                           timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            break
                if not self.alive(node):
                    raise SystemExit(f"{node.id} exited; {self.log_tail(node)}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{node.id} not ready after {timeout:.0f}s; "
                                     f"{self.log_tail(node)}")
                await asyncio.sleep(0.1)

    @staticmethod
    def alive(node: NodeProc) -> bool:
        return bool(node.pid) and _alive(node.pid)

    def log_tail(self, node: NodeProc, lines: int = 20) -> str:
        """The end of a node's log, for an error that says why it did not come up."""
        path = self.dir / f"{node.id}.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return f"last lines of {path}:\n" + "\n".join(tail)

    def stop(self, *nodes: NodeProc, timeout: float = 15.0) -> None:
        """SIGTERM by PID (a graceful stop), all at once so their shutdown drains overlap;
        SIGKILL only for one that does not exit in time."""
        self.terminate(*nodes)
        self.reap(*nodes, timeout=timeout)

    @staticmethod
    def terminate(*nodes: NodeProc) -> None:
        """SIGTERM by PID, without waiting: each node drains for --shutdown-drain, then exits."""
        for pid in [n.pid for n in nodes if n.pid and _alive(n.pid)]:
            os.kill(pid, signal.SIGTERM)

    @staticmethod
    def reap(*nodes: NodeProc, timeout: float = 15.0) -> None:
        """Wait for terminated nodes to exit; SIGKILL one that does not in time."""
        pids = [n.pid for n in nodes if n.pid and _alive(n.pid)]
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    # -- commands ------------------------------------------------------------------------------
    async def up(self, count: int) -> None:
        nodes = self._next_nodes(count)
        doc = RingDoc(1, self.state.replication,
                      tuple(Member(n.id, n.url, "active") for n in nodes))
        FileRingStore(self.ring_path).reset(doc)
        for node in nodes:
            self.spawn(node)
        self.state.nodes = nodes
        self.state.save(self.dir)
        await self.wait_ready(nodes)

    async def scale(self, count: int, force: bool = False) -> float:
        """Grow or shrink to `count` nodes through the shared membership machine (see
        local/scale.py); returns when the ring settled (time.monotonic()), before removed
        nodes finish their shutdown drain."""
        return await Scaler(self, count, force).run()

    async def status(self) -> list[dict[str, Any]]:
        doc = await self.ring_store().load()
        statuses = await self.coordinator().statuses(doc.members)
        rows = []
        for member in doc.members:
            status = statuses.get(member.id)
            rows.append({"id": member.id, "url": member.url, "state": member.state,
                         "status": status})
        return rows

    def stop_all(self) -> None:
        self.stop(*self.state.nodes)


def running_nodes(directory: Path) -> list[int]:
    """PIDs of the nodes a previous `up` in this folder started that are still running."""
    try:
        state = ClusterState.load(directory)
    except (SystemExit, ValueError, TypeError, KeyError, OSError):
        return []
    return [n.pid for n in state.nodes if n.pid and _alive(n.pid)]


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by another `distcache local` command)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A node that `distcache local up` started and `scale` stopped stays a zombie until
    # `up` reaps it: it has exited all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal check is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
