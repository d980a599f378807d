"""Pure builders of the objects a DistCache owns: plain dicts, no I/O.

Every object carries the DistCache's labels and an owner reference to it, so deleting the
DistCache garbage-collects everything. The pods run under the `restricted` Pod Security
Standard: non-root, read-only root filesystem (an emptyDir on /tmp), no capabilities,
seccomp RuntimeDefault, no privilege escalation.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.model import (
    API_VERSION,
    KIND,
    PORT,
    REDIS_PORT,
    REDIS_PORT_NAME,
    DistCache,
    default_image,
)

RING_KEY = "ring.json"
RING_DIR = "/etc/distcache/ring"
TLS_DIR = "/etc/distcache/tls"
# The API key and the cluster secret reach the pods as files of mounted Secrets, which
# kubelet updates in place and the node re-reads (keyfile.py): a rotated key reaches every
# pod without a restart. An environment variable is fixed for the container's life.
API_KEY_FILE = "/etc/distcache/api-key/api-key"
CLUSTER_SECRET_FILE = "/etc/distcache/peer/cluster-secret"
SERVICE_ROLE_LABEL = "distcache.io/service"
CERT_MANAGER_API = "cert-manager.io/v1"
MONITORING_API = "monitoring.coreos.com/v1"


def owner_reference(dc: DistCache) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": dc.name, "uid": dc.uid,
            "controller": True, "blockOwnerDeletion": True}


def _meta(dc: DistCache, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": dc.namespace, "labels": dict(dc.labels),
            "ownerReferences": [owner_reference(dc)], **extra}


def initial_ring(dc: DistCache, replicas: int, version: int = 1) -> RingDoc:
    """The ring of a new cache: every pod a member from the start (nothing to migrate)."""
    return RingDoc(version, dc.spec.replication_factor,
                   tuple(Member(dc.member_id(i), dc.member_url(i), "active")
                         for i in range(replicas)))


def ring_json(doc: RingDoc) -> str:
    return json.dumps(doc.to_json(), indent=1, sort_keys=True)


def build_ring_configmap(dc: DistCache, doc: RingDoc) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(dc, dc.ring_configmap),
            "data": {RING_KEY: ring_json(doc)}}


def build_secrets(dc: DistCache, cluster_secret: str | None = None) -> list[dict[str, Any]]:
    """The cluster secret (peers authenticate with it) and, unless spec.auth.apiKeySecretRef
    names the user's own, a generated API key. Created once: the apply layer never
    overwrites an existing Secret's data. `cluster_secret`: the value the running pods hold
    (the operator's memory), so a peer Secret deleted by hand comes back the same; None:
    a new random one (only for a cache that has no pods)."""
    out = [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(dc, dc.cluster_secret),
            "stringData": {"cluster-secret": cluster_secret or secrets.token_urlsafe(32)}}]
    if dc.spec.api_key_ref is None:
        ref = dc.api_key_secret
        out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": _meta(dc, ref.name),
                    "stringData": {ref.key: secrets.token_urlsafe(32)}})
    return out


def build_metrics_token_secret(dc: DistCache, token: str) -> dict[str, Any]:
    """The ServiceMonitor's bearer token: one key, the first the API key Secret lists.
    Prometheus sends a credential as it is, and the API key Secret holds two lines while a
    key is rotated (operator/README.md)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(dc, dc.metrics_token_secret), "stringData": {"token": token}}


def service_ports(dc: DistCache) -> list[dict[str, Any]]:
    """The HTTP port, named after its scheme, and (spec.redis.enabled, the default) the
    Redis protocol port named `redis`, so `kubectl port-forward svc/<name> 6379:redis` and
    a client's Service lookup need no number."""
    ports: list[dict[str, Any]] = [{"name": dc.scheme, "port": PORT, "targetPort": PORT}]
    if dc.spec.redis_enabled:
        ports.append({"name": REDIS_PORT_NAME, "port": REDIS_PORT,
                      "targetPort": REDIS_PORT})
    return ports


def build_headless_service(dc: DistCache) -> dict[str, Any]:
    """Peers' DNS names (<pod>.<name>-peers), published before the pods are ready: a joining
    or refilling node must be reachable by its peers and the operator."""
    meta = _meta(dc, dc.peers_service)
    meta["labels"][SERVICE_ROLE_LABEL] = "peers"  # what the ServiceMonitor selects
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": dict(dc.selector_labels),
                     "ports": service_ports(dc)}}


def build_client_service(dc: DistCache) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(dc, dc.client_service),
            "spec": {"type": "ClusterIP", "selector": dict(dc.selector_labels),
                     "ports": service_ports(dc)}}


def pdb_max_unavailable(dc: DistCache) -> int:
    """Every key has R copies on R different pods, so R-1 pods may be evicted at once without
    losing one (each restarted pod takes its share back from the others). With R=1 each pod
    holds the only copy of its keys: 0, so a node drain waits until someone raises the
    replication factor or deletes the pod by hand (the operator warns about it)."""
    return dc.spec.replication_factor - 1


def build_pdb(dc: DistCache) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(dc, dc.pdb),
            "spec": {"maxUnavailable": pdb_max_unavailable(dc),
                     "selector": {"matchLabels": dict(dc.selector_labels)}}}


def build_network_policy(dc: DistCache, operator_namespace: str) -> dict[str, Any]:
    """Ingress to the cache pods' HTTP port from their own pods (replication, migration,
    heartbeats) and the operator's namespace (it calls /cluster/status and pushes rings);
    to the HTTP port and the Redis protocol port (spec.redis.enabled) from the clients
    spec.networkPolicy.clients names (empty: every pod anywhere). Peers and the operator
    speak only HTTP, so they get no Redis port. Nothing else reaches the pods where
    NetworkPolicies are enforced. Egress is not restricted: the pods only call each other,
    and a DNS rule would depend on the cluster's DNS labels."""
    port = [{"protocol": "TCP", "port": PORT}]
    client_ports = [*port, {"protocol": "TCP", "port": REDIS_PORT}] \
        if dc.spec.redis_enabled else port
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": dict(dc.selector_labels)}},
        {"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": operator_namespace}}},
    ]
    clients = dc.spec.network_policy_clients or [{"namespaceSelector": {}}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(dc, dc.network_policy),
            "spec": {"podSelector": {"matchLabels": dict(dc.selector_labels)},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": peers, "ports": port},
                                 {"from": clients, "ports": client_ports}]}}


def default_spread(dc: DistCache) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Where the user gave no affinity and no topology spread: pods preferably on different
    nodes, and spread over nodes and zones. Preferred, never required: a one-node cluster
    (kind, a laptop) still runs every pod. The R copies of a key are on R different pods;
    on different nodes, losing a node loses no key."""
    match = {"matchLabels": dict(dc.selector_labels)}
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": match}}]}}
    spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": match}
              for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")]
    return affinity, spread


# The node writes nothing to disk (read-only root, /tmp in memory): its ephemeral storage is
# its log, which kubelet rotates (5 files of 10Mi by default). The request reserves that on the
# node; the limit is far above it because a pod over its limit is evicted, and an evicted cache
# pod drops its share of the keys: it only stops a runaway from filling the node's disk.
DEFAULT_EPHEMERAL_STORAGE = {"requests": "64Mi", "limits": "1Gi"}


def node_resources(dc: DistCache) -> dict[str, Any]:
    """spec.resources, with an ephemeral-storage request and limit where it names neither (a
    pod without them can fill its node's disk and is evicted first under disk pressure).
    Where the user names either, both are left as given: a default beside a user's value
    could contradict it (a 64Mi request over a 32Mi limit), and a limit alone is also the
    request (Kubernetes' default)."""
    given = dc.spec.resources
    if any("ephemeral-storage" in (given.get(part) or {}) for part in ("requests", "limits")):
        return given
    return {**given, **{part: {**(given.get(part) or {}), "ephemeral-storage": quantity}
                        for part, quantity in DEFAULT_EPHEMERAL_STORAGE.items()}}


def node_args(dc: DistCache) -> list[str]:
    s = dc.spec
    args = [
        "--host=0.0.0.0",
        f"--port={PORT}",
        "--node-id=$(POD_NAME)",
        f"--advertise-url={dc.scheme}://$(POD_NAME).{dc.peers_service}.$(POD_NAMESPACE)"
        f".svc.{dc.domain}:{PORT}",
        f"--ring-file={RING_DIR}/{RING_KEY}",
        f"--replication={s.replication_factor}",
        f"--max-memory={s.max_memory}",
        f"--api-key-file={API_KEY_FILE}",
        f"--cluster-secret-file={CLUSTER_SECRET_FILE}",
    ]
    if s.tls_enabled:
        args += [f"--tls-cert={TLS_DIR}/tls.crt", f"--tls-key={TLS_DIR}/tls.key",
                 f"--tls-ca={TLS_DIR}/ca.crt"]
    if s.redis_enabled:
        # The node serves TLS on it with the HTTP port's certificate whenever --tls-cert is
        # given, and asks for AUTH with the same API key.
        args.append(f"--resp-port={REDIS_PORT}")
    if s.write_quorum:
        args.append(f"--write-quorum={s.write_quorum}")
    if s.rate_limit:
        args.append(f"--rate-limit={s.rate_limit:g}")
        if s.rate_limit_burst:
            args.append(f"--rate-limit-burst={s.rate_limit_burst}")
    return args


def build_statefulset(dc: DistCache, replicas: int) -> dict[str, Any]:
    """`replicas` is the operator's decision (the ring's members, or more while growing),
    not spec.replicas: the StatefulSet shrinks only after the ring lets the pods go.
    Nothing about the certificate or the keys is on the template: a renewed certificate or a
    rotated key reaches the pods through the mounted Secrets, which they reload without a
    restart (a key dropped from its Secret stays accepted for a grace period)."""
    s = dc.spec
    api_key = dc.api_key_secret
    probe = {"path": "/readyz", "port": PORT, "scheme": dc.scheme.upper()}
    container: dict[str, Any] = {
        "name": "node",
        "image": s.image or default_image(),
        "imagePullPolicy": s.image_pull_policy,
        "args": node_args(dc),
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [{"name": dc.scheme, "containerPort": PORT},
                  *([{"name": REDIS_PORT_NAME, "containerPort": REDIS_PORT}]
                    if s.redis_enabled else [])],
        "readinessProbe": {"httpGet": probe, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {**probe, "path": "/healthz"}, "initialDelaySeconds": 5,
                          "periodSeconds": 10, "failureThreshold": 3},
        "resources": node_resources(dc),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "ring", "mountPath": RING_DIR, "readOnly": True},
            # Whole folders, never subPath: kubelet does not update a subPath mount.
            {"name": "api-key", "mountPath": API_KEY_FILE.rsplit("/", 1)[0], "readOnly": True},
            {"name": "peer", "mountPath": CLUSTER_SECRET_FILE.rsplit("/", 1)[0],
             "readOnly": True},
        ],
    }
    pod_spec: dict[str, Any] = {
        # Service links would put DISTCACHE_*-named variables into the environment, which
        # the node reads as its own settings.
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": s.termination_grace_period_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            {"name": "ring", "configMap": {"name": dc.ring_configmap}},
            # Only the key the node reads, under a fixed name, whatever else the Secret holds.
            {"name": "api-key", "secret": {
                "secretName": api_key.name, "defaultMode": 0o440,
                "items": [{"key": api_key.key, "path": API_KEY_FILE.rsplit("/", 1)[1]}]}},
            {"name": "peer", "secret": {
                "secretName": dc.cluster_secret, "defaultMode": 0o440,
                "items": [{"key": "cluster-secret",
                           "path": CLUSTER_SECRET_FILE.rsplit("/", 1)[1]}]}},
        ],
    }
    if s.tls_enabled:
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR,
                                          "readOnly": True})
        pod_spec["volumes"].append({"name": "tls", "secret": {"secretName": dc.tls_secret,
                                                              "defaultMode": 0o440}})
    affinity, spread = default_spread(dc)
    pod_spec["affinity"] = s.affinity or affinity
    pod_spec["topologySpreadConstraints"] = s.topology_spread_constraints or spread
    if s.tolerations:
        pod_spec["tolerations"] = s.tolerations
    if s.node_selector:
        pod_spec["nodeSelector"] = s.node_selector
    if s.priority_class_name:
        pod_spec["priorityClassName"] = s.priority_class_name
    pod_labels = {**s.pod_labels, **dc.selector_labels}
    template_meta: dict[str, Any] = {"labels": pod_labels}
    annotations = dict(s.pod_annotations)
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(dc, dc.statefulset),
        "spec": {
            "serviceName": dc.peers_service,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": dict(dc.selector_labels)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def build_certificate(dc: DistCache) -> dict[str, Any]:
    """spec.tls.issuerRef: a cert-manager Certificate into <name>-tls (tls.crt, tls.key,
    ca.crt), valid for every pod's peer name, the client Service and loopback (kubectl
    port-forward), for both sides of the nodes' mutual TLS. cert-manager renews it; the pods
    load the updated Secret without a restart."""
    from distcache_operator.tls import hosts

    issuer = dc.spec.tls_issuer
    assert issuer is not None
    names = hosts(dc)
    return {
        "apiVersion": CERT_MANAGER_API, "kind": "Certificate",
        "metadata": _meta(dc, dc.certificate),
        "spec": {
            "secretName": dc.tls_secret,
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
            "dnsNames": [h for h in names if not h[0].isdigit()],
            "ipAddresses": [h for h in names if h[0].isdigit()],
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        },
    }


def build_service_monitor(dc: DistCache) -> dict[str, Any]:
    """spec.metrics.serviceMonitor: every pod's /metrics through the headless Service (which
    lists pods that are not ready too), with the API key's first line as a bearer token (the
    Secret <name>-metrics-token) and, with TLS, verified against the DistCache's CA under the
    client Service's name (the certificate names the Service and the pods' DNS names, not
    their IPs). Each series gets the DistCache's name as label `distcache` next to the
    usual `pod` and `namespace`."""
    s = dc.spec
    endpoint: dict[str, Any] = {
        "port": dc.scheme, "path": "/metrics", "scheme": dc.scheme,
        "interval": s.service_monitor_interval,
        "authorization": {"type": "Bearer",
                          "credentials": {"name": dc.metrics_token_secret, "key": "token"}},
        "relabelings": [{"action": "replace", "targetLabel": "distcache",
                         "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_"
                                          "instance"]}],
    }
    if s.tls_enabled:
        endpoint["tlsConfig"] = {
            "ca": {"secret": {"name": dc.tls_secret, "key": "ca.crt"}},
            "serverName": f"{dc.client_service}.{dc.namespace}.svc",
        }
    meta = _meta(dc, dc.service_monitor)
    meta["labels"] = {**s.service_monitor_labels, **meta["labels"]}
    return {
        "apiVersion": MONITORING_API, "kind": "ServiceMonitor", "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {**dc.selector_labels, SERVICE_ROLE_LABEL: "peers"}},
            "namespaceSelector": {"matchNames": [dc.namespace]},
            "endpoints": [endpoint],
        },
    }
