"""The DistCache model: defaults, derived values and the errors a user must fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distcache_operator import model
from distcache_operator.model import DistCache, SecretKeyRef, SpecError, parse_quantity

CRD = Path(__file__).parents[3] / "charts" / "distcache" / "crds" / "distcache.io_distcaches.yaml"


def test_defaults_of_an_empty_spec(make_dc) -> None:
    dc = make_dc()
    s = dc.spec
    assert (s.replicas, s.replication_factor, s.image_pull_policy) == (3, 2, "IfNotPresent")
    assert s.resources["limits"]["memory"] == "512Mi"
    assert s.max_memory == 256 * 1024**2  # half the default 512Mi limit
    assert s.api_key_ref is None and s.pdb_enabled
    assert dc.api_key_secret == SecretKeyRef("cache-api-key", "api-key")
    assert dc.spec.termination_grace_period_seconds == 30


def test_names_selector_and_member_urls(make_dc) -> None:
    dc = make_dc()
    assert (dc.peers_service, dc.ring_configmap, dc.cluster_secret) == (
        "cache-peers", "cache-ring", "cache-cluster")
    assert dc.selector == "app.kubernetes.io/name=distcache,app.kubernetes.io/instance=cache"
    assert dc.member_id(4) == "cache-4" and DistCache.ordinal("cache-4") == 4
    assert dc.member_url(0) == "https://cache-0.cache-peers.ns.svc.cluster.local:8080"
    assert (dc.tls_secret, dc.ca_secret) == ("cache-tls", "cache-ca")
    plain = make_dc(tls={"enabled": False})
    assert plain.member_url(0) == "http://cache-0.cache-peers.ns.svc.cluster.local:8080"
    assert make_dc(tls={"secretName": "mine"}).tls_secret == "mine"


@pytest.mark.parametrize(("text", "expected"), [
    ("1048576", 1048576), ("512Mi", 512 * 1024**2), ("1Gi", 1024**3), ("1G", 10**9),
    ("1.5Gi", int(1.5 * 1024**3)), ("100k", 100_000),
])
def test_quantities(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "12MB", "-1", "1 Gi", "Mi"])
def test_bad_quantities_say_what_to_write(text: str) -> None:
    with pytest.raises(SpecError, match="not a quantity"):
        parse_quantity(text, "spec.maxMemory")


def test_max_memory_from_the_limit_or_given(make_dc) -> None:
    assert make_dc(resources={"limits": {"memory": "1Gi"}}).spec.max_memory == 512 * 1024**2
    assert make_dc(maxMemory="100Mi").spec.max_memory == 100 * 1024**2


@pytest.mark.parametrize(("spec", "message"), [
    ({"maxMemory": "2Gi"}, "over the pod's memory limit"),
    ({"replicas": 2, "replicationFactor": 3}, "must not exceed spec.replicas"),
    ({"replicas": -1}, "at least 0"),
    ({"maxMemory": "10k"}, "too small"),
    ({"auth": {"apiKeySecretRef": {"key": "x"}}}, "name is required"),
    ({"tls": {"issuerRef": {"kind": "Issuer"}}}, "issuerRef.name is required"),
    ({"tls": {"secretName": "s", "issuerRef": {"name": "i"}}}, "not both"),
    ({"tls": {"issuerRef": {"name": "i", "kind": "Other"}}}, "Issuer or ClusterIssuer"),
])
def test_specs_the_operator_cannot_serve(make_dc, spec, message) -> None:
    with pytest.raises(SpecError, match=message):
        make_dc(**spec)


def test_replication_above_replicas_is_fine_for_zero_or_one(make_dc) -> None:
    assert make_dc(replicas=1, replicationFactor=2).spec.replicas == 1
    assert make_dc(replicas=0).spec.replicas == 0


def test_user_api_key_secret(make_dc) -> None:
    dc = make_dc(auth={"apiKeySecretRef": {"name": "mine"}})
    assert dc.api_key_secret == SecretKeyRef("mine", "api-key")


def test_tls_sources_and_service_monitor(make_dc) -> None:
    from distcache_operator.model import IssuerRef

    plain = make_dc()
    assert plain.spec.tls_issuer is None and plain.tls_secret == "cache-tls"
    assert plain.spec.service_monitor is False
    cm = make_dc(tls={"issuerRef": {"name": "ca"}})
    assert cm.spec.tls_issuer == IssuerRef("ca", "Issuer", "cert-manager.io")
    assert cm.tls_secret == "cache-tls" and cm.certificate == "cache"
    sm = make_dc(metrics={"serviceMonitor": {"enabled": True, "labels": {"a": "b"}}})
    assert sm.spec.service_monitor and sm.spec.service_monitor_interval == "30s"
    assert sm.spec.service_monitor_labels == {"a": "b"}


def test_crd_tls_sources_and_metrics_match_the_model() -> None:
    crd = yaml.safe_load(CRD.read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]
    tls = props["tls"]
    rules = " ".join(r["rule"] for r in tls["x-kubernetes-validations"])
    assert "has(self.issuerRef)" in rules and "secretName" in rules
    ref = tls["properties"]["issuerRef"]
    assert ref["required"] == ["name"]
    assert ref["properties"]["kind"]["enum"] == ["Issuer", "ClusterIssuer"]
    assert ref["properties"]["kind"]["default"] == "Issuer"
    assert ref["properties"]["group"]["default"] == "cert-manager.io"
    monitor = props["metrics"]["properties"]["serviceMonitor"]["properties"]
    assert monitor["enabled"]["default"] is False
    assert monitor["interval"]["default"] == "30s"


def test_crd_matches_the_model() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["shortNames"] == ["dcache", "dc"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == model.VERSION and crd["spec"]["group"] == model.GROUP
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Replicas", "Ready", "Phase", "Ring", "Migration", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert props["replicas"]["default"] == model.DEFAULT_REPLICAS
    assert props["replicas"]["minimum"] == 0
    assert props["replicationFactor"]["default"] == model.DEFAULT_REPLICATION
    assert "replicationFactor <= self.replicas" in spec["x-kubernetes-validations"][0]["rule"]
    # The schema's quantity pattern accepts nothing the model refuses.
    import re
    for text in ["256Mi", "1Gi", "1048576", "1.5G"]:
        assert re.match(props["maxMemory"]["pattern"], text)
        parse_quantity(text)
    # Every property has a description or is a pass-through of a core type.
    for name, prop in props.items():
        assert prop.get("description"), name


def test_crd_has_no_empty_values() -> None:
    """A comma inside a flow mapping (`{description: a, b}`) silently makes keys: the API
    server's strict decoding then refuses the CRD on update."""
    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert value is not None, f"{path}.{key} is empty"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(yaml.safe_load(CRD.read_text()), "")
