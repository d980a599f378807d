"""kube-score, the common Kubernetes linter, on what a DistCache install runs.

The objects: those the operator builds for manifests/examples/production.yaml (the pure
builders, as handlers/owned.apply_owned applies them: both Services, the PodDisruptionBudget,
the NetworkPolicy, the StatefulSet) and the chart's default render (the operator's Deployment
and its Service, RBAC). The pinned kube-score (scripts/kube-score.sh) scores them; every CRITICAL
or WARNING must be in ALLOWED, where each entry says why the project does otherwise, and the
chart README's "Linting" section repeats it for users. An allowance nothing needs any more
fails too, so the list never hides a finding that came back.

Needs kube-score and helm (`make test` builds both): skipped, naming them, when not built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# The chart tests' pinned helm: the same fixture (skips naming helm when it is not built).
from test_chart_render import CHART, ROOT, helm, run  # noqa: F401

from distcache_operator import builders
from distcache_operator.model import DistCache

KUBE_SCORE_VERSION = "v1.20.0"
EXAMPLE = ROOT / "manifests" / "examples" / "production.yaml"
README = CHART / "README.md"
NAMESPACE, OPERATOR_NAMESPACE = "demo", "distcache-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion): the stable-version check
# flags APIs deprecated by then.
KUBERNETES_VERSION = "v1.30"
GRADES = {1: "CRITICAL", 5: "WARNING"}  # kube-score's grades below "almost OK" (7) and OK (10)

# (kind, kube-score check id, its comment's summary) -> why the project does otherwise.
# Mirrored in charts/distcache/README.md ("Linting"); keep both in step.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("StatefulSet", "container-resources", "(node) CPU limit is not set"):
        "a CPU limit throttles a node in bursts (CFS quota): it answers late, peers and the "
        "operator count it unreachable and migrations stall; the request reserves the CPU",
    ("Deployment", "container-resources", "(operator) CPU limit is not set"):
        "a throttled operator renews its kopf peering lease and drives migrations late; "
        "it idles at a few millicores",
    ("StatefulSet", "container-image-pull-policy",
     "(node) ImagePullPolicy is not set to Always"):
        "images are pinned by tag; IfNotPresent lets a pod restart while the registry is "
        "unreachable (offline clusters, kind); spec.imagePullPolicy: Always where pull "
        "secrets must be re-checked",
    ("Deployment", "container-image-pull-policy",
     "(operator) ImagePullPolicy is not set to Always"):
        "as the node's: a pinned tag, operator.image.pullPolicy: Always where wanted",
    ("StatefulSet", "pod-networkpolicy", "The pod does not have a matching egress NetworkPolicy"):
        "egress needs DNS, whose pods, labels and port (53, or 5353 behind DNAT) differ per "
        "cluster: a wrong rule stops every peer lookup; the pods call only each other",
    ("Deployment", "pod-networkpolicy", "The pod does not have a matching NetworkPolicy"):
        "the operator takes only kubelet's probes and Prometheus's scrape (from wherever "
        "Prometheus runs) and calls the API server (no pod a policy can name)",
    ("Deployment", "pod-probes-identical", "Container has the same readiness and liveness probe"):
        "kopf serves one health endpoint; no client traffic reaches the operator, so readiness "
        "gates only the rollout, and a hung operator should be restarted",
    ("Deployment", "deployment-strategy", "Deployment update strategy"):
        "Recreate: an upgrade never runs an old and a new operator side by side (kopf "
        "--standalone has no lock)",
    ("Deployment", "deployment-replicas", "Deployment few replicas"):
        "one reconciler is the design; the caches serve without it while it restarts; "
        "operator.replicaCount: 2 adds a standby (kopf peering)",
}


def kube_score_path() -> str | None:
    if os.environ.get("KUBE_SCORE"):
        return os.environ["KUBE_SCORE"]
    cache = Path(os.environ.get("DISTCACHE_DEV_CACHE", "/var/cache/distcache"))
    built = cache / "bin" / f"kube-score-{KUBE_SCORE_VERSION}"
    if (built / ".done").exists() and (built / "kube-score").exists():
        return str(built / "kube-score")
    return None


@pytest.fixture(scope="module")
def kube_score() -> str:
    path = kube_score_path()
    if not path:
        pytest.skip(f"kube-score {KUBE_SCORE_VERSION} is not built: scripts/kube-score.sh "
                    "builds it (make test does)")
    return path


def operator_objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for this DistCache, as handlers/owned.apply_owned does."""
    body = {**body, "metadata": {**body["metadata"], "namespace": NAMESPACE, "uid": "uid-1",
                                 "generation": 1}}
    dc = DistCache.from_body(body)
    objects = [builders.build_headless_service(dc), builders.build_client_service(dc)]
    if dc.spec.pdb_enabled:
        objects.append(builders.build_pdb(dc))
    if dc.spec.network_policy_enabled:
        objects.append(builders.build_network_policy(dc, OPERATOR_NAMESPACE))
    objects.append(builders.build_statefulset(dc, dc.spec.replicas))
    return objects


def score(kube_score: str, objects: list[dict[str, Any]],
          tmp: Path) -> dict[tuple[str, str, str], str]:
    """kube-score's CRITICAL and WARNING findings: (kind, check, summary) -> where and grade."""
    path = tmp / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    proc = subprocess.run([kube_score, "score", "--output-format", "json",
                           "--kubernetes-version", KUBERNETES_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120)
    # Exit 1 means "findings"; anything else (a manifest it cannot read) is an error.
    assert proc.returncode in (0, 1), f"kube-score failed: {proc.stderr}"
    findings: dict[tuple[str, str, str], str] = {}
    for obj in json.loads(proc.stdout):
        kind, name = obj["type_meta"]["kind"], obj["object_name"]
        for check in obj["checks"]:
            grade = GRADES.get(check["grade"])
            if check["skipped"] or grade is None:
                continue
            for comment in check["comments"] or [{"summary": ""}]:
                # As kube-score prints it: "(container) summary" when about one container.
                where = f"({comment['path']}) " if comment.get("path") else ""
                key = (kind, check["check"]["id"], where + comment["summary"])
                findings[key] = f"{grade} on {kind} {name}: {comment.get('description', '')}"
    return findings


@pytest.fixture(scope="module")
def findings(kube_score: str, helm: str,  # noqa: F811  (helm: the fixture imported above)
             tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], str]:
    body = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d)
    # The chart as installed by default (namespace from --namespace, as manifests/ is).
    chart = run(helm, "template", "distcache", str(CHART), "--namespace",
                OPERATOR_NAMESPACE).stdout
    objects = operator_objects(body) + [d for d in yaml.safe_load_all(chart) if d]
    return score(kube_score, objects, tmp_path_factory.mktemp("kube-score"))


def test_the_operators_objects_and_chart_meet_kube_score_or_say_why(
        findings: dict[tuple[str, str, str], str]) -> None:
    unexplained = {key: where for key, where in findings.items() if key not in ALLOWED}
    assert not unexplained, "kube-score findings with no reason in ALLOWED (meet the check, " \
        "or allow it with the reason here and in charts/distcache/README.md):\n" + \
        "\n".join(f"  {key}: {where}" for key, where in sorted(unexplained.items()))


def test_every_allowance_is_still_needed(findings: dict[tuple[str, str, str], str]) -> None:
    stale = sorted(key for key in ALLOWED if key not in findings)
    assert not stale, f"kube-score no longer reports these: drop them from ALLOWED and the " \
        f"chart README: {stale}"


def test_the_chart_readme_gives_each_allowance() -> None:
    """The README's "Linting" table names each allowance in a row "| `check-id` ... | Kind,
    ... | why |", so a user reading why a check is not met finds the list the test holds."""
    text = README.read_text()
    assert "\n## Linting" in text, "charts/distcache/README.md has no Linting section"
    section = text.split("\n## Linting", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        check = re.match(r"`([a-z0-9-]+)`", cells[0])
        if len(cells) >= 3 and check:
            documented |= {(kind.strip(), check.group(1)) for kind in cells[1].split(",")}
    missing = sorted({(kind, check) for kind, check, _ in ALLOWED} - documented)
    assert not missing, f"not in the README's Linting table (| `check` | kinds | why |): " \
        f"{missing}"
