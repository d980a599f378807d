"""DistCache's Grafana dashboards and Prometheus alert rules, as code.

`make dashboards` (python -m monitoring.generate) writes them into the Helm chart
(charts/distcache/dashboards/, charts/distcache/files/prometheus-rules.yaml) and their promtool
tests into monitoring/rules-tests.yaml; the tests under tests/monitoring/ fail when the
committed files drift from what this code generates, when promtool rejects the rules, or when
a query finds no data on a live cluster."""
