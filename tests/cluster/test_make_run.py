"""`make run` (the README's first command) brings up a local 3-node cluster that answers the
seed's own curl example, and Ctrl-C stops every node.

`make run` keeps its cluster in the checkout's .local folder, which `distcache local up`
refuses to reuse while a cluster runs from it. So test runs in one checkout take turns (a
lock in .local), and a cluster someone started there by hand is left alone (skipped)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from distcache_node.local.runner import running_nodes
from support import ROOT, free_port_range

LOCAL = ROOT / ".local"


@pytest.fixture
def local_folder() -> Iterator[None]:
    LOCAL.mkdir(exist_ok=True)
    with open(LOCAL / ".test-lock", "w") as lock:
        deadline = time.monotonic() + 300
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "another test run held .local for 5 min"
                time.sleep(0.5)
        running = running_nodes(LOCAL)
        if running:
            pytest.skip(f"a cluster started by hand runs from .local (pids {running}); "
                        "`make run` would refuse to start, and this test does not stop it")
        yield


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_run_answers_the_seed_curl_example(local_folder: None) -> None:
    base, resp_base = free_port_range(3), free_port_range(3)
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"BASE_PORT={base}",
         f"RESP_BASE_PORT={resp_base}"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while not any(line.startswith("API key:") for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        assert "API key: my-secret-key" in "".join(lines)
        pids = [int(line.split("(pid ")[1].rstrip(")\n")) for line in lines if "(pid " in line]
        assert len(pids) == 3
        curl = shutil.which("curl")
        assert curl, "curl is needed to run the seed's example as written"
        out = subprocess.run(
            [curl, "-s", "-X", "POST", f"http://localhost:{base}/set?api_key=my-secret-key",
             "-H", "Content-Type: application/json", "-d", '{"key":"user:1","value":"Alice"}'],
            capture_output=True, text=True, check=True).stdout
        assert '"stored":true' in out
        for port in (base, base + 1, base + 2):  # any node answers
            got = subprocess.run(
                [curl, "-s", f"http://localhost:{port}/get?key=user:1&api_key=my-secret-key"],
                capture_output=True, text=True, check=True).stdout
            assert '"value":"Alice"' in got
        assert f"redis://127.0.0.1:{resp_base}" in "".join(lines)
        redis_cli = shutil.which("redis-cli")
        assert redis_cli, "redis-cli (Debian's redis-tools) is needed for the Redis example"
        for port in (resp_base, resp_base + 1, resp_base + 2):  # the Redis protocol too
            got = subprocess.run(
                [redis_cli, "-p", str(port), "-a", "my-secret-key", "--no-auth-warning",
                 "GET", "user:1"], capture_output=True, text=True, check=True).stdout
            assert got.strip() == "Alice"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone if make failed
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user would
        proc.wait(timeout=60)
    for pid in pids:
        deadline = time.monotonic() + 20
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"node pid {pid} still running"
            time.sleep(0.1)
