"""The Redis-protocol load of e2e/test_resp_kind.py: redis-py (redis.asyncio), in a pod of the
client image, against a DistCache's client Service port `redis`, with TLS (the DistCache's
CA, the Service's name checked) and the API key, as an application in the cluster would.

    python /load/respload.py --host resp.distcache-op-e2e.svc --ca /tls/ca.crt \\
        --api-key-file /key/api-key --rate 200 --stop-file /tmp/stop

Operations (each counted as the commands it sends): GET, SET, MGET and MSET of 10 keys, and
pipelines (no transaction) of 5 SETs and 5 GETs; half the connections speak RESP2, half
RESP3 (HELLO 3 AUTH). The Service spreads connections, not commands, over the pods, so that
pods that join and leave get connections too: --fresh of the operations go through a
connection of their own, which first asks INFO server which pod it reached (its run_id is
the pod's name in hex; counted in `served_by`), and the pools' idle connections are closed
every 5 s (new ones are made as needed, through the Service again).

Values are versioned (`<n>:<key>`, n higher than any before), and no two operations on one
key are ever in flight together, so each key's last acknowledged value is known: a read that
returns an older value (or nothing) is a stale read, and a key that holds an older value (or
none) when every key is read back at the end is a lost write. A write whose outcome is
unknown (it failed) adds its value to those the key may hold.

A command that fails on a closed connection, a timeout or Redis's TRYAGAIN ("not now") is
sent again, on another connection, for up to --retry-for seconds, as redis-py's own Retry
does; every retry is counted by reason. What still fails after that is a failed command.

Before the load: a connection without TLS must fail, and GET before AUTH must be refused
with NOAUTH. Runs until --stop-file exists (or SIGTERM), then prints one JSON summary on
stdout; progress (JSON lines with "t") goes to stderr. Exit code 0 when nothing failed, was
stale or was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

MAX_EXAMPLES = 20
BATCH = 10  # keys of an MGET, an MSET, a pipeline
RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError)


@dataclass
class Key:
    acked: int | None = None  # None: never written (absent)
    maybe: list[int] = field(default_factory=list)  # writes whose outcome is unknown

    def allowed(self) -> list[int | None]:
        return [self.acked, *self.maybe]


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    commands: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    failure_examples: list[dict[str, Any]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    stale_examples: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def fail(self, op: str, exc: BaseException) -> None:
        reason = type(exc).__name__
        self.failures[reason] += 1
        if len(self.failure_examples) < MAX_EXAMPLES:
            self.failure_examples.append({"t": self.now(), "op": op, "reason": reason,
                                          "detail": str(exc)[:300]})


def retry_reason(exc: BaseException) -> str | None:
    """Why a failed command may be sent again, or None when it may not."""
    if isinstance(exc, RETRYABLE):
        return type(exc).__name__
    # redis-py turns Redis's "-TRYAGAIN <text>" into TryAgainError("<text>").
    if isinstance(exc, rexc.TryAgainError):
        return "TRYAGAIN"
    return None


def version_of(raw: bytes | None, key: str) -> int | None:
    """The version a value carries; a value of another key (a routing mix-up) is -1."""
    if raw is None:
        return None
    n, _, of = raw.decode().partition(":")
    return int(n) if of == key else -1


def pod_of(info: dict[str, Any]) -> str:
    """The pod behind a connection: the node puts its id (the pod's name) in hex in run_id."""
    try:
        return bytes.fromhex(str(info.get("run_id", ""))).decode()
    except ValueError:
        return "?"


class Load:
    def __init__(self, clients: list[Redis], keys: int, retry_for: float,
                 fresh: Callable[[], Redis], fresh_share: float) -> None:
        self.clients = clients
        self.fresh = fresh
        self.fresh_share = fresh_share
        self.served_by: Counter[str] = Counter()
        run = os.urandom(4).hex()  # a run's own keys: another run's values are not stale
        self.names = [f"resp:{run}:{i}" for i in range(keys)]
        self.keys = {name: Key() for name in self.names}
        self.busy: set[str] = set()
        self.retry_for = retry_for
        self.tally = Tally()
        self.seq = 0
        self.recycles = 0

    def free(self, n: int) -> list[str]:
        picked: list[str] = []
        for _ in range(n * 4):
            name = random.choice(self.names)
            if name not in self.busy and name not in picked:
                picked.append(name)
                if len(picked) == n:
                    break
        return picked

    def value(self) -> int:
        self.seq += 1
        return self.seq

    def read(self, op: str, name: str, raw: bytes | None) -> None:
        got = version_of(raw, name)
        if got not in self.keys[name].allowed():
            self.tally.stale += 1
            if len(self.tally.stale_examples) < MAX_EXAMPLES:
                self.tally.stale_examples.append({"t": self.tally.now(), "op": op, "key": name,
                                                  "got": got,
                                                  "want": self.keys[name].allowed()})

    async def send(self, op: str, call: Any) -> Any:
        """`call()` until it succeeds, retrying what may be retried for retry_for seconds."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.05
        while True:
            try:
                return await call()
            except rexc.RedisError as exc:
                reason = retry_reason(exc)
                if reason is None or time.monotonic() + pause > deadline:
                    raise
                self.tally.retries[f"{op}:{reason}"] += 1
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)

    async def one(self) -> None:
        """One operation: get 30%, set 30%, mget 10%, mset 10%, pipeline 20%."""
        roll = random.random()
        op = ("get" if roll < 0.3 else "set" if roll < 0.6 else "mget" if roll < 0.7
              else "mset" if roll < 0.8 else "pipeline")
        names = self.free(BATCH if op in ("mget", "mset", "pipeline") else 1)
        if len(names) < (BATCH if op in ("mget", "mset", "pipeline") else 1):
            return
        self.busy.update(names)
        writes = {n: self.value() for n in (names[:BATCH // 2] if op == "pipeline" else names)
                  } if op in ("set", "mset", "pipeline") else {}
        own = random.random() < self.fresh_share
        r = self.fresh() if own else random.choice(self.clients)
        sent = BATCH if op == "pipeline" else 1
        t0 = time.monotonic()
        try:
            if own:
                self.tally.commands["INFO"] += 1
                self.served_by[pod_of(await self.send("info", lambda: r.info("server")))] += 1
            if op == "get":
                self.tally.commands["GET"] += 1
                self.read(op, names[0], await self.send(op, lambda: r.get(names[0])))
            elif op == "set":
                self.tally.commands["SET"] += 1
                n = writes[names[0]]
                ok = await self.send(op, lambda: r.set(names[0], f"{n}:{names[0]}"))
                assert ok is True, f"SET answered {ok!r}"
            elif op == "mget":
                self.tally.commands["MGET"] += 1
                found = await self.send(op, lambda: r.mget(names))
                for name, raw in zip(names, found, strict=True):
                    self.read(op, name, raw)
            elif op == "mset":
                self.tally.commands["MSET"] += 1
                ok = await self.send(op, lambda: r.mset(
                    {name: f"{n}:{name}" for name, n in writes.items()}))
                assert ok is True, f"MSET answered {ok!r}"
            else:
                self.tally.commands["pipeline SET"] += len(writes)
                self.tally.commands["pipeline GET"] += sent - len(writes)
                reads = names[BATCH // 2:]

                async def pipeline() -> list[Any]:
                    async with r.pipeline(transaction=False) as pipe:
                        for name, n in writes.items():
                            pipe.set(name, f"{n}:{name}")
                        for name in reads:
                            pipe.get(name)
                        return await pipe.execute()

                answers = await self.send(op, pipeline)
                assert answers[:len(writes)] == [True] * len(writes), answers
                for name, raw in zip(reads, answers[len(writes):], strict=True):
                    self.read(op, name, raw)
        except (rexc.RedisError, AssertionError) as exc:
            self.tally.fail(op, exc)
            self.tally.failures["commands"] += sent
            for name, n in writes.items():
                self.keys[name].maybe.append(n)
        else:
            for name, n in writes.items():
                self.keys[name].acked = n
                self.keys[name].maybe.clear()
            self.tally.latencies.append(time.monotonic() - t0)
        finally:
            self.busy.difference_update(names)
            if own:
                await r.aclose()

    async def recycle(self) -> None:
        """Close the pools' idle connections (in-flight ones are left alone)."""
        for c in self.clients:
            await c.connection_pool.disconnect(inuse_connections=False)
        self.recycles += 1

    async def run(self, rate: float, concurrency: int, stop: asyncio.Event,
                  progress: float) -> None:
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def slot() -> None:
            try:
                await self.one()
            finally:
                slots.release()

        start = next_tick = time.monotonic()
        next_report = start + progress
        next_recycle = start + 5
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_recycle:
                next_recycle = now + 5
                await self.recycle()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
                continue
            next_tick = max(next_tick + 1.0 / rate, now - 1)  # no burst after a stall
            await slots.acquire()
            task = asyncio.create_task(slot())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if now >= next_report:
                next_report += progress
                print(json.dumps({"t": round(now - start, 1),
                                  "commands": sum(self.tally.commands.values()),
                                  "failures": dict(self.tally.failures),
                                  "retries": sum(self.tally.retries.values()),
                                  "stale": self.tally.stale,
                                  "served_by": dict(self.served_by)}),
                      file=sys.stderr, flush=True)
        if tasks:
            await asyncio.wait(tasks)
        self.elapsed = time.monotonic() - start

    async def verify(self) -> tuple[int, list[dict[str, Any]]]:
        """Every key this run wrote, read back with MGET: lost when it holds neither its last
        acknowledged value nor a value of a later write whose outcome is unknown."""
        written = [n for n, k in self.keys.items() if k.acked is not None or k.maybe]
        lost: list[dict[str, Any]] = []
        for i in range(0, len(written), 200):
            chunk = written[i:i + 200]
            found = await self.send("verify", lambda c=chunk: self.clients[0].mget(c))
            for name, raw in zip(chunk, found, strict=True):
                got = version_of(raw, name)
                if got not in self.keys[name].allowed():
                    lost.append({"key": name, "got": got, "want": self.keys[name].allowed()})
        return len(written), lost


async def preflight(args: argparse.Namespace, key: str) -> dict[str, str]:
    """What the port refuses: plain TCP (it speaks TLS) and a command before AUTH."""
    seen: dict[str, str] = {}
    # No password: the key is never sent in clear text, PING needs none.
    plain = Redis(host=args.host, port=args.port, socket_timeout=5,
                  socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))
    try:
        await plain.ping()
        seen["plain"] = "answered without TLS"
    except rexc.RedisError as exc:
        seen["plain"] = f"refused: {type(exc).__name__}"
    finally:
        await plain.aclose()
    anonymous = client(args, None, 2)
    try:
        await anonymous.get("resp:0")
        seen["noauth"] = "answered without AUTH"
    except rexc.AuthenticationError as exc:
        seen["noauth"] = f"refused: {exc}"
    except rexc.ResponseError as exc:
        seen["noauth"] = ("refused: " if str(exc).startswith("NOAUTH") else "other error: ") \
            + str(exc)
    finally:
        await anonymous.aclose()
    return seen


def client(args: argparse.Namespace, key: str | None, protocol: int,
           single: bool = False) -> Redis:
    # No retries inside redis-py: Load.send retries, and counts them.
    return Redis(host=args.host, port=args.port, password=key, protocol=protocol,
                 single_connection_client=single,
                 ssl=True, ssl_ca_certs=args.ca, ssl_check_hostname=True,
                 socket_timeout=10, socket_connect_timeout=5,
                 max_connections=args.concurrency * 2, retry=Retry(NoBackoff(), 0))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def main(args: argparse.Namespace) -> int:
    # The Secret's first line: while a key is rotated it lists two.
    key = Path(args.api_key_file).read_text().split()[0]
    checks = await preflight(args, key)
    print(json.dumps({"t": 0, "preflight": checks}), file=sys.stderr, flush=True)
    clients = [client(args, key, 2), client(args, key, 3)]
    load = Load(clients, args.keys, args.retry_for,
                lambda: client(args, key, random.choice((2, 3)), single=True), args.fresh)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def watch() -> None:
        # A file, not a signal: `kubectl exec` can create it without a shell or kill.
        while not os.path.exists(args.stop_file):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        stop.set()

    watcher = asyncio.create_task(watch())
    await load.run(args.rate, args.concurrency, stop, args.progress)
    watcher.cancel()
    checked, lost = await load.verify()
    for c in clients:
        await c.aclose()
    t = load.tally
    commands = sum(t.commands.values())
    summary = {
        "preflight": checks, "commands": commands, "by_command": dict(t.commands),
        "seconds": round(load.elapsed, 1),
        "commands_per_second": round(commands / max(load.elapsed, 1e-9), 1),
        "failed_commands": t.failures.get("commands", 0),
        "failures": {k: v for k, v in t.failures.items() if k != "commands"},
        "failure_examples": t.failure_examples,
        "served_by": dict(load.served_by), "pool_recycles": load.recycles,
        "retries": dict(t.retries), "stale_reads": t.stale, "stale_examples": t.stale_examples,
        "keys_checked": checked, "lost_writes": len(lost), "lost_examples": lost[:MAX_EXAMPLES],
        "latency_ms": {"p50": percentile(t.latencies, 0.5), "p99": percentile(t.latencies, 0.99),
                       "max": percentile(t.latencies, 1.0)},
    }
    print(json.dumps(summary), flush=True)
    bad = summary["failed_commands"] or t.stale or lost
    return 1 if bad else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--ca", required=True)
    p.add_argument("--api-key-file", required=True)
    p.add_argument("--rate", type=float, default=200, help="operations a second")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--keys", type=int, default=3000)
    p.add_argument("--retry-for", type=float, default=15.0)
    p.add_argument("--fresh", type=float, default=0.15,
                   help="share of operations on a connection of their own")
    p.add_argument("--stop-file", default="/tmp/stop")
    p.add_argument("--progress", type=float, default=5.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
