"""DistCache's Grafana dashboards and Prometheus alert rules, as code.

`make dashboards` (python -m monitoring.generate) writes monitoring/generated/; the tests
under tests/monitoring/ fail when the committed files drift from what this code generates,
when promtool rejects the rules, or when a query finds no data on a live cluster."""
