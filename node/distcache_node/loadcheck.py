"""`python -m distcache_node.loadcheck`: steady reads and writes through the project's client,
every failure recorded with its reason, and at the end every acknowledged write read back.

It is what an application does: the ring-aware `DistCacheClient`, seeded with one URL (in
Kubernetes the DistCache's client Service, `https://<name>.<namespace>.svc:8080`), sending each
key to its owner and retrying idempotent calls elsewhere. Run it while a cache rolls or
shrinks to see whether anyone would have noticed:

    python -m distcache_node.loadcheck --seed https://cache.demo.svc:8080 \\
        --api-key-file /key/api-key --ca /tls/ca.crt --rate 300 --stop-file /tmp/stop

It runs for `--duration` seconds, or (0) until SIGTERM/SIGINT or until `--stop-file` exists,
then reads every key it wrote and prints one JSON summary on stdout: requests, failures by
reason (with the first examples), lost writes (a key whose acknowledged value is gone or
older), stale reads, latencies. Progress goes to stderr every `--progress` seconds. Exit code 0
when nothing failed and nothing was lost, 1 otherwise.

The bookkeeping is exact because no two operations on one key are ever in flight together:
each key's last acknowledged value is known, and a write that failed (its outcome unknown:
it may have reached some replicas) adds its value to those the key may legitimately hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distcache_node.client import CacheError, DistCacheClient

ABSENT = "<absent>"  # a key that was never written, or deleted
MAX_EXAMPLES = 20


@dataclass
class Key:
    acked: Any = ABSENT
    maybe: list[Any] = field(default_factory=list)  # values of writes with unknown outcome

    def allowed(self) -> list[Any]:
        return [self.acked, *self.maybe]

    def ack(self, value: Any) -> None:
        self.acked = value
        self.maybe.clear()


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    stale: int = 0
    stale_examples: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    late: int = 0  # ticks that found every concurrency slot busy

    def fail(self, op: str, reason: str, detail: str) -> None:
        self.failures[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"t": round(time.monotonic() - self.started, 3), "op": op,
                                  "reason": reason, "detail": detail[:300]})


def reason_of(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, CacheError):
        code = exc.body.get("error") if isinstance(exc.body, dict) else None
        return f"http_{exc.status}" + (f"_{code}" if code else ""), str(exc.body)
    return type(exc).__name__, str(exc)


class LoadCheck:
    def __init__(self, client: DistCacheClient, keys: int, rate: float, concurrency: int,
                 prefix: str) -> None:
        self.client = client
        self.names = [f"{prefix}{i}" for i in range(keys)]
        self.keys = {name: Key() for name in self.names}
        self.busy: set[str] = set()
        self.rate = rate
        self.slots = asyncio.Semaphore(concurrency)
        self.tally = Tally()
        self.seq = 0

    def _free(self, n: int) -> list[str]:
        picked: list[str] = []
        for _ in range(n * 4):
            name = random.choice(self.names)
            if name not in self.busy and name not in picked:
                picked.append(name)
                if len(picked) == n:
                    break
        return picked

    def _value(self) -> dict[str, Any]:
        self.seq += 1
        return {"n": self.seq, "t": round(time.time(), 3)}

    def _read(self, op: str, name: str, got: Any) -> None:
        state = self.keys[name]
        if got not in state.allowed():
            self.tally.stale += 1
            if len(self.tally.stale_examples) < MAX_EXAMPLES:
                self.tally.stale_examples.append({
                    "t": round(time.monotonic() - self.tally.started, 3), "op": op,
                    "key": name, "got": got, "want": state.allowed()})

    async def one(self) -> None:
        """One operation: get 40%, set 35%, mget 10%, mset 10%, delete 5%."""
        roll = random.random()
        op = ("get" if roll < 0.40 else "set" if roll < 0.75 else "mget" if roll < 0.85
              else "mset" if roll < 0.95 else "delete")
        names = self._free(10 if op in ("mget", "mset") else 1)
        if not names:
            self.slots.release()
            return
        self.busy.update(names)
        values = {name: self._value() for name in names} if op in ("set", "mset") else {}
        t0 = time.monotonic()
        self.tally.requests[op] += 1
        try:
            if op == "get":
                self._read(op, names[0], await self.client.get(names[0], ABSENT))
            elif op == "mget":
                found = await self.client.mget(names)
                for name in names:
                    self._read(op, name, found.get(name, ABSENT))
            elif op == "set":
                await self.client.set(names[0], values[names[0]])
            elif op == "mset":
                await self.client.mset((name, values[name], None) for name in names)
            else:
                await self.client.delete(names[0])
        except Exception as exc:  # every failure is counted, none stops the run
            reason, detail = reason_of(exc)
            self.tally.fail(op, reason, detail)
            for name, value in values.items():
                self.keys[name].maybe.append(value)
            if op == "delete":
                self.keys[names[0]].maybe.append(ABSENT)
        else:
            for name, value in values.items():
                self.keys[name].ack(value)
            if op == "delete":
                self.keys[names[0]].ack(ABSENT)
            self.tally.latencies.append(time.monotonic() - t0)
        finally:
            self.busy.difference_update(names)
            self.slots.release()

    async def run(self, stop: asyncio.Event, duration: float, progress: float) -> None:
        interval = 1.0 / self.rate
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_tick, next_report = start, start + progress
        while not stop.is_set() and (duration <= 0 or time.monotonic() - start < duration):
            now = time.monotonic()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
                continue
            next_tick += interval
            if next_tick < now - 1:  # far behind (a stall): do not burst to catch up
                next_tick = now
            if self.slots.locked():
                self.tally.late += 1
            await self.slots.acquire()
            task = asyncio.create_task(self.one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if progress > 0 and now >= next_report:
                next_report += progress
                print(json.dumps({"t": round(now - start, 1), "at": round(time.time(), 1),
                                  "requests": sum(self.tally.requests.values()),
                                  "failures": dict(self.tally.failures),
                                  "client_retries": self.client.retries}),
                      file=sys.stderr, flush=True)
        if tasks:
            await asyncio.wait(tasks)
        self.elapsed = time.monotonic() - start

    async def verify(self) -> tuple[int, list[dict[str, Any]], int]:
        """Every key this run wrote, read back: lost when it holds neither its last
        acknowledged value nor the value of a later write whose outcome is unknown."""
        written = [n for n, k in self.keys.items() if k.acked is not ABSENT or k.maybe]
        lost: list[dict[str, Any]] = []
        unreadable = 0
        for i in range(0, len(written), 500):
            chunk = written[i:i + 500]
            for _attempt in range(5):
                try:
                    found = await self.client.mget(chunk)
                    break
                except Exception as exc:
                    reason, detail = reason_of(exc)
                    self.tally.fail("verify", reason, detail)
                    await asyncio.sleep(1)
            else:
                unreadable += len(chunk)
                continue
            for name in chunk:
                got = found.get(name, ABSENT)
                if got not in self.keys[name].allowed():
                    lost.append({"key": name, "got": got, "want": self.keys[name].allowed()})
        return len(written), lost, unreadable

    def summary(self, checked: int, lost: list[dict[str, Any]],
                unreadable: int) -> dict[str, Any]:
        lat = sorted(self.tally.latencies)

        def pct(p: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else 0.0

        requests = sum(self.tally.requests.values())
        acked = sum(1 for k in self.keys.values() if k.acked is not ABSENT)
        return {
            "requests": requests,
            "by_op": dict(self.tally.requests),
            "failures": sum(self.tally.failures.values()),
            "failure_reasons": dict(self.tally.failures),
            "failure_examples": self.tally.examples,
            "lost_writes": len(lost) + unreadable,
            "lost_examples": lost[:MAX_EXAMPLES],
            "keys_checked": checked,
            "keys_holding_an_acknowledged_value": acked,
            "stale_reads": self.tally.stale,
            "stale_examples": self.tally.stale_examples,
            "client_retries": self.client.retries,
            "seconds": round(self.elapsed, 1),
            "rate_target": self.rate,
            "rate_achieved": round(requests / self.elapsed, 1) if self.elapsed else 0.0,
            "late_ticks": self.tally.late,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distcache_node.loadcheck",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seed", action="append", required=True,
                   help="a node or Service URL to read the ring from (repeatable)")
    p.add_argument("--api-key", default=os.environ.get("DISTCACHE_API_KEY", ""),
                   help="default: $DISTCACHE_API_KEY")
    p.add_argument("--api-key-file", type=Path, help="read the API key from this file")
    p.add_argument("--ca", type=Path, help="CA bundle to verify the nodes' certificates")
    p.add_argument("--rate", type=float, default=300, help="operations per second")
    p.add_argument("--duration", type=float, default=0,
                   help="seconds; 0: until SIGTERM/SIGINT or --stop-file")
    p.add_argument("--stop-file", type=Path, help="stop once this file exists")
    p.add_argument("--keys", type=int, default=2000, help="size of the key space")
    p.add_argument("--prefix", default="loadcheck:", help="key prefix")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--retry-for", type=float, default=15.0,
                   help="seconds the client retries an idempotent call (0: no retry at all, "
                        "not even on another node)")
    p.add_argument("--progress", type=float, default=5.0,
                   help="seconds between progress lines on stderr (0: none)")
    return p


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    api_key = args.api_key
    if args.api_key_file:
        api_key = args.api_key_file.read_text().strip()
    context = ssl.create_default_context(cafile=str(args.ca)) if args.ca else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_stop_file() -> None:
        while args.stop_file and not stop.is_set():
            if args.stop_file.exists():
                stop.set()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_stop_file())
    client = DistCacheClient(args.seed, api_key=api_key, ssl_context=context,
                             timeout=args.timeout, retry_for=args.retry_for)
    try:
        for attempt in range(30):
            try:
                await client.refresh()
                break
            except ConnectionError:
                if attempt == 29:
                    raise
                await asyncio.sleep(1)
        check = LoadCheck(client, args.keys, args.rate, args.concurrency, args.prefix)
        await check.run(stop, args.duration, args.progress)
        return check.summary(*await check.verify())
    finally:
        watcher.cancel()
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.keys < 20 or args.concurrency < 1:
        print("loadcheck: --rate > 0, --keys >= 20 and --concurrency >= 1", file=sys.stderr)
        return 2
    summary = asyncio.run(main_async(args))
    print(json.dumps(summary), flush=True)
    return 0 if summary["failures"] == 0 and summary["lost_writes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
