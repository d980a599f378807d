"""`python -m distcache_operator`: run the operator under kopf.

The handlers module is a placeholder until the operator stage fills it in; the entry point
stays: kopf in standalone mode (one replica, no peering objects), every namespace, with a
liveness endpoint on :8080/healthz. Extra arguments go to `kopf run`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from kopf.cli import main as kopf_main  # the `operator` extra; imported late for --help speed

    args = [
        "run",
        "--standalone",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "-m",
        "distcache_operator.kopf_main",
        *(sys.argv[1:] if argv is None else argv),
    ]
    kopf_main.main(args=args, prog_name="distcache-operator", standalone_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
