"""handlers.tlsstep.ensure_tls in its three modes, against the API stand-in: the operator's
own CA and certificate issued once (an Event each); the user's Secret read as it is; a
cert-manager that is not installed is a problem to fix; a CA the operator cannot use is
Degraded TLSInvalid (one Event) while the pods go on with the bundle they mount, or a
problem when there is none."""

from __future__ import annotations

import base64

import pytest
from fakes_k8s import FakeApi

from conftest import body
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.problem import Problem
from distcache_operator.handlers.tlsstep import ensure_tls


async def test_tls_off_needs_nothing(make_dc) -> None:
    api = FakeApi(body())
    state = await ensure_tls(api, make_dc(tls={"enabled": False}), DistCacheMemory())  # type: ignore[arg-type]
    assert state.ca_pem is None and api.calls == [] and api.events == []


async def test_the_operators_own_ca_and_certificate_are_issued_once(make_dc) -> None:
    dc = make_dc()
    api, mem = FakeApi(body()), DistCacheMemory()
    state = await ensure_tls(api, dc, mem)  # type: ignore[arg-type]
    assert state.ca_pem == api.secret_value("ns", dc.tls_secret, "ca.crt")
    assert state.ca_pem == api.secret_value("ns", dc.ca_secret, "ca.crt")
    assert set(state.expiry) == {"caNotAfter", "certificateNotAfter"} and state.invalid is None
    assert api.reasons() == ["SecretCreated", "SecretCreated"]
    again = await ensure_tls(api, dc, mem)  # type: ignore[arg-type]
    assert again.ca_pem == state.ca_pem and len(api.events) == 2


async def test_a_users_secret_that_is_missing_is_a_problem(make_dc) -> None:
    with pytest.raises(Problem) as got:
        await ensure_tls(FakeApi(body()), make_dc(tls={"secretName": "mine"}),  # type: ignore[arg-type]
                         DistCacheMemory())
    assert got.value.reason == "SecretMissing" and "spec.tls.secretName" in got.value.message


async def test_cert_manager_not_installed_is_a_problem(make_dc) -> None:
    dc = make_dc(tls={"issuerRef": {"name": "ca-issuer"}})
    with pytest.raises(Problem) as got:
        await ensure_tls(FakeApi(body()), dc, DistCacheMemory())  # type: ignore[arg-type]
    assert got.value.reason == "CertManagerMissing"


async def test_a_ca_the_operator_cannot_use_is_tls_invalid_and_the_pods_go_on(make_dc) -> None:
    dc = make_dc()
    api, mem = FakeApi(body()), DistCacheMemory()
    mounted = (await ensure_tls(api, dc, mem)).ca_pem  # type: ignore[arg-type]
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": dc.ca_secret,
                                                              "namespace": "ns"},
           "data": {k: base64.b64encode(b"not a PEM").decode() for k in ("ca.crt", "ca.key")}}
    await api.replace_secret(bad)  # a user replaced the CA with something unusable
    for _ in range(3):
        state = await ensure_tls(api, dc, mem)  # type: ignore[arg-type]
        assert state.ca_pem == mounted and state.invalid and "RSA or EC" in state.invalid
    assert api.reasons().count("TLSInvalid") == 1
    del api.secrets[("ns", dc.tls_secret)]  # and nothing mounted to go on with
    with pytest.raises(Problem) as got:
        await ensure_tls(api, dc, mem)  # type: ignore[arg-type]
    assert got.value.reason == "TLSInvalid"
