"""Helpers of the monitoring tier (not in conftest: see tests/support.py): Debian's real
`prometheus` on loopback, and the generated dashboards' queries and alert rules' expressions
as Prometheus is asked them. Shared by test_live_prometheus.py (a local cluster and a stand-in
for the operator) and e2e/test_operator_prometheus.py (the real operator on kind)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import alerts, dashboards, generate
from support import free_port

RATE_INTERVAL = "1m"  # what $__rate_interval stands for unless a test says otherwise


def need(binary: str) -> str:
    """A binary of Debian's `prometheus` package (`make test` installs it through
    scripts/ensure-debs.sh promtool=prometheus); the test is skipped, saying so, without it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install prometheus; `make test` "
                    "installs it)")
    return path


def board(name: str) -> dict[str, Any]:
    """A generated dashboard's JSON (charts/distcache/dashboards/NAME)."""
    data: dict[str, Any] = json.loads((generate.DASHBOARDS_DIR / name).read_text())
    return data


def board_queries(name: str) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel query of a generated dashboard."""
    return dashboards.queries(board(name))


def is_operator(board_name: str) -> bool:
    return "operator" in board_name


def substitute(expr: str, namespace: str, job: str, rate_interval: str = RATE_INTERVAL) -> str:
    """A dashboard query as Grafana sends it with $namespace and $job set to one target's."""
    return (expr.replace("$__rate_interval", rate_interval)
            .replace("$namespace", namespace).replace("$job", job))


def alert_expressions(group: str | None = None) -> list[str]:
    """Every alert's expression and signals (only those of rule group `group` if given)."""
    exprs: list[str] = []
    for alert in alerts.ALERTS:
        if group is None or alert.group == group:
            exprs += [alert.expr, *alert.signals]
    return list(dict.fromkeys(exprs))


def variable_queries(name: str) -> list[tuple[str, str]]:
    """(variable, query) of a dashboard's label_values() variables."""
    return [(v["name"], v["query"]) for v in board(name)["templating"]["list"]
            if v.get("type") == "query" and str(v.get("query", "")).startswith("label_values(")]


def sample_names(exposition: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
            if line and not line.startswith("#")}


class Prometheus:
    """Debian's `prometheus` on loopback: its own port and data folder under `directory`,
    scrapes and rule evaluation every second, the generated rules loaded, `scrape_configs` as
    given. Started by start(), stopped by stop() (this process only, by PID)."""

    def __init__(self, binary: str, directory: Path,
                 scrape_configs: list[dict[str, Any]]) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(generate.RULES_FILE)],
            "scrape_configs": scrape_configs,
        }
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"

    def start(self) -> None:
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            code = self.proc.poll() if self.proc else None
            if code is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start (exit {code}): "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/PATH: the whole answer (status, data, error), errors included."""
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the error in JSON
            answer = json.loads(exc.read())
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def data(answer: dict[str, Any]) -> list[Any]:
    """The result of a query the API answered with success (fails otherwise)."""
    assert answer.get("status") == "success", answer
    result: list[Any] = answer["data"]["result"]
    return result


def value(answer: dict[str, Any]) -> float:
    """The first sample's value, 0 when there is none."""
    result = data(answer)
    return float(result[0]["value"][1]) if result else 0.0

