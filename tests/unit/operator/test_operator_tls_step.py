"""handlers.tlsstep.rotate_ca against a stand-in for the API layer: a step of a move to a new CA
is taken once every pod reports the material, waited for (and, past the patience, a
Degraded message and one Warning Event naming the pods) otherwise; its state is the
Secret's, so a fresh operator memory (a restart) decides the same."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from distcache_operator import tls
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.tlsstep import TLS_WAIT_POLL, TLSState, rotate_ca


def _files(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


class FakeApi:
    def __init__(self, ca: dict[str, bytes], current: dict[str, bytes],
                 annotations: dict[str, str]) -> None:
        self.ca, self.current, self.annotations = ca, current, annotations
        self.events: list[tuple[str, str, bool]] = []
        self.replaced: list[dict[str, Any]] = []

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        return self.ca[key].decode()

    async def read_secret(self, namespace: str, name: str
                          ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        return dict(self.current), dict(self.annotations)

    async def replace_secret(self, obj: dict[str, Any]) -> None:
        self.replaced.append(obj)
        self.current = _files(obj)
        self.annotations = dict(obj["metadata"].get("annotations") or {})

    async def event(self, dc: Any, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))


def _report(cert: bytes, bundle: bytes) -> dict[str, Any]:
    return {"tls": {"cert_sha256": tls.fingerprint(cert),
                    "ca_sha256": sorted(tls.fingerprints(tls.split_pem(bundle))),
                    "reloads": 1, "error": None}}


def _thirty_s_into_step_one(make_dc: Any) -> tuple[
        Any, dict[str, bytes], dict[str, bytes], dict[str, bytes], bytes, FakeApi, Any]:
    """A move to a new CA 30 s after step 1 (ca.crt = old + new, the old certificate)."""
    dc = make_dc(replicas=2)
    old = _files(tls.issue_ca(dc))
    new = _files(tls.issue_ca(dc))
    cur = _files(tls.issue_node_cert(dc, old["ca.crt"], old["ca.key"]))
    bundle = old["ca.crt"] + new["ca.crt"]
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    api = FakeApi(new, {**cur, "ca.crt": bundle},
                  {tls.STEP_ANNOTATION: "trust-extended",
                   tls.SINCE_ANNOTATION: started.strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def step(mem: DistCacheMemory, loaded: Any) -> tuple[str | None, float | None]:
        got = await rotate_ca(api, dc, mem, TLSState(), loaded)  # type: ignore[arg-type]
        return got.not_loaded, got.poll

    return dc, old, new, cur, bundle, api, step


async def test_a_step_waits_for_the_pods_then_is_degraded_then_goes_on(
        make_dc, monkeypatch) -> None:
    monkeypatch.setenv("DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS", "0")  # the pods' reports alone
    _, old, new, cur, bundle, api, r = _thirty_s_into_step_one(make_dc)
    behind = {"cache-0": _report(cur["tls.crt"], bundle),
              "cache-1": _report(cur["tls.crt"], old["ca.crt"])}
    # 30 s in, cache-1 trusts the old CA alone: look again soon, nothing said.
    assert await r(DistCacheMemory(), behind) == (None, TLS_WAIT_POLL)
    assert api.replaced == [] and api.events == []
    # Past the patience: Degraded naming cache-1, one Warning Event however often it looks.
    monkeypatch.setenv("DISTCACHE_OPERATOR_TLS_LOAD_TIMEOUT_SECONDS", "20")
    c = DistCacheMemory()
    for _ in range(3):
        problem, delay = await r(c, {**behind, "cache-0": None})
        assert delay == TLS_WAIT_POLL and problem is not None
    assert "cache-1: does not trust CA" in problem and "cache-0: not answering" in problem
    assert [(e[0], e[2]) for e in api.events] == [("TLSNotLoaded", True)]
    assert api.replaced == []
    # Every pod trusts both (a restarted operator: a fresh memory): the next step.
    ready = {p: _report(cur["tls.crt"], bundle) for p in behind}
    assert await r(DistCacheMemory(), ready) == (None, TLS_WAIT_POLL)
    assert [e[0] for e in api.events][-1] == "CertificateRenewed"
    assert api.annotations[tls.STEP_ANNOTATION] == "new-ca-certificate"
    # Then it waits for every pod to serve that certificate before dropping the old CA.
    assert await r(DistCacheMemory(), ready) == (None, TLS_WAIT_POLL)
    assert len(api.replaced) == 1
    served = {p: _report(api.current["tls.crt"], bundle) for p in behind}
    assert await r(DistCacheMemory(), served) == (None, TLS_WAIT_POLL)
    assert [e[0] for e in api.events][-1] == "CATrustReduced"
    assert api.current["ca.crt"] == new["ca.crt"]
    # Done: nothing waits.
    assert await r(DistCacheMemory(), served) == (None, None)


async def test_by_default_a_step_also_waits_the_least_time_for_clients_outside(
        make_dc, monkeypatch) -> None:
    """Every pod has loaded the step, 30 s after it: clients outside the StatefulSet that
    mount ca.crt cannot be asked, so the next step waits for the least time (default 90 s)."""
    monkeypatch.delenv("DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS", raising=False)
    _, _, _, cur, bundle, api, r = _thirty_s_into_step_one(make_dc)
    ready = {p: _report(cur["tls.crt"], bundle) for p in ("cache-0", "cache-1")}
    problem, _ = await r(DistCacheMemory(), ready)
    assert problem is None and api.events == [] and api.replaced == []
    assert api.annotations[tls.STEP_ANNOTATION] == "trust-extended"
