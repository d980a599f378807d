"""The two servers of the RESP benchmark and what it asks of them: a DistCache node with its
RESP listener, or redis-server; both behind the same password (the node's API key, redis'
requirepass), both plain TCP; pre-filled with the keys redis-benchmark asks for; and the
counters that tell whether a run's commands hit keys and got no error replies."""

from __future__ import annotations

from dataclasses import dataclass

from run import (
    API_KEY,
    VALUE_BYTES,
    Http,
    Pinning,
    Processes,
    Redis,
    free_port,
    key_of,
    resp_command,
    start_node,
    start_redis,
    wait_until,
)

# redis-benchmark's -d fills values with 'x'; the pre-fill stores the same bytes.
VALUE = b"x" * VALUE_BYTES
BATCH = 10_000  # keys per EXISTS check (the node's MAX_BATCH)
MSET_PAIRS = 1_000


@dataclass
class Server:
    name: str
    port: int  # the RESP port
    pid: int
    http_port: int | None = None  # a DistCache node's HTTP port (its /metrics)

    def client(self) -> Redis:
        """A connection that has passed AUTH, as redis-benchmark's -a does."""
        client = Redis(self.port)
        client.call("AUTH", API_KEY)
        return client

    def counters(self) -> tuple[int, int, int]:
        """(keyspace hits, misses, error replies) so far; differences tell about one run."""
        client = self.client()
        try:
            stats = client.info("stats")
        finally:
            client.close()
        errors = int(stats.get("total_error_replies", 0))
        if self.http_port is not None:  # the node counts error replies in its metrics
            errors = self.metric("distcache_commands_total{", 'protocol="resp"',
                                 'outcome="error"')
        return int(stats["keyspace_hits"]), int(stats["keyspace_misses"]), errors

    def metric(self, prefix: str, *labels: str) -> int:
        """The sum of a DistCache node's /metrics samples named `prefix...` with `labels`."""
        assert self.http_port is not None
        http = Http(self.http_port)
        try:
            text = http.ok("GET", "/metrics").decode()
        finally:
            http.close()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith(prefix) and all(label in line for label in labels))


def start_resp_node(procs: Processes, pinning: Pinning, max_memory: str = "512MiB") -> Server:
    resp_port = free_port()
    http_port, proc = start_node(procs, pinning, max_memory, ["--resp-port", str(resp_port)])
    server = Server("distcache-node (RESP)", resp_port, proc.pid, http_port)
    wait_until(lambda: server.client().call("PING") == "PONG", proc, "the node's RESP port")
    return server


def start_redis_server(procs: Processes, pinning: Pinning) -> Server:
    port, proc = start_redis(procs, pinning)
    client = Redis(port)
    client.call("CONFIG", "SET", "requirepass", API_KEY)  # AUTH on both sides of every pair
    client.close()
    return Server("redis-server", port, proc.pid)


def prefill(server: Server, keyspace: int) -> None:
    """key_of(0..keyspace-1) (redis-benchmark's key:__rand_int__ under -r keyspace), each
    with VALUE; then every one is checked to exist, so GET and MGET runs count hits."""
    client = server.client()
    try:
        # MSETs of MSET_PAIRS keys, pipelined: a cluster node splits each by owner.
        client.pipeline([resp_command("MSET", *[part for i in range(start, min(
            keyspace, start + MSET_PAIRS)) for part in (key_of(i), VALUE)])
            for start in range(0, keyspace, MSET_PAIRS)])
        sample = client.call("GET", key_of(keyspace - 1))
    finally:
        client.close()
    if sample != VALUE:
        raise RuntimeError(f"{server.name}: pre-fill read back {sample!r}")
    check_keys(server, keyspace)


def check_keys(server: Server, keyspace: int) -> None:
    """Every pre-filled key exists as this server answers (on a cluster node: its own copy
    or forwarded to an owner)."""
    client = server.client()
    try:
        present = sum(int(client.call("EXISTS", *[key_of(i) for i in range(
            start, min(keyspace, start + BATCH))])) for start in range(0, keyspace, BATCH))
    finally:
        client.close()
    if present != keyspace:
        raise RuntimeError(f"{server.name}: {present} of {keyspace} pre-filled keys exist")
