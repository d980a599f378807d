"""`python -m distcache_operator`: run the operator under kopf.

Defaults: kopf standalone (one replica, no peering objects), every namespace, a liveness
endpoint on :8080/healthz. The environment changes them (the chart and manifests set these):

  DISTCACHE_OPERATOR_PEERING      a (Cluster)KopfPeering name: run with peering instead of
                                  --standalone (two or more replicas; one reconciles). Each
                                  pod's priority is a hash of POD_NAME, so two never tie.
  DISTCACHE_OPERATOR_NAMESPACES   comma-separated namespaces to watch instead of all
  DISTCACHE_OPERATOR_HEALTH_PORT  liveness port (8080)
  DISTCACHE_OPERATOR_METRICS_PORT metrics port (9090; 0 turns them off)

Extra arguments go to `kopf run`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping


def kopf_args(env: Mapping[str, str], extra: list[str]) -> list[str]:
    port = int(env.get("DISTCACHE_OPERATOR_HEALTH_PORT") or 8080)
    args = ["run", f"--liveness=http://0.0.0.0:{port}/healthz"]
    peering = env.get("DISTCACHE_OPERATOR_PEERING", "")
    if peering:
        who = env.get("POD_NAME") or os.uname().nodename
        priority = 1 + int(hashlib.sha256(who.encode()).hexdigest()[:7], 16)
        args += [f"--peering={peering}", f"--priority={priority}"]
    else:
        args.append("--standalone")
    namespaces = [n.strip() for n in env.get("DISTCACHE_OPERATOR_NAMESPACES", "").split(",")
                  if n.strip()]
    args += [f"--namespace={n}" for n in namespaces] if namespaces else ["--all-namespaces"]
    return [*args, "-m", "distcache_operator.kopf_main", *extra]


def main(argv: list[str] | None = None) -> int:
    from kopf.cli import main as kopf_main  # the `operator` extra; imported late for --help speed

    args = kopf_args(os.environ, sys.argv[1:] if argv is None else argv)
    kopf_main.main(args=args, prog_name="distcache-operator", standalone_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
