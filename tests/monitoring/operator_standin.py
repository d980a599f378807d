"""A stand-in for the operator's metrics in the live monitoring test: the real
distcache_operator.metrics module (its names, labels and HTTP server), updated the way the
operator's handlers (step, membership, report) update it through a scripted scale
3 -> 4 -> 3, because the operator itself needs a Kubernetes API server. It keeps the operator
dashboard checked on machines without kind; the real operator's series are checked by
e2e/test_operator_prometheus.py (the same Prometheus scraping the in-cluster operator while
it scales a DistCache), which is where a script that drifted from what the handlers really
do would show. Runs until terminated.

    DISTCACHE_OPERATOR_METRICS_PORT=PORT python operator_standin.py
"""

from __future__ import annotations

import random
import time

from distcache_operator import metrics


def main() -> None:
    metrics.serve()
    rng = random.Random(8)
    version = 1
    metrics.ACTIONS.labels("create_ring").inc()
    # The TLS material's expiry, as _tls_expiry sets it for an operator-issued CA (5 years)
    # and certificate (1 year).
    now = time.time()
    metrics.TLS_NOT_AFTER.labels("shop", "sessions", "ca").set(now + 5 * 365 * 86400)
    metrics.TLS_NOT_AFTER.labels("shop", "sessions", "certificate").set(now + 365 * 86400)
    while True:
        for phase in ("scale up", "drain", "settled"):
            if phase == "scale up":
                metrics.ACTIONS.labels("scale").inc()
                metrics.SCALES.labels("up").inc()
                metrics.ACTIONS.labels("publish").inc()
            elif phase == "drain":
                metrics.ACTIONS.labels("publish").inc()
            for remaining in (300, 200, 100, 0) if phase != "settled" else (0, 0, 0, 0):
                version += remaining == 300
                metrics.KEYS_REMAINING.labels("shop", "sessions").set(remaining)
                metrics.RING_VERSION.labels("shop", "sessions").set(version)
                metrics.STEPS.labels("ok").inc()
                metrics.STEP_SECONDS.observe(rng.uniform(0.01, 0.4))
                if rng.random() < 0.3:
                    metrics.STEPS.labels("retry").inc()
                if rng.random() < 0.1:
                    metrics.STEPS.labels("problem").inc()
                time.sleep(0.5)
            if phase == "drain":
                metrics.ACTIONS.labels("remove").inc()
                metrics.DRAINS.inc()
                metrics.DRAIN_SECONDS.observe(rng.uniform(1.5, 2.5))  # the drain phase's 2 s
                metrics.ACTIONS.labels("scale").inc()
                metrics.SCALES.labels("down").inc()


if __name__ == "__main__":
    main()
