"""The node image as a user runs it: read-only root, non-root, /healthz, /set, /get, and SIGTERM
(docker stop) exits 0. Needs a Docker engine and the image (`make images`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from kubehelp import wait_for

from conftest import project_version

pytestmark = pytest.mark.docker

IMAGE = f"distcache/node:{project_version()}"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


@pytest.fixture
def container() -> Iterator[tuple[str, str]]:
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.skip("needs a running Docker engine")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.skip(f"image {IMAGE} not built (make images)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cid = docker("run", "-d", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                 "--security-opt", "no-new-privileges", "-p", f"127.0.0.1:{port}:8080",
                 IMAGE, "--api-key", "k").stdout.strip()
    try:
        yield cid, f"http://127.0.0.1:{port}"
    finally:
        docker("rm", "-f", cid, check=False)


def call(url: str, path: str, body: object = None) -> object:
    req = urllib.request.Request(url + path, method="POST" if body is not None else "GET",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-API-Key": "k", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_node_image_read_only_non_root_serves_and_stops_on_sigterm(
        container: tuple[str, str]) -> None:
    cid, url = container
    wait_for("/healthz", lambda: call(url, "/healthz"), timeout=30, every=0.2)
    inspect = json.loads(docker("inspect", cid).stdout)[0]
    assert inspect["Config"]["User"] == "10001:10001"
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert docker("exec", cid, "id", "-u").stdout.strip() == "10001"
    assert docker("exec", cid, "touch", "/opt/x", check=False).returncode != 0
    stored = call(url, "/set", {"key": "img", "value": {"ok": True}})
    assert stored == {"stored": True, "key": "img"}
    assert call(url, "/get?key=img") == {"key": "img", "value": {"ok": True}, "ttl": None}
    started = time.monotonic()
    docker("stop", "-t", "10", cid)
    took = time.monotonic() - started
    state = json.loads(docker("inspect", cid).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
    assert took < 10, f"SIGTERM took {took:.1f} s: docker had to SIGKILL"
