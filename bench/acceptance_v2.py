"""Operator v2 acceptance on a running cluster (issue 14, section "Acceptance"), by hand.

A DistCache of 5 (replicationFactor 2, TLS on, the default) in its own namespace gets
20,000 keys; the product's load program (`python -m distcache_node.loadcheck`, ring-aware,
seeded with the client Service, versioned writes read back) runs in a pod during every
scenario; a sampler reads the DistCache, its StatefulSet and its ring ConfigMap once a
second. Then, one after the other:

 1. the ring ConfigMap deleted, then `kubectl scale --replicas=3`;
 2. scaled back to 5 and settled, then `kubectl scale --replicas=3` and the operator pod
    force-deleted right after;
 3. a ResourceQuota allowing only the pods there are, a scale to 5 (pods cannot be created),
    then back to 3, the quota removed;
 4. the peer Secret (<name>-cluster) deleted, then a grow to 4;
 5. the API key rotated as README.md says: two lines, wait until no pod is behind and a
    CredentialsLoaded Event, a client on the new key, the old line dropped (a client kept
    on the old key runs on through the grace period).

After each: settled, every key read back, the load program's failures, lost writes and stale
reads, the samples where the StatefulSet had fewer pods than the ring had members, the status
samples that did not tell the truth (held for more than LIE_AFTER seconds: a status written
once a step may lag one step), the Events. At the end the operator's Kubernetes API calls
per idle step, from its own metrics, 60 s apart.

    export KUBECONFIG=... KUBECTL=...
    nice .venv/bin/python bench/acceptance_v2.py [--keys 20000] [--json out.json]

Needs the operator installed (make kind-up) and the node image loaded; the namespace
(distcache-accept) is deleted before and left afterwards for a look (--cleanup deletes it).
"""

from __future__ import annotations

import argparse
import base64
import calendar
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

NS = "distcache-accept"
os.environ["DISTCACHE_DEV_OP_NAMESPACE"] = NS  # ophelp reads it at import
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from kubehelp import PortForward, load_pod  # noqa: E402
from ophelp import OPERATOR_NS, client_for, k, kj, settled, wait_for  # noqa: E402

NAME = "acc"
LIE_AFTER = 10.0  # seconds a wrong status must hold to count (status is written per step)
RATE = 100  # load program operations/s: the machine is shared


def project_version() -> str:
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    assert found, "no version in pyproject.toml"
    return found.group(1)


NODE_IMAGE = os.environ.get("DISTCACHE_OPERATOR_NODE_IMAGE", f"distcache/node:{project_version()}")


# --- the sampler ------------------------------------------------------------------------

def snapshot() -> dict[str, Any]:
    """The DistCache, StatefulSet and ring in one kubectl call (one is missing at times:
    scenario 1 deletes the ring)."""
    proc = k("get", f"distcache/{NAME}", f"statefulset/{NAME}", f"configmap/{NAME}-ring",
             "-o", "json", check=False, timeout=30)
    items: dict[str, Any] = {}
    try:
        doc = json.loads(proc.stdout or "{}")
    except ValueError:
        return items
    for item in doc.get("items", [doc] if doc.get("kind") else []):
        items[item["kind"]] = item
    return items


def cond(dc: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (dc.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c  # type: ignore[no-any-return]
    return {}


def judge(s: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """One sample: what it shows, the invariant it breaks (StatefulSet below the ring) and
    what its status says that does not hold."""
    dc, sts, cm = s.get("DistCache"), s.get("StatefulSet"), s.get("ConfigMap")
    row: dict[str, Any] = {}
    broken: list[str] = []
    lies: list[str] = []
    if not dc or not sts:
        return row, broken, lies
    st = dc.get("status") or {}
    ring = json.loads(cm["data"]["ring.json"]) if cm else None
    members = ring["members"] if ring else []
    states = Counter(m["state"] for m in members)
    sts_spec = int(sts["spec"].get("replicas", 0))
    sts_st = sts.get("status") or {}
    pods, ready = int(sts_st.get("replicas", 0)), int(sts_st.get("readyReplicas", 0))
    avail, degr = cond(dc, "Available"), cond(dc, "Degraded")
    row = {"phase": st.get("phase"), "spec": dc["spec"].get("replicas"),
           "status_replicas": st.get("replicas"), "status_ready": st.get("readyReplicas"),
           "ring": len(members) if ring else None, "ring_states": dict(states),
           "ring_version": ring.get("version") if ring else None,
           "status_ring_version": st.get("ringVersion"),
           "sts_spec": sts_spec, "sts_pods": pods, "sts_ready": ready,
           "available": f"{avail.get('status')}/{avail.get('reason')}",
           "degraded": f"{degr.get('status')}/{degr.get('reason')}",
           "degraded_message": degr.get("message", "")[:200]}
    if ring and sts_spec < len(members):
        broken.append(f"StatefulSet spec {sts_spec} < {len(members)} ring members")
    if ring and pods < len(members):
        broken.append(f"StatefulSet has {pods} pods < {len(members)} ring members")
    if avail.get("status") == "True" and ready == 0:
        lies.append("Available=True with no ready pod")
    if avail.get("status") == "False" and ready >= 1 and members:
        lies.append(f"Available=False/{avail.get('reason')} while {ready} pods are ready")
    settled_now = (ring is not None and states.get("active", 0) == len(members) == sts_spec
                   == ready == dc["spec"].get("replicas"))
    if st.get("phase") == "Running" and not settled_now:
        lies.append(f"phase Running but ring {dict(states)}, StatefulSet {ready}/{sts_spec} "
                    f"ready, spec {dc['spec'].get('replicas')}")
    if degr.get("status") == "True" and degr.get("reason") in (
            "MembersNotReady", "PodsFailing", "MembersDown") and settled_now:
        lies.append(f"Degraded/{degr.get('reason')} while all {ready} pods ready and active")
    if degr.get("status") != "True" and st.get("phase") == "Running" and sts_spec > ready:
        lies.append(f"Running, not Degraded, with {sts_spec - ready} pods missing")
    if st.get("replicas") is not None and ring and st.get("replicas") != len(members):
        lies.append(f"status.replicas {st.get('replicas')} != {len(members)} ring members")
    return row, broken, lies


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.label = "setup"
        self.rows: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.time()
            try:
                row, broken, lies = judge(snapshot())
            except Exception as exc:  # a sampler that dies would hide everything after
                row, broken, lies = {"error": repr(exc)}, [], []
            with self.lock:
                self.rows.append({"t": t, "scenario": self.label, **row,
                                  "broken": broken, "lies": lies})
            self.stop.wait(max(0.0, 1.0 - (time.time() - t)))

    def window(self, label: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.rows if r["scenario"] == label]


def held_lies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each wrong statement that held for more than LIE_AFTER seconds in a row, with when
    it began and how long it lasted (a status written once a step may lag a step)."""
    out: list[dict[str, Any]] = []
    open_: dict[str, float] = {}
    last_t = rows[0]["t"] if rows else 0.0

    def close(kind: str, end: float) -> None:
        start = open_.pop(kind)
        if end - start > LIE_AFTER:
            out.append({"what": kind, "from": time.strftime("%H:%M:%S", time.gmtime(start)),
                        "seconds": round(end - start, 1)})

    for r in rows:
        kinds = {re.sub(r"\d+", "N", lie) for lie in r.get("lies", [])}
        for kind in kinds:
            open_.setdefault(kind, r["t"])
        for kind in [x for x in open_ if x not in kinds]:
            close(kind, r["t"])
        last_t = r["t"]
    for kind in list(open_):
        close(kind, last_t)
    return out


# --- the load program ---------------------------------------------------------------------

def loader_doc(pod: str, key_secret: str, prefix: str) -> str:
    seed = f"https://{NAME}.{NS}.svc:8080"
    args = ["-m", "distcache_node.loadcheck", "--seed", seed, "--api-key-file",
            "/key/api-key", "--ca", "/tls/ca.crt", "--rate", str(RATE), "--keys", "2000",
            "--prefix", prefix, "--stop-file", "/tmp/stop", "--progress", "5"]
    return json.dumps(load_pod(pod, NODE_IMAGE, "python", args, NAME, key_secret=key_secret,
                               labels={"app": "acceptance-load"}))


def put_secret(name: str, value: str) -> None:
    """A Secret with one entry `api-key` (created or replaced in place)."""
    doc = k("create", "secret", "generic", name, f"--from-literal=api-key={value}",
            "--dry-run=client", "-o", "json").stdout
    k("apply", "-f", "-", input=doc)


def pod_phase(pod: str) -> str:
    proc = k("get", "pod", pod, "-o", "jsonpath={.status.phase}", check=False)
    return str(proc.stdout).strip()


def start_loader(pod: str, key_secret: str, prefix: str) -> None:
    k("delete", "pod", pod, "--ignore-not-found", "--wait=true")
    k("apply", "-f", "-", input=loader_doc(pod, key_secret, prefix))
    wait_for(f"{pod} running", lambda: pod_phase(pod) == "Running", 120, every=1)
    wait_for(f"{pod} under way", lambda: '"requests"' in k(
        "logs", pod, check=False).stdout + k("logs", pod, check=False).stderr, 90, every=1)


def stop_loader(pod: str) -> dict[str, Any]:
    """Stop the load program and return its summary (it reads back every key it wrote)."""
    k("exec", pod, "--", "python", "-c", "open('/tmp/stop', 'w').close()", check=False)
    wait_for(f"{pod} done", lambda: pod_phase(pod) in ("Succeeded", "Failed"), 300, every=1)
    lines = k("logs", pod).stdout.strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    k("delete", "pod", pod, "--wait=false", check=False)
    return summary


# --- the cluster around ------------------------------------------------------------------

def operator_pod() -> str:
    pods = kj("get", "pods", "-l", "app.kubernetes.io/name=distcache-operator",
              namespace=OPERATOR_NS)["items"]
    return ",".join(sorted(p["metadata"]["name"] for p in pods
                           if not p["metadata"].get("deletionTimestamp")))


def events_since(t0: float) -> dict[str, int]:
    """The DistCache's Events (reason: count) seen since t0."""
    items = kj("get", "events", "--field-selector",
               f"involvedObject.kind=DistCache,involvedObject.name={NAME}")["items"]
    out: Counter[str] = Counter()
    for e in items:
        stamp = e.get("lastTimestamp") or e.get("eventTime") or \
            e["metadata"]["creationTimestamp"]
        when = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        if when >= t0 - 1:
            out[f"{e['type']}/{e['reason']}"] += 1
    return dict(out)


def event_seen(reason: str, t0: float) -> bool:
    return any(key.endswith("/" + reason) for key in events_since(t0))


def dump_failure(what: str) -> None:
    print(f"\n==== {what}: status, events, operator log ====", flush=True)
    print(json.dumps((kj("get", "distcache", NAME).get("status") or {}), indent=1))
    print(k("get", "statefulset,pods,configmap,resourcequota,events", "-o", "wide",
            check=False).stdout)
    print(k("logs", "deployment/distcache-operator", "--tail=150", check=False,
            namespace=OPERATOR_NS).stdout)


def wait_settled(replicas: int, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    try:
        wait_for(what, lambda: settled(NAME, replicas), timeout, every=1)
    except AssertionError:
        dump_failure(f"not settled: {what}")
        raise
    return time.monotonic() - t0


# --- the run --------------------------------------------------------------------------------

class Run:
    def __init__(self, nkeys: int) -> None:
        self.items = {f"acc-{i}": f"value-{i}" for i in range(nkeys)}
        self.sampler = Sampler()
        self.results: list[dict[str, Any]] = []
        self.findings: list[str] = []
        self.cache: Any = None
        self.quota_hold = 90.0
        self.creation: dict[str, Any] = {}

    def setup(self) -> None:
        k("delete", "namespace", NS, "--ignore-not-found", "--wait=true", namespace=None,
          timeout=300)
        k("create", "namespace", NS, namespace=None)
        k("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
          namespace=None)
        k("apply", "-f", "-", input=(
            f"apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata:\n  name: {NAME}\n"
            "spec:\n  replicas: 5\n  replicationFactor: 2\n  imagePullPolicy: Never\n"))
        t_create = time.time()
        self.sampler.start()
        took = wait_settled(5, 600, "5 pods settled at creation")
        rows = self.sampler.window("setup")
        self.creation = {"settle_s": round(took, 1), "events": events_since(t_create),
                         "phases": dict(Counter(str(r.get("phase")) for r in rows)),
                         "degraded_seen": sorted({str(r.get("degraded")) for r in rows})}
        print(f"created and settled in {took:.0f} s: {json.dumps(self.creation)}", flush=True)
        self.cache = client_for(NAME)
        t0 = time.monotonic()
        self.cache.mset(self.items)
        print(f"{len(self.items)} keys written in {time.monotonic() - t0:.1f} s", flush=True)
        self.api_key = base64.b64decode(kj("get", "secret", f"{NAME}-api-key")[
            "data"]["api-key"]).decode().strip()
        put_secret("acc-client-key", self.api_key)

    def lost(self) -> int:
        found = self.cache.mget(list(self.items))
        return sum(1 for key, v in self.items.items() if found.get(key) != v)

    def scenario(self, n: int, title: str, body: Any, loaders: tuple[str, ...] = ()) -> None:
        label = f"{n}"
        print(f"\n=== {n}. {title} ===", flush=True)
        op_before = operator_pod()
        pod = f"acc-load-{n}"
        start_loader(pod, "acc-client-key", f"s{n}:")
        self.sampler.label = label
        t_wall = time.time()
        row: dict[str, Any] = {"n": n, "scenario": title, "operator_pod_before": op_before}
        try:
            row.update(body())
        except AssertionError as exc:
            row["error"] = str(exc)[:500]
            self.findings.append(f"{n}. {title}: {str(exc)[:300]}")
        summaries = [stop_loader(pod)]
        summaries += [stop_loader(p) for p in row.pop("extra_loaders", [])]
        self.sampler.label = f"{n}-after"
        lost = self.lost()
        rows = self.sampler.window(label)
        broken = sorted({b for r in rows for b in r.get("broken", [])})
        row.update({
            "keys_lost": lost,
            "client_requests": sum(s["requests"] for s in summaries),
            "client_failures": sum(s["failures"] for s in summaries),
            "client_failure_reasons": [s["failure_reasons"] for s in summaries],
            "client_failure_examples": [s["failure_examples"][:3] for s in summaries],
            "client_lost_writes": sum(s["lost_writes"] for s in summaries),
            "client_stale_reads": sum(s["stale_reads"] for s in summaries),
            "samples": len(rows),
            "sts_below_ring": broken,
            "status_lies": held_lies(rows),
            "phases": dict(Counter(str(r.get("phase")) for r in rows)),
            "degraded_seen": sorted({f"{r.get('degraded')}: {r.get('degraded_message')}"
                                     for r in rows if str(r.get("degraded", "")).startswith(
                                         "True")})[:10],
            "available_seen": dict(Counter(str(r.get("available")) for r in rows)),
            "events": events_since(t_wall),
            "operator_pod_after": operator_pod(),
        })
        self.results.append(row)
        print(json.dumps(row, indent=1), flush=True)
        if lost or broken or row["client_failures"] or row["client_lost_writes"] \
                or row["client_stale_reads"]:
            self.findings.append(f"{n}. {title}: lost {lost}, StatefulSet below ring "
                                 f"{broken}, client {row['client_failures']} failures")

    # The five scenarios: each returns its measurements, raising AssertionError when stuck.

    def ring_deleted_then_shrink(self) -> dict[str, Any]:
        # A few ring changes first, so that the pods are well ahead of a ring re-created at
        # v1 (the issue measured pods at v5 and 1,909 keys lost).
        k("scale", f"distcache/{NAME}", "--replicas=4")
        wait_settled(4, 600, "4 settled before the ring is deleted")
        k("scale", f"distcache/{NAME}", "--replicas=5")
        wait_settled(5, 600, "5 settled before the ring is deleted")
        versions = [m for m in (kj("get", "distcache", NAME).get("status") or {}).get(
            "members", [])]
        before = kj("get", "distcache", NAME)["status"].get("ringVersion")
        k("delete", "configmap", f"{NAME}-ring")
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=3")
        took = wait_settled(3, 600, "3 settled after the ring was deleted")
        after = kj("get", "distcache", NAME)["status"].get("ringVersion")
        return {"settle_s": round(time.monotonic() - t0, 1), "wait_s": round(took, 1),
                "ring_version": f"{before} -> {after}", "members_before": len(versions)}

    def operator_killed_after_scale(self) -> dict[str, Any]:
        k("scale", f"distcache/{NAME}", "--replicas=5")
        grow = wait_settled(5, 600, "5 settled before the kill")
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=3")
        victim = operator_pod()
        k("delete", "pod", victim, "--grace-period=0", "--force", namespace=OPERATOR_NS)
        wait_settled(3, 600, "3 settled after the operator was killed")
        return {"settle_s": round(time.monotonic() - t0, 1), "grow_first_s": round(grow, 1),
                "killed": victim}

    def quota_blocks_growth(self) -> dict[str, Any]:
        pods = len([p for p in kj("get", "pods")["items"]
                    if not p["metadata"].get("deletionTimestamp")])
        k("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "acc-pods"},
            "spec": {"hard": {"pods": str(pods)}}}))
        k("scale", f"distcache/{NAME}", "--replicas=5")
        # What status says while the pods cannot be created: past the operator's join
        # deadline (600 s by default) a blocked join should be Degraded, naming the pods.
        time.sleep(self.quota_hold)
        blocked = kj("get", "distcache", NAME).get("status") or {}
        blocked_view = {"phase": blocked.get("phase"), "conditions": {
            c["type"]: f"{c['status']}/{c['reason']}: {c['message'][:160]}"
            for c in blocked.get("conditions", [])}}
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=3")
        try:
            wait_settled(3, 600, "3 settled after the blocked scale-up")
        finally:
            k("delete", "resourcequota", "acc-pods", check=False)
        return {"settle_s": round(time.monotonic() - t0, 1), "quota_pods": pods,
                "status_while_blocked": blocked_view}

    def peer_secret_deleted_then_grow(self) -> dict[str, Any]:
        k("delete", "secret", f"{NAME}-cluster")
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=4")
        wait_settled(4, 600, "4 settled after the peer Secret was deleted")
        return {"settle_s": round(time.monotonic() - t0, 1),
                "peer_secret_back": k("get", "secret", f"{NAME}-cluster",
                                      check=False).returncode == 0}

    def api_key_rotated(self) -> dict[str, Any]:
        old, new = self.api_key, secrets.token_hex(32)

        def creds(keys: int) -> bool:
            c = ((kj("get", "distcache", NAME).get("status") or {}).get("credentials")
                 or {}).get("apiKey") or {}
            return c.get("keys") == keys and c.get("podsBehind") == []

        t0 = time.monotonic()
        t_wall = time.time()
        put_secret(f"{NAME}-api-key", f"{old}\n{new}")
        wait_for("every pod holds both keys", lambda: creds(2), 400, every=2)
        wait_for("a CredentialsLoaded Event", lambda: event_seen("CredentialsLoaded", t_wall),
                 120, every=2)
        both_s = time.monotonic() - t0
        # The client moves to the new key; another stays on the old one (the grace period).
        put_secret("acc-client-key-new", new)
        start_loader("acc-load-5-new", "acc-client-key-new", "s5new:")
        t1 = time.monotonic()
        t_wall = time.time()
        put_secret(f"{NAME}-api-key", new)
        wait_for("every pod holds the new key only", lambda: creds(1), 400, every=2)
        dropped_s = time.monotonic() - t1
        time.sleep(10)
        self.cache.api_key = new
        self.api_key = new
        wait_settled(4, 60, "settled after the rotation")
        return {"settle_s": round(time.monotonic() - t0, 1), "both_keys_s": round(both_s, 1),
                "old_dropped_s": round(dropped_s, 1),
                "credentials_loaded_after_drop": event_seen("CredentialsLoaded", t_wall),
                "extra_loaders": ["acc-load-5-new"]}

    def api_calls(self, seconds: float = 60) -> dict[str, Any]:
        """The operator's API calls over `seconds` on an idle DistCache, per step and minute."""
        fwd = PortForward("svc/distcache-operator-metrics", 9090, OPERATOR_NS, scheme="http")

        def scrape() -> dict[tuple[str, str], float]:
            text = wait_for("operator metrics", lambda: urllib.request.urlopen(
                fwd.url() + "/metrics", timeout=10).read().decode(), 60, every=1)
            out: dict[tuple[str, str], float] = {}
            for line in text.splitlines():
                m = re.match(r'distcache_operator_(api_requests|reconciles)_total\{(.*)\} (\S+)',
                             line)
                if m:
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
                    key = (m.group(1), f"{labels.get('method', '')} {labels.get('resource', '')}"
                           if m.group(1) == "api_requests" else labels.get("outcome", ""))
                    out[key] = float(m.group(3))
            return out

        try:
            wait_settled(4, 120, "idle before the API count")
            dcs = len(kj("get", "distcaches", "-A", namespace=None)["items"])
            a = scrape()
            t0 = time.monotonic()
            time.sleep(seconds)
            b = scrape()
            span = time.monotonic() - t0
            dcs_after = len(kj("get", "distcaches", "-A", namespace=None)["items"])
        finally:
            fwd.close()
        delta = {key: b.get(key, 0) - a.get(key, 0) for key in set(a) | set(b)}
        steps = sum(v for (kind, _), v in delta.items() if kind == "reconciles")
        calls = {label: v for (kind, label), v in delta.items()
                 if kind == "api_requests" and v}
        total = sum(calls.values())
        return {"seconds": round(span, 1), "distcaches_in_cluster": [dcs, dcs_after],
                "steps": steps, "calls": total,
                "calls_per_step": round(total / steps, 2) if steps else None,
                "calls_per_minute": round(total * 60 / span, 1),
                "by_method_resource": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
                "per_step_by_method_resource": {
                    label: round(v / steps, 2) for label, v in sorted(
                        calls.items(), key=lambda kv: -kv[1])} if steps else {}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=20000)
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--quota-hold", type=float, default=660,
                   help="seconds the blocked scale-up is held (past the join deadline)")
    p.add_argument("--cleanup", action="store_true", help="delete the namespace at the end")
    args = p.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print("set KUBECONFIG (and KUBECTL) to the cluster with the operator", file=sys.stderr)
        return 2
    run = Run(args.keys)
    run.quota_hold = args.quota_hold
    run.setup()
    run.scenario(1, "ring ConfigMap deleted, then scale 5 -> 3", run.ring_deleted_then_shrink)
    run.scenario(2, "scale 3 -> 5, then 5 -> 3 with the operator pod killed right after",
                 run.operator_killed_after_scale)
    run.scenario(3, "scale 3 -> 5 blocked by a ResourceQuota, then back to 3",
                 run.quota_blocks_growth)
    run.scenario(4, "peer Secret deleted, then grow 3 -> 4", run.peer_secret_deleted_then_grow)
    run.scenario(5, "API key rotated (two lines, clients moved, old line dropped)",
                 run.api_key_rotated)
    run.sampler.label = "idle"
    calls = run.api_calls()
    run.sampler.stop.set()
    run.cache.close()
    report = {"creation": run.creation, "results": run.results, "api_calls_idle": calls,
              "findings": run.findings, "operator_pod": operator_pod()}
    print("\n=== API calls on an idle DistCache ===\n" + json.dumps(calls, indent=1))
    print("\n=== findings ===\n" + ("\n".join(run.findings) or "none"))
    if args.json:
        args.json.write_text(json.dumps({**report, "samples": run.sampler.rows}, indent=1))
    if args.cleanup:
        k("delete", "namespace", NS, "--wait=false", namespace=None, check=False)
    return 1 if run.findings else 0


if __name__ == "__main__":
    sys.exit(main())
