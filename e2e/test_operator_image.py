"""spec.image changed on a running DistCache: the pods roll one at a time onto the new image
(each replacement starts only after the previous one is Ready again, which a node is only
once it has taken its share back), and no key is lost.

The "new image" is the node image under a second tag (`docker tag`, then `kind load` onto
the cluster's nodes): a real image change for Kubernetes (another image reference in the
pod template), the same bits inside. Skipped, naming what is missing, when the node image
is not in the local Docker or the cluster is not a kind cluster it can be loaded into.
"""

from __future__ import annotations

import calendar
import itertools
import json
import subprocess
import time
import tomllib
from typing import Any

import pytest
from kindload import docker_has, load_image
from kubehelp import REPO
from ophelp import client_for, k, kj, settled, wait_for
from tlshelp import dc_yaml, operator_ready

NAME = "img"


def version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def _ts(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def test_image_change_rolls_one_pod_at_a_time_and_loses_no_key() -> None:
    operator_ready()
    base = f"distcache/node:{version()}"
    new = f"distcache/node:{version()}-e2e-roll"
    if not docker_has(base):
        pytest.skip(f"{base} is not in the local Docker (make images builds it)")
    subprocess.run(["docker", "tag", base, new], check=True)
    load_image(new, "docker tag of the node image")
    k("apply", "-f", "-", input=dc_yaml(NAME, 3, f"  image: {base}\n"))
    wait_for("img Running", lambda: settled(NAME, 3), 240, every=2)
    client = client_for(NAME, pod=0)
    items = {f"img-{i}": f"v{i}" for i in range(5000)}
    client.mset(items)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kj(
        "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]}
    k("patch", f"distcache/{NAME}", "--type=merge", "-p",
      json.dumps({"spec": {"image": new}}))
    most_unready, failed_reads = 0, 0
    sample = list(items)[:300]

    def rolled() -> bool:
        nonlocal most_unready, failed_reads
        sts = kj("get", "statefulset", NAME)
        st = sts.get("status") or {}
        most_unready = max(most_unready, 3 - int(st.get("readyReplicas", 0)))
        try:
            found = client.mget(sample)
            failed_reads += sum(1 for key in sample if found.get(key) != items[key])
        except (OSError, AssertionError):
            failed_reads += len(sample)
        return (sts["spec"]["template"]["spec"]["containers"][0]["image"] == new
                and st.get("updateRevision") == st.get("currentRevision")
                and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3
                and st.get("observedGeneration") == sts["metadata"]["generation"])

    t0 = time.monotonic()
    wait_for("every pod rolled onto the new image", rolled, 420, every=0.5)
    took = time.monotonic() - t0
    assert most_unready <= 1, f"{most_unready} pods were down at once"
    pods: list[dict[str, Any]] = kj("get", "pods", "-l",
                                    f"app.kubernetes.io/instance={NAME}")["items"]
    assert all(p["spec"]["containers"][0]["image"] == new for p in pods)
    assert all(p["metadata"]["uid"] != before[p["metadata"]["name"]] for p in pods)

    # One at a time: each new pod was created after the one before it was Ready.
    def ready_at(p: dict[str, Any]) -> float:
        return _ts(next(c["lastTransitionTime"] for c in p["status"]["conditions"]
                        if c["type"] == "Ready"))

    order = sorted(pods, key=lambda p: _ts(p["metadata"]["creationTimestamp"]))
    assert [p["metadata"]["name"] for p in order] == [f"{NAME}-2", f"{NAME}-1", f"{NAME}-0"]
    for prev, nxt in itertools.pairwise(order):
        assert _ts(nxt["metadata"]["creationTimestamp"]) >= ready_at(prev), (
            f"{nxt['metadata']['name']} started before {prev['metadata']['name']} was ready")
    wait_for("settled after the roll", lambda: settled(NAME, 3), 120, every=1)
    client.forward.close()
    found = client.mget(list(items))
    lost = [key for key in items if found.get(key) != items[key]]
    assert not lost, f"{len(lost)} of {len(items)} keys lost, e.g. {lost[:5]}"
    print(f"\nimage roll of 3 pods: {took:.0f} s; reads of {len(sample)} keys that failed "
          f"during the roll (port-forward to a pod being replaced included): {failed_reads}")
    client.close()
    k("delete", "distcache", NAME)
