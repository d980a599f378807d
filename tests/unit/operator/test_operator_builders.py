"""Pure builders: owner references everywhere, restricted-PSS pods, probes, secrets."""

from __future__ import annotations

from typing import Any

from distcache_node.cluster.ring import RingDoc
from distcache_operator import builders
from distcache_operator.builders import (
    build_client_service,
    build_headless_service,
    build_pdb,
    build_ring_configmap,
    build_secrets,
    build_statefulset,
    initial_ring,
)


def _owned(obj, dc) -> None:
    ref = obj["metadata"]["ownerReferences"]
    assert ref == [{"apiVersion": "distcache.io/v1alpha1", "kind": "DistCache",
                    "name": dc.name, "uid": dc.uid, "controller": True,
                    "blockOwnerDeletion": True}]
    assert obj["metadata"]["namespace"] == dc.namespace
    assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == dc.name


def test_every_object_is_owned(make_dc) -> None:
    dc = make_dc()
    objects = [build_statefulset(dc, 3), build_headless_service(dc), build_client_service(dc),
               build_ring_configmap(dc, initial_ring(dc, 3)), build_pdb(dc),
               *build_secrets(dc)]
    for obj in objects:
        _owned(obj, dc)


def test_statefulset_pods_fit_the_restricted_pod_security_standard(make_dc) -> None:
    sts = build_statefulset(make_dc(), 4)
    assert sts["spec"]["replicas"] == 4
    assert sts["spec"]["serviceName"] == "cache-peers"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 30
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "ring", "configMap": {"name": "cache-ring"}} in pod["volumes"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= \
        sts["spec"]["template"]["metadata"]["labels"].items()


def test_node_settings_come_from_the_spec_and_secrets_from_secret_refs(make_dc) -> None:
    dc = make_dc(maxMemory="64Mi", replicationFactor=3, writeQuorum=2,
                 rateLimit={"requestsPerSecond": 100, "burst": 50}, image="me/node:1",
                 auth={"apiKeySecretRef": {"name": "mine", "key": "k"}})
    (c,) = build_statefulset(dc, 3)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "me/node:1"
    assert "--max-memory=67108864" in c["args"] and "--replication=3" in c["args"]
    assert "--write-quorum=2" in c["args"] and "--rate-limit=100" in c["args"]
    assert "--rate-limit-burst=50" in c["args"]
    assert f"--ring-file={builders.RING_DIR}/ring.json" in c["args"]
    sts = build_statefulset(dc, 3)
    assert _secret_behind(sts, "--api-key-file") == ("mine", "k")
    assert _secret_behind(sts, "--cluster-secret-file") == ("cache-cluster", "cluster-secret")
    # No secret value on the command line, none in the environment (fixed for the pod's life:
    # a rotated key would reach no running pod).
    assert not any(a.startswith(("--api-key=", "--cluster-secret=")) for a in c["args"])
    assert not any("secretKeyRef" in str(e) for e in c["env"])


def _secret_behind(sts: dict[str, Any], flag: str) -> tuple[str, str]:
    """(Secret name, key) whose value the node reads at the file `flag` names: through a
    read-only mount of a whole secret volume (a subPath mount is never updated by kubelet)
    whose items put that key at the file's name."""
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (path,) = [a.split("=", 1)[1] for a in c["args"] if a.startswith(f"{flag}=")]
    folder, name = path.rsplit("/", 1)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == folder]
    assert mount.get("readOnly") is True and "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == name]
    return volume["secret"]["secretName"], item["key"]


def test_the_generated_api_key_secret_is_mounted_as_the_key_file(make_dc) -> None:
    sts = build_statefulset(make_dc(), 3)
    assert _secret_behind(sts, "--api-key-file") == ("cache-api-key", "api-key")
    assert _secret_behind(sts, "--cluster-secret-file") == ("cache-cluster", "cluster-secret")


def test_default_image_comes_from_the_operator_environment(make_dc, monkeypatch) -> None:
    monkeypatch.setenv("DISTCACHE_OPERATOR_NODE_IMAGE", "registry/node:9")
    (c,) = build_statefulset(make_dc(), 1)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry/node:9"


def test_scheduling_and_pod_metadata_pass_through(make_dc) -> None:
    dc = make_dc(nodeSelector={"disk": "ssd"}, tolerations=[{"key": "k", "operator": "Exists"}],
                 priorityClassName="high", podAnnotations={"a": "b"},
                 podLabels={"team": "x", "app.kubernetes.io/instance": "hijack"})
    tpl = build_statefulset(dc, 1)["spec"]["template"]
    assert tpl["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert tpl["spec"]["priorityClassName"] == "high"
    assert tpl["metadata"]["annotations"] == {"a": "b"}
    assert tpl["metadata"]["labels"]["team"] == "x"
    assert tpl["metadata"]["labels"]["app.kubernetes.io/instance"] == "cache"  # selector wins


def test_services_and_pdb(make_dc) -> None:
    dc = make_dc()
    peers = build_headless_service(dc)["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    client = build_client_service(dc)
    assert client["metadata"]["name"] == "cache" and "publishNotReadyAddresses" not in \
        client["spec"]
    assert build_pdb(dc)["spec"]["maxUnavailable"] == 1


def test_secrets_generate_random_keys_and_respect_a_user_key(make_dc) -> None:
    a, b = build_secrets(make_dc()), build_secrets(make_dc())
    assert [s["metadata"]["name"] for s in a] == ["cache-cluster", "cache-api-key"]
    assert a[0]["stringData"]["cluster-secret"] != b[0]["stringData"]["cluster-secret"]
    assert len(a[1]["stringData"]["api-key"]) >= 32
    mine = build_secrets(make_dc(auth={"apiKeySecretRef": {"name": "mine"}}))
    assert [s["metadata"]["name"] for s in mine] == ["cache-cluster"]


def test_ring_configmap_holds_a_valid_initial_ring(make_dc) -> None:
    import json

    dc = make_dc(replicationFactor=3)
    cm = build_ring_configmap(dc, initial_ring(dc, 3))
    doc = RingDoc.from_json(json.loads(cm["data"]["ring.json"]))
    assert doc.version == 1 and doc.replication == 3
    assert [(m.id, m.state) for m in doc.members] == [
        ("cache-0", "active"), ("cache-1", "active"), ("cache-2", "active")]
    assert doc.members[0].url == dc.member_url(0)


def test_tls_on_by_default_mounts_the_certificate_and_probes_https(make_dc) -> None:
    pod = build_statefulset(make_dc(), 3)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "--tls-cert=/etc/distcache/tls/tls.crt" in c["args"]
    assert "--tls-ca=/etc/distcache/tls/ca.crt" in c["args"]
    assert any(a.startswith("--advertise-url=https://") for a in c["args"])
    assert {"name": "tls", "secret": {"secretName": "cache-tls", "defaultMode": 0o440}} in \
        pod["volumes"]
    off = build_statefulset(make_dc(tls={"enabled": False}), 3)["spec"]["template"]["spec"]
    (c,) = off["containers"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert not any(a.startswith("--tls") for a in c["args"])
    assert all(v["name"] != "tls" for v in off["volumes"])


def test_issued_certificate_names_every_pod_and_chains_to_the_ca(make_dc) -> None:
    import base64

    from cryptography import x509

    from distcache_operator import tls

    dc = make_dc()
    ca = tls.issue_ca(dc)
    _owned(ca, dc)
    raw = {k: base64.b64decode(v) for k, v in ca["data"].items()}
    cert_secret = tls.issue_node_cert(dc, raw["ca.crt"], raw["ca.key"])
    _owned(cert_secret, dc)
    assert cert_secret["type"] == "kubernetes.io/tls"
    files = {k: base64.b64decode(v) for k, v in cert_secret["data"].items()}
    assert files["ca.crt"] == raw["ca.crt"]
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    ca_cert = x509.load_pem_x509_certificate(raw["ca.crt"])
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sans.get_values_for_type(x509.DNSName)
    assert "*.cache-peers.ns.svc.cluster.local" in names and "cache.ns.svc" in names
    assert "localhost" in names


def test_nothing_about_the_certificate_is_on_the_template(make_dc) -> None:
    """A renewed certificate reaches the pods through the mounted Secret (they reload it):
    the pod template, and so the pods, stay as they are."""
    meta = build_statefulset(make_dc(), 3)["spec"]["template"]["metadata"]
    assert "annotations" not in meta


def test_renewal_is_due_within_the_margin(make_dc) -> None:
    import base64
    import datetime as dt

    from distcache_operator import tls

    dc = make_dc()
    raw = {k: base64.b64decode(v) for k, v in tls.issue_ca(dc)["data"].items()}
    cert = base64.b64decode(tls.issue_node_cert(dc, raw["ca.crt"], raw["ca.key"])["data"][
        "tls.crt"])
    now = dt.datetime.now(dt.UTC)
    assert not tls.expires_within(cert, dt.timedelta(days=30), now)
    assert tls.expires_within(cert, dt.timedelta(days=30), now + dt.timedelta(days=340))


def test_cert_manager_certificate_names_every_pod_into_the_mounted_secret(make_dc) -> None:
    dc = make_dc(tls={"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}})
    cert = builders.build_certificate(dc)
    _owned(cert, dc)
    assert cert["apiVersion"] == "cert-manager.io/v1" and cert["kind"] == "Certificate"
    spec = cert["spec"]
    assert spec["secretName"] == dc.tls_secret == "cache-tls"
    assert spec["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer",
                                 "group": "cert-manager.io"}
    assert "*.cache-peers.ns.svc.cluster.local" in spec["dnsNames"]
    assert "cache.ns.svc" in spec["dnsNames"] and spec["ipAddresses"] == ["127.0.0.1"]
    assert {"server auth", "client auth"} <= set(spec["usages"])
    vols = build_statefulset(dc, 3)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "cache-tls", "defaultMode": 0o440}} in vols


def test_service_monitor_scrapes_the_pods_with_the_key_and_the_ca(make_dc) -> None:
    dc = make_dc(metrics={"serviceMonitor": {"enabled": True, "interval": "15s",
                                             "labels": {"release": "prom"}}})
    sm = builders.build_service_monitor(dc)
    _owned(sm, dc)
    assert sm["metadata"]["labels"]["release"] == "prom"
    headless = build_headless_service(dc)
    # Selects the headless Service (every pod, ready or not) and nothing else.
    match = sm["spec"]["selector"]["matchLabels"]
    assert match.items() <= headless["metadata"]["labels"].items()
    assert not match.items() <= build_client_service(dc)["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ns"]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == headless["spec"]["ports"][0]["name"] == "https"
    pod = build_statefulset(dc, 3)["spec"]["template"]["spec"]["containers"][0]
    assert pod["ports"][0]["name"] == ep["port"]
    assert ep["path"] == "/metrics" and ep["scheme"] == "https" and ep["interval"] == "15s"
    # Not the API key Secret itself: it holds two lines while a key is rotated.
    assert ep["authorization"] == {"type": "Bearer",
                                   "credentials": {"name": "cache-metrics-token", "key": "token"}}
    assert ep["tlsConfig"]["ca"] == {"secret": {"name": "cache-tls", "key": "ca.crt"}}
    assert ep["tlsConfig"]["serverName"] == "cache.ns.svc"  # a name the certificate holds
    from distcache_operator import tls

    assert ep["tlsConfig"]["serverName"] in tls.hosts(dc)
    assert ep["relabelings"][0]["targetLabel"] == "distcache"
    plain = builders.build_service_monitor(make_dc(
        tls={"enabled": False}, auth={"apiKeySecretRef": {"name": "k", "key": "t"}}))
    (ep,) = plain["spec"]["endpoints"]
    assert ep["scheme"] == "http" and "tlsConfig" not in ep
    assert ep["authorization"]["credentials"] == {"name": "cache-metrics-token", "key": "token"}
