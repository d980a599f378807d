"""handlers.secrets.ensure_secrets: the generated API key and cluster secret are created once
(an Event each); a peer Secret deleted under running pods comes back with the value they
hold, never a new one; after an operator restart that value is unknown, so it is a problem
to fix (Degraded PeerSecretLost, how to restore it), not a new Secret."""

from __future__ import annotations

import pytest
from fakes_k8s import FakeApi

from conftest import body
from distcache_operator import builders
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.peers import ensure_session
from distcache_operator.handlers.problem import Problem
from distcache_operator.handlers.secrets import ensure_secrets


async def test_generated_secrets_are_created_once(make_dc) -> None:
    dc = make_dc()
    api, mem = FakeApi(body()), DistCacheMemory()
    secret = await ensure_secrets(api, dc, mem)  # type: ignore[arg-type]
    assert secret == api.secret_value("ns", dc.cluster_secret, "cluster-secret")
    assert api.reasons() == ["SecretCreated", "SecretCreated"]
    assert await ensure_secrets(api, dc, mem) == secret  # type: ignore[arg-type]
    assert len(api.events) == 2


async def test_a_deleted_peer_secret_comes_back_with_the_value_the_pods_hold(make_dc) -> None:
    dc = make_dc()
    api, mem = FakeApi(body()), DistCacheMemory()
    secret = await ensure_secrets(api, dc, mem)  # type: ignore[arg-type]
    api.sts = 3  # then the pods run with it
    await ensure_session(mem, secret, None)  # the operator talks to the pods with it
    del api.secrets[("ns", dc.cluster_secret)]
    assert await ensure_secrets(api, dc, mem) == secret  # type: ignore[arg-type]
    assert api.secret_value("ns", dc.cluster_secret, "cluster-secret") == secret
    assert api.events[-1][:1] == ("PeerSecretRestored",) and api.events[-1][2]
    await mem.close()


async def test_a_peer_secret_lost_across_a_restart_is_a_problem_not_a_new_secret(
        make_dc) -> None:
    dc = make_dc()
    api = FakeApi(body())
    await ensure_secrets(api, dc, DistCacheMemory())  # type: ignore[arg-type]
    api.sts = 3
    del api.secrets[("ns", dc.cluster_secret)]
    with pytest.raises(Problem) as got:
        await ensure_secrets(api, dc, DistCacheMemory())  # type: ignore[arg-type]
    assert got.value.reason == "PeerSecretLost"
    assert f"cat {builders.CLUSTER_SECRET_FILE}" in got.value.message  # how to restore it
    assert ("ns", dc.cluster_secret) not in api.secrets


async def test_a_missing_user_api_key_secret_is_a_problem(make_dc) -> None:
    dc = make_dc(auth={"apiKeySecretRef": {"name": "mine"}})
    with pytest.raises(Problem) as got:
        await ensure_secrets(FakeApi(body()), dc, DistCacheMemory())  # type: ignore[arg-type]
    assert got.value.reason == "SecretMissing" and "mine" in got.value.message
