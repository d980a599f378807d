"""The README's Kubernetes quick start, run as it stands: the shell block after
`<!-- quickstart -->` in README.md, with bash -euo pipefail, in a scratch folder that sees the
repo's manifests/ and charts/, on the cluster of KUBECONFIG. Every command must succeed, and
what it printed must show the cache answering and 5 pods. The README and this test cannot
drift: there is no second copy of the commands.

Namespace `demo` is deleted before and after. Where a `distcache` release already exists (as
after `make kind-up`, or on a user's cluster) the block's `helm upgrade --install` runs with
`--dry-run=server`: the API server checks everything it would apply, and the release keeps
its revision and settings. (A real upgrade there would also pick up whatever the cluster
offers at that moment, e.g. monitoring objects while another test has the Prometheus
Operator's CRDs installed, and `make e2e` could then not leave the cluster as it found it.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kubehelp import REPO, kubectl, kubectl_path

MARK = "<!-- quickstart -->"


def quickstart() -> str:
    text = (REPO / "README.md").read_text()
    assert MARK in text, "README.md lost its quick start marker"
    match = re.search(re.escape(MARK) + r"\s*```bash\n(.*?)```", text, re.S)
    assert match, "no ```bash block right after the quick start marker"
    return match.group(1)


def helm_dir() -> str | None:
    proc = subprocess.run([str(REPO / "scripts" / "helm.sh"), "--path"], capture_output=True,
                          text=True)
    return str(Path(proc.stdout.strip()).parent) if proc.returncode == 0 else None


def delete_demo() -> None:
    kubectl("delete", "distcaches", "--all", "--wait=true", "--timeout=120s",
            namespace="demo", check=False, timeout=150)
    kubectl("delete", "namespace", "demo", "--ignore-not-found", "--wait=true",
            "--timeout=180s", namespace=None, timeout=200)


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    if not os.environ.get("KUBECONFIG") or not kubectl_path():
        pytest.skip("e2e needs a cluster: KUBECONFIG and kubectl")
    helm = helm_dir()
    if helm is None:
        pytest.skip("helm is not built: scripts/helm.sh builds it")
    script = quickstart()
    exists = kubectl("get", "secret", "-l", "owner=helm,name=distcache", "-o", "name",
                     namespace="distcache-system", check=False).stdout.strip()
    if exists:
        script, n = re.subn(r"^(helm upgrade --install distcache .*?)( --wait)?$",
                            r"\1 --dry-run=server", script, count=1, flags=re.M)
        assert n == 1, "no helm line in the quick start"
    for name in ("manifests", "charts"):
        (tmp_path / name).symlink_to(REPO / name)
    delete_demo()
    # The test's own interpreter first: its venv has redis-py, which the block's python3 uses.
    env = {**os.environ, "PATH": f"{helm}:{Path(kubectl_path() or '').parent}:"
                                 f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        assert proc.returncode == 0, f"quick start failed ({proc.returncode}):\n{proc.stderr}"
        out = proc.stdout
        assert '{"stored":true,"key":"user:1"}' in out
        got, _ = json.JSONDecoder().raw_decode(out[out.rindex('{"key":"user:1"'):])
        assert got["value"] == "Alice"
        # redis-py through the Service's redis port: the key written over HTTP, and its own.
        assert "True ['Alice', 'Bob']" in out
        row = next(line.split() for line in out.splitlines() if line.startswith("cache "))
        assert row[1:4] == ["5", "5", "Running"], row
        assert "distcache-dashboard-distcache-cache" in out
        board = json.loads((tmp_path / "distcache-cache.json").read_text())
        assert board["title"] and board["panels"]
        assert (tmp_path / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    finally:
        delete_demo()
