"""Leave a cluster as it was found: `python e2e/restore.py snapshot FILE` records the
cluster's namespaces, CRDs, ClusterRoles, ClusterRoleBindings and Helm releases; `restore
FILE` deletes whatever of those kinds exists now and did not then (what the e2e suite and
the operator install created), in an order that lets the operator finish its finalizers.
`make e2e` wraps the suite in these two when KUBECONFIG names a cluster it did not create.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from kubehelp import REPO, kubectl, kubectl_json

CLUSTER_KINDS = ("customresourcedefinitions", "clusterroles", "clusterrolebindings")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    exe = subprocess.run([str(REPO / "scripts" / "helm.sh"), "--path"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def names(kind: str) -> list[str]:
    return sorted(item["metadata"]["name"]
                  for item in kubectl_json("get", kind, namespace=None)["items"])


def releases() -> dict[str, int]:
    out = helm("list", "--all-namespaces", "-o", "json")
    return {f"{r['namespace']}/{r['name']}": int(r["revision"])
            for r in json.loads(out.stdout or "[]")}


def snapshot() -> dict[str, Any]:
    revisions = releases()
    return {"namespaces": names("namespaces"), "releases": sorted(revisions),
            "revisions": revisions, **{kind: names(kind) for kind in CLUSTER_KINDS}}


def restore(before: dict[str, Any]) -> list[str]:
    done: list[str] = []
    now = snapshot()
    new_ns = [ns for ns in now["namespaces"] if ns not in before["namespaces"]]
    # 1. DistCaches in namespaces about to go, while an operator still runs to release them;
    #    a finalizer left behind (no operator any more) is taken off, or the namespace stays.
    served = "distcaches.distcache.io" in now["customresourcedefinitions"]
    for ns in new_ns if served else []:
        kubectl("delete", "distcaches", "--all", "--wait=true", "--timeout=120s",
                namespace=ns, check=False, timeout=150)
        for dc in kubectl("get", "distcaches", "-o", "name", namespace=ns,
                          check=False).stdout.split():
            kubectl("patch", dc, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                    namespace=ns, check=False)
    # 2. Helm releases, 3. namespaces, 4. cluster-scoped objects (CRDs last: their deletion
    #    takes every custom resource with it).
    for release in now["releases"]:
        if release not in before["releases"]:
            ns, name = release.split("/", 1)
            helm("uninstall", name, "-n", ns, "--wait", "--timeout=180s")
            done.append(f"helm release {release}")
    for ns in new_ns:
        kubectl("delete", "namespace", ns, "--wait=true", "--timeout=300s", namespace=None,
                check=False, timeout=320)
        done.append(f"namespace {ns}")
    for kind in ("clusterrolebindings", "clusterroles", "customresourcedefinitions"):
        for name in now[kind]:
            if name not in before[kind]:
                kubectl("delete", kind, name, "--ignore-not-found", "--wait=true",
                        namespace=None, check=False, timeout=200)
                done.append(f"{kind} {name}")
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("snapshot", "restore", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[2])
    if argv[1] == "snapshot":
        path.write_text(json.dumps(snapshot(), indent=1))
        return 0
    before = json.loads(path.read_text())
    if argv[1] == "restore":
        for line in restore(before):
            print(f"removed {line}")
    now = snapshot()
    left: dict[str, Any] = {k: sorted(set(v) ^ set(before[k])) for k, v in now.items()
                            if k != "revisions"}
    left = {k: v for k, v in left.items() if v}
    # A release that was there before must not have been upgraded (or rolled back) either.
    changed = {r: f"revision {rev} -> {now['revisions'][r]}"
               for r, rev in before.get("revisions", {}).items()
               if r in now["revisions"] and now["revisions"][r] != rev}
    if changed:
        left["releases changed"] = changed
    print("cluster as found" if not left else f"differs from the snapshot: {left}")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
