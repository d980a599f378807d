"""handlers.credentials: a rotation of the API key or the cluster secret as the user sees it
(status.credentials, one Event when every pod has the Secret's keys, one Warning when some
lag), and the metrics token the ServiceMonitor sends (one line, never the rotation's two)."""

from __future__ import annotations

from typing import Any

from fakes_k8s import FakeApi

from distcache_node.keyfile import fingerprint
from distcache_operator.handlers.credentials import (
    CREDENTIALS_PATIENCE,
    credentials_status,
    ensure_metrics_token,
)
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.model import DistCache


def _pod(*keys: str) -> dict[str, Any]:
    """A pod's /cluster/status credentials report, as the node writes it."""
    report = {"fingerprints": [fingerprint(k) for k in keys]}
    return {"credentials": {"api_key": report, "cluster_secret": report}}


async def _look(api: FakeApi, dc: DistCache, mem: DistCacheMemory, value: str,
                pods: dict[str, Any], now: float) -> dict[str, Any]:
    return await credentials_status(api, dc, mem, {"apiKey": ("cache-api-key", value),
                                                   "clusterSecret": ("cache-cluster", value)},
                                    pods, now)


async def test_a_rotation_is_followed_pod_by_pod_and_said_once_when_done(make_dc: Any) -> None:
    dc, api, mem = make_dc(), FakeApi(), DistCacheMemory()
    # Settled on key A: nothing to say (an operator start is no rotation).
    st = await _look(api, dc, mem, "A", {"cache-0": _pod("A"), "cache-1": _pod("A")}, 0.0)
    assert st["apiKey"] == {"secret": "cache-api-key", "keys": 1, "podsBehind": []}
    assert api.reasons() == []
    # The user adds B as a second line: pod 1's kubelet has not updated its volume yet.
    st = await _look(api, dc, mem, "A\nB", {"cache-0": _pod("A", "B"), "cache-1": _pod("A")},
                     1.0)
    assert st["apiKey"]["podsBehind"] == ["cache-1"] and st["apiKey"]["keys"] == 2
    assert api.reasons() == []
    st = await _look(api, dc, mem, "A\nB", {"cache-0": _pod("A", "B"),
                                            "cache-1": _pod("A", "B")}, 50.0)
    assert st["apiKey"]["podsBehind"] == [] and st["clusterSecret"]["podsBehind"] == []
    assert api.reasons().count("CredentialsLoaded") == 2  # one per credential
    await _look(api, dc, mem, "A\nB", {"cache-0": _pod("A", "B"), "cache-1": _pod("A", "B")},
                60.0)
    assert api.reasons().count("CredentialsLoaded") == 2  # said once


async def test_pods_that_lag_past_the_patience_get_one_warning(make_dc: Any) -> None:
    dc, api, mem = make_dc(), FakeApi(), DistCacheMemory()
    await _look(api, dc, mem, "A", {"cache-0": _pod("A"), "cache-1": _pod("A")}, 0.0)
    # cache-1's kubelet does not update its volume; cache-2 does not answer (not counted:
    # a pod that starts reads the Secret as it is).
    pods = {"cache-0": _pod("A", "B"), "cache-1": _pod("A"), "cache-2": None}
    for now in (1.0, 10.0, CREDENTIALS_PATIENCE + 11, CREDENTIALS_PATIENCE + 30):
        st = await _look(api, dc, mem, "A\nB", pods, now)
    assert st["apiKey"]["podsBehind"] == ["cache-1"]
    assert api.reasons().count("CredentialsNotLoaded") == 2  # once per credential
    assert "cache-1" in next(m for r, m, _ in api.events if r == "CredentialsNotLoaded")


async def test_a_new_cache_coming_up_is_no_rotation(make_dc: Any) -> None:
    dc, api, mem = make_dc(), FakeApi(), DistCacheMemory()
    await _look(api, dc, mem, "A", {"cache-0": None, "cache-1": None}, 0.0)  # starting
    st = await _look(api, dc, mem, "A", {"cache-0": _pod("A"), "cache-1": _pod("A")}, 5.0)
    assert st["apiKey"]["podsBehind"] == [] and api.reasons() == []


async def test_the_metrics_token_is_the_first_key_and_follows_the_secret(make_dc: Any) -> None:
    dc = make_dc(metrics={"serviceMonitor": {"enabled": True}})
    api = FakeApi()
    await ensure_metrics_token(api, dc, "A\n")
    assert api.secret_value(dc.namespace, "cache-metrics-token", "token") == "A"
    await ensure_metrics_token(api, dc, "A\nB\n")  # a rotation began: still one line
    assert api.secret_value(dc.namespace, "cache-metrics-token", "token") == "A"
    await ensure_metrics_token(api, dc, "B\n")  # the old line dropped
    assert api.secret_value(dc.namespace, "cache-metrics-token", "token") == "B"


async def test_the_operator_sends_the_first_cluster_secret_during_a_rotation() -> None:
    # Two lines in one header would be refused by every pod (and by aiohttp itself).
    from distcache_node.cluster.peers import SECRET_HEADER
    from distcache_operator.handlers.peers import ensure_session

    mem = DistCacheMemory()
    await ensure_session(mem, "old-secret\nnew-secret\n", None)
    try:
        assert mem.session is not None
        assert mem.session.headers[SECRET_HEADER] == "old-secret"
    finally:
        await mem.close()
