#!/usr/bin/env python3
"""`make test`: every test tier, what each needs, and how a skip is judged, in one file.

    scripts/tiers.py [TIER ...] [-- PYTEST_ARGS ...]      (no TIER: every tier, in this order)

    tier        tests              what runs                         needs (set up here)
    unit        tests/unit         in-process                        -
    chart       tests/unit/chart   the Helm chart rendered, linted   helm, kube-score (Go
                                                                     module proxy)
    http        tests/http         a real node on a loopback socket  redis-cli (Debian)
    cluster     tests/cluster      node processes on loopback        faketime, redis-cli
                                                                     (Debian)
    monitoring  tests/monitoring   promtool, a real Prometheus       prometheus (Debian)
    kind        e2e/               the operator, chart and images    a Docker engine, the
                                   on an offline kind cluster        offline kind test bed,
                                                                     cert-manager, the
                                                                     Prometheus Operator's CRDs
    nodes       e2e/nodes/         node and zone faults on a kind    the same test bed,
                                   cluster of 4 nodes (3 workers     NODES=4
                                   in 2 zones)

Each tier is a pytest marker (tests/conftest.py gives tests/ theirs by folder; e2e/ marks its
own) run as its own pytest process, with a JUnit report this script reads to count outcomes.

How a run is judged:
  1. Set-up first: every selected tier's needs are installed (Debian), built (Go module proxy,
     cached under $DISTCACHE_DEV_CACHE) or started (dockerd). A need that cannot be met makes
     its tier a skip, with the reason.
  2. A tier passes when pytest exits 0 and every test it collected ran: a tier that collected
     nothing, or reported fewer tests than it collected, fails.
  3. A skip, of a whole tier or of a test inside one (`pytest.skip`), is allowed outside CI and
     said loudly in the summary. With CI=true it fails the run, naming the reason; and a need
     that cannot be met fails it before any test runs, so CI does not spend an hour first.
The summary says which tiers ran, how many tests each ran, how long each took and why anything
was skipped; its last line is the plain total (`N passed, N failed, N skipped`).

Environment: CI=true (strict), SKIP_KIND=1 (leave both kind tiers out: a skip like any other),
SKIP_NODES=1 (only the nodes tier), KEEP_CLUSTER=1 (a kind tier leaves its cluster running),
E2E_CLUSTER_NAME (the kind tier's, distcache-test; the nodes tier's is distcache-nodes-test).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIND_SCRIPTS = ROOT / "scripts" / "kind"
CI = os.environ.get("CI") == "true"
# The tooling's build cache, resolved as scripts/devenv.sh does (DISTCACHE_CACHE: its old name),
# and exported so every script and test started from here agrees on it.
CACHE = Path(os.environ.get("DISTCACHE_DEV_CACHE") or os.environ.get("DISTCACHE_CACHE")
             or "/var/cache/distcache")
os.environ["DISTCACHE_DEV_CACHE"] = str(CACHE)


class Unmet(Exception):
    """A need that cannot be met here: its tier is skipped (outside CI) with this reason."""


class SetupFailed(Exception):
    """A set-up step of the project's own that broke (a build, the cluster): a failure."""


def log(message: str) -> None:
    print(f"== [{time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


def run_step(argv: list[str], what: str, capture: bool = False) -> str:
    """Run a set-up command with its stderr shown as it goes; stdout captured when asked.
    Returns stdout; raises Unmet with the command's last words when it fails."""
    proc = subprocess.run(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        # Its own words, not the progress lines the scripts log ("== [time] ...").
        last = [line for line in proc.stderr.splitlines()
                if line.strip() and not line.startswith("== [")][-3:]
        raise Unmet(f"{what}: {' / '.join(last) or f'exit {proc.returncode}'}")
    return proc.stdout or ""


# --- needs: each meets one requirement or raises Unmet saying what is missing ---------------

def debian(binary: str, package: str) -> Callable[[], str]:
    def need() -> str:
        run_step([str(ROOT / "scripts" / "ensure-debs.sh"), f"{binary}={package}"],
                 f"{binary} missing (Debian package {package})")
        path = shutil.which(binary)
        if path is None:  # installed, yet not there: a broken install must not pass as one
            raise Unmet(f"{binary} missing: Debian's {package} is installed without it")
        return path
    need.__name__ = binary
    return need


def helm() -> str:
    path = run_step([str(ROOT / "scripts" / "helm.sh"), "--path"], "helm not built",
                    capture=True).strip()
    os.environ["HELM"] = path  # the chart tests and scripts/manifests.py use this one
    return path


def kube_score() -> str:
    path = run_step([str(ROOT / "scripts" / "kube-score.sh"), "--path"],
                    "kube-score not built", capture=True).strip()
    os.environ["KUBE_SCORE"] = path  # tests/unit/chart/test_kube_score.py uses this one
    return path


def docker() -> str:
    """A Docker engine able to run kind's privileged nodes (started, or installed, here)."""
    proc = subprocess.run([str(KIND_SCRIPTS / "preflight.sh"), "--start-docker"], cwd=ROOT,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        reason = re.search(r"^kind tier unavailable: (.*)$", proc.stdout, re.M)
        raise Unmet(reason.group(1) if reason else f"preflight.sh exit {proc.returncode}")
    return "answering"


def not_skipped_by_hand() -> str:
    if os.environ.get("SKIP_KIND") == "1":
        raise Unmet("SKIP_KIND=1")
    return "-"


# --- the tiers ---------------------------------------------------------------------------------

@dataclass
class Tier:
    name: str
    what: str
    marker: str
    paths: list[str]
    needs: list[Callable[[], str]] = field(default_factory=list)
    # Brings up what the tests run against; yields the environment for pytest, tears down after.
    around: Callable[[], contextlib.AbstractContextManager[dict[str, str]]] | None = None
    pytest_args: list[str] = field(default_factory=list)


def not_skipped_nodes() -> str:
    if os.environ.get("SKIP_NODES") == "1":
        raise Unmet("SKIP_NODES=1")
    return not_skipped_by_hand()


@contextlib.contextmanager
def kind_cluster(name: str = "distcache-test", nodes: int = 1,
                 add_ons: bool = True) -> Iterator[dict[str, str]]:
    """A fresh kind cluster of its own (never the one `make kind-up` started for a person)
    of `nodes` nodes, with the images loaded and the operator installed, plus (`add_ons`)
    cert-manager's image and the Prometheus Operator's CRDs for the tests that use them;
    deleted afterwards unless KEEP_CLUSTER=1."""
    env = dict(os.environ, KIND_CLUSTER_NAME=os.environ.get("E2E_CLUSTER_NAME", name)
               if nodes == 1 else name,
               NODES=str(nodes))
    (CACHE / "kind").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "kind" / "e2e-tier.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another run's kind tier (one at a time per machine)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if CI:
            # CI runs on a developer's machine after their session: kind clusters they left
            # would only compete for the 2 cores. Stopped, not deleted.
            others = subprocess.run(
                ["docker", "ps", "--filter", "label=io.x-k8s.kind.cluster", "--format",
                 "{{.Names}}"], text=True, capture_output=True).stdout.split()
            others = [n for n in others if not n.startswith(env["KIND_CLUSTER_NAME"] + "-")]
            if others:
                log(f"CI: stopping other kind clusters' nodes: {' '.join(others)}")
                subprocess.run(["docker", "stop", *others], capture_output=True)
        down = [str(KIND_SCRIPTS / "kind-down.sh")]
        # Always a fresh cluster: one left from an earlier run may predate a dockerd restart.
        subprocess.run(down, env=env, capture_output=True)
        try:
            steps = [("make kind-up", [str(KIND_SCRIPTS / "kind-up.sh")])]
            if add_ons:
                steps += [("cert-manager", [str(ROOT / "scripts" / "cert-manager.sh"), "image"]),
                          ("Prometheus Operator CRDs",
                           [str(ROOT / "scripts" / "prometheus-operator-crds.sh")])]
            for what, argv in steps:
                t0 = time.monotonic()
                proc = subprocess.run(argv, cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE)
                TIMINGS.append((f"kind{'' if nodes == 1 else f' ({nodes} nodes)'}: {what}",
                                time.monotonic() - t0))
                if proc.returncode != 0:
                    raise SetupFailed(f"{what} failed (exit {proc.returncode}; its log above)")
                if what == "make kind-up":
                    # Last line: export KUBECONFIG=... PATH=<kubectl's folder>:$PATH
                    words = dict(w.split("=", 1) for w in
                                 shlex.split(proc.stdout.strip().splitlines()[-1])[1:])
                    env["KUBECONFIG"] = words["KUBECONFIG"]
                    env["PATH"] = words["PATH"].replace("$PATH", env["PATH"])
            yield env
        finally:
            if os.environ.get("KEEP_CLUSTER") == "1":
                log(f"KEEP_CLUSTER=1: cluster {env['KIND_CLUSTER_NAME']} left running "
                    f"(export KUBECONFIG={env.get('KUBECONFIG', '?')})")
            else:
                subprocess.run(down, env=env)


TIERS = [
    Tier("unit", "in-process", "unit", ["tests"]),
    Tier("chart", "the Helm chart rendered, manifests/ in sync, kube-score", "chart", ["tests"],
         [helm, kube_score]),
    Tier("http", "a real node on a loopback socket", "http", ["tests"],
         [debian("redis-cli", "redis-tools")]),
    Tier("cluster", "node processes on loopback", "cluster", ["tests"],
         [debian("faketime", "faketime"), debian("redis-cli", "redis-tools")]),
    Tier("monitoring", "dashboards and alerts, promtool, a real Prometheus", "monitoring",
         ["tests"], [debian("promtool", "prometheus"), debian("prometheus", "prometheus")]),
    Tier("kind", "operator, chart and images on an offline kind cluster", "e2e or docker",
         ["e2e"], [not_skipped_by_hand, debian("curl", "curl"), helm, docker],
         around=kind_cluster, pytest_args=["--durations=15"]),
    Tier("nodes", "node and zone faults on a 4-node kind cluster (3 workers, 2 zones)",
         "nodes", ["e2e/nodes"], [not_skipped_nodes, helm, docker],
         around=functools.partial(kind_cluster, "distcache-nodes-test", 4, False),
         pytest_args=["--durations=10", "-s"]),
]
TIMINGS: list[tuple[str, float]] = []


# --- running and judging -----------------------------------------------------------------------

@dataclass
class Outcome:
    tier: Tier
    status: str = "not run"          # passed | FAILED | SKIPPED
    reason: str = ""
    collected: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ran(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("passed", "failed", "error", "xfailed"))


def collect(tier: Tier, extra: list[str]) -> int:
    """How many tests the tier selects: what it must run. Collection errors fail here."""
    # Verbosity flags of the caller's would change the listing this reads.
    extra = [a for a in extra if not re.fullmatch(r"-[qv]+|--quiet|--verbose", a)]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", tier.marker,
         *tier.paths, *extra], cwd=ROOT, text=True, capture_output=True)
    if proc.returncode not in (0, 5):
        print(proc.stdout[-5000:], proc.stderr[-2000:], flush=True)
        raise SetupFailed(f"pytest could not collect the tier (exit {proc.returncode})")
    found = re.search(r"(\d+)(?:/\d+)? tests? collected", proc.stdout)
    return int(found.group(1)) if found else 0


def read_junit(path: Path) -> tuple[dict[str, int], list[str]]:
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "xfailed": 0}
    skips: list[str] = []
    if not path.exists():
        return counts, skips
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
        elif case.find("error") is not None:
            counts["error"] += 1
        elif (skipped := case.find("skipped")) is not None:
            if skipped.get("type") == "pytest.xfail":
                counts["xfailed"] += 1
            else:
                counts["skipped"] += 1
                skips.append(f"{name}: {skipped.get('message', '')}")
        else:
            counts["passed"] += 1
    return counts, skips


def run_tier(tier: Tier, outcome: Outcome, extra: list[str], reports: Path) -> None:
    report = reports / f"{tier.name}.xml"
    t0 = time.monotonic()
    try:
        with (tier.around() if tier.around else contextlib.nullcontext(dict(os.environ))) as env:
            log(f"tier {tier.name} ({tier.what}): pytest -m '{tier.marker}' {' '.join(tier.paths)} "
                f"({outcome.collected} tests)")
            code = subprocess.run(
                [sys.executable, "-m", "pytest", "-m", tier.marker, *tier.paths,
                 f"--junitxml={report}", *tier.pytest_args, *extra], cwd=ROOT, env=env
            ).returncode
    except SetupFailed as exc:
        outcome.status, outcome.reason = "FAILED", str(exc)
        return
    finally:
        outcome.seconds = time.monotonic() - t0
        TIMINGS.append((f"tier {tier.name}", outcome.seconds))
    outcome.counts, outcome.skips = read_junit(report)
    reported = outcome.ran + outcome.counts["skipped"]
    if code not in (0, 5):
        outcome.status, outcome.reason = "FAILED", f"pytest exit {code}"
    elif outcome.collected == 0 or reported == 0:
        outcome.status, outcome.reason = "FAILED", "no test collected: a tier that ran " \
                                                   "nothing is not a pass"
    elif reported < outcome.collected:
        outcome.status, outcome.reason = "FAILED", (
            f"reported {reported} of the {outcome.collected} tests it collected")
    elif outcome.skips:
        outcome.status = "FAILED" if CI else "passed"
        outcome.reason = f"{len(outcome.skips)} skipped" + (" (CI allows no skip)" if CI else "")
    else:
        outcome.status = "passed"


def summary(outcomes: list[Outcome]) -> bool:
    print(f"\n== test tiers{' (CI=true: every tier must run, no skips)' if CI else ''} ==")
    for o in outcomes:
        counts = ", ".join(f"{n} {k}" for k, n in o.counts.items() if n) or "-"
        line = f"{o.tier.name:11} {o.status:8} {counts:34} of {o.collected:4} collected"
        if o.seconds:
            line += f"  {o.seconds:6.0f} s"
        print(line + (f"  {o.reason}" if o.reason else ""))
        for skip in o.skips:
            print(f"{'':11} skipped: {skip}")
    loud = [o for o in outcomes if o.status == "SKIPPED" or o.skips]
    if loud and not CI:
        print("!! SKIPPED: " + "; ".join(
            f"{o.tier.name} ({o.reason})" for o in loud) + " -- CI=true would fail this run")
    if TIMINGS:
        print("steps: " + ", ".join(f"{what} {secs:.0f} s" for what, secs in TIMINGS))
    totals = {k: sum(o.counts.get(k, 0) for o in outcomes) for k in
              ("passed", "failed", "error", "skipped", "xfailed")}
    ok = all(o.status == "passed" or (o.status == "SKIPPED" and not CI) for o in outcomes)
    print(f"tiers: {'passed' if ok else 'FAILED'}")
    print(f"total: {totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
          f"{totals['skipped']} skipped")
    return ok


def main(argv: list[str]) -> int:
    names, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    known = {t.name: t for t in TIERS}
    if unknown := [n for n in names if n not in known]:
        print(f"unknown tier(s) {unknown}; the tiers: {', '.join(known)}", file=sys.stderr)
        return 2
    tiers = [known[n] for n in names] if names else TIERS
    outcomes = [Outcome(t) for t in tiers]
    log(f"tiers {', '.join(t.name for t in tiers)}; build cache {CACHE}"
        f"{'; CI=true: strict' if CI else ''}")

    # 1. Needs, once each (helm serves two tiers), before any test runs; a tier's needs stop
    #    at the first unmet one (SKIP_KIND=1 starts no dockerd).
    met: dict[Callable[[], str], str | Unmet] = {}
    for o in outcomes:
        for need in o.tier.needs:
            if need not in met:
                t0 = time.monotonic()
                try:
                    met[need] = need()
                except Unmet as exc:
                    met[need] = exc
                TIMINGS.append((f"need {need.__name__}", time.monotonic() - t0))
            if isinstance(met[need], Unmet):
                o.status, o.reason = "SKIPPED", str(met[need])
                break
    # 2. What each tier must run. A tier that selects nothing fails now, not after the builds.
    for o in outcomes:
        try:
            o.collected = collect(o.tier, extra)
        except SetupFailed as exc:
            o.status, o.reason = "FAILED", str(exc)
        else:
            if o.collected == 0 and o.status != "SKIPPED":
                o.status, o.reason = "FAILED", "no test collected"
    if CI and any(o.status != "not run" for o in outcomes):
        log("CI=true: a tier cannot run as it should; nothing runs (reasons below)")
        return 0 if summary(outcomes) else 1

    # 3. The tiers, in order.
    with tempfile.TemporaryDirectory(prefix="distcache-tiers-") as tmp:
        for o in outcomes:
            if o.status == "not run":
                run_tier(o.tier, o, extra, Path(tmp))
    return 0 if summary(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
