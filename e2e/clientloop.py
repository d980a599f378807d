"""A client loop that runs while a certificate is swapped: requests to every pod, each on a
new TLS connection and never retried, so a pod that restarts, drops connections or serves a
certificate the client cannot verify during the swap shows up as a failed request.

Each round writes a versioned value (a counter that only grows) through one pod and reads it
back through the next: a read older than the write just acknowledged is counted as stale.
Each request records the certificate the pod presented in its handshake, so the test can show
the loop ran across the swap (every pod seen serving the old and then the new certificate),
not only before and after it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ophelp import Forward


@dataclass
class LoopResult:
    requests: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    # pod -> the certificates (sha256 of the DER) it presented, in the order first seen
    served: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.requests} requests, {len(self.failures)} failed, {len(self.stale)} "
                f"stale reads, certificates seen per pod: "
                f"{ {p: [c[:12] for c in certs] for p, certs in self.served.items()} }")


class ClientLoop:
    """Runs in a thread from `start()` to `stop()`, which returns what it saw."""

    def __init__(self, pods: list[str], api_key: str, ca_pem: str, every: float = 0.2) -> None:
        self.pods = sorted(pods)
        self.forwards = {pod: Forward(f"pod/{pod}") for pod in self.pods}
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        self.ssl = ssl.create_default_context(cadata=ca_pem)
        self.every = every
        self.result = LoopResult()
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def start(self) -> ClientLoop:
        # Port-forwards started before the swap, so a failure during it is the pod's.
        for fwd in self.forwards.values():
            fwd.url()
        self.started = time.monotonic()
        self.thread.start()
        return self

    def stop(self) -> LoopResult:
        self.halt.set()
        self.thread.join(timeout=60)
        for fwd in self.forwards.values():
            fwd.close()
        return self.result

    def _request(self, pod: str, path: str, body: Any) -> Any:
        """One POST on a new TLS connection; the handshake's certificate is recorded."""
        port = int(self.forwards[pod].url().rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ssl, timeout=10)
        self.result.requests += 1
        try:
            conn.connect()
            assert conn.sock is not None
            der = conn.sock.getpeercert(binary_form=True)
            assert der
            fp = hashlib.sha256(der).hexdigest()
            seen = self.result.served.setdefault(pod, [])
            if fp not in seen:
                seen.append(fp)
            conn.request("POST", path, body=json.dumps(body), headers=self.headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {raw[:200]!r}")
            return json.loads(raw)
        finally:
            conn.close()

    def _run(self) -> None:
        n = 0
        while not self.halt.is_set():
            for i, pod in enumerate(self.pods):
                n += 1
                key = f"swap-loop-{n % 50}"
                reader = self.pods[(i + 1) % len(self.pods)]
                t = round(time.monotonic() - self.started, 2)
                try:
                    self._request(pod, "/mset", {"items": [{"key": key, "value": n}]})
                except Exception as exc:  # every failure counted; the loop goes on
                    self.result.failures.append({"t": t, "pod": pod, "op": "mset",
                                                 "error": f"{type(exc).__name__}: {exc}"})
                    continue
                try:
                    got = self._request(reader, "/mget", {"keys": [key]})["values"].get(key)
                except Exception as exc:
                    self.result.failures.append({"t": t, "pod": reader, "op": "mget",
                                                 "error": f"{type(exc).__name__}: {exc}"})
                    continue
                if got != n:
                    self.result.stale.append({"t": t, "key": key, "got": got, "want": n})
            self.halt.wait(self.every)


def assert_swap_seen(result: LoopResult, pods: list[str], old: str, new: str) -> None:
    """The loop failed no request, read nothing stale, and saw every pod serve its old
    certificate and then `new`: the requests ran across the swap, not only around it."""
    print(f"\nclient loop during the swap: {result.summary()}")
    assert not result.failures, f"{len(result.failures)} requests failed during the swap: " \
        f"{result.failures[:10]}"
    assert not result.stale, f"{len(result.stale)} stale reads: {result.stale[:10]}"
    for pod in pods:
        seen = result.served.get(pod, [])
        assert seen and seen[0] == old and seen[-1] == new, (
            f"{pod}: the loop did not see the swap (old {old[:12]}, new {new[:12]}, "
            f"seen {[c[:12] for c in seen]})")
