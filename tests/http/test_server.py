"""The node as a server: rate limiting, gzip, slow clients, the connection bound, graceful stop,
metrics, debug endpoints, TLS and configuration, over real loopback sockets.

Where serve.py's guarded server matters (slow clients, connection bound, signals, TLS, flags)
the node runs as a real `distcache-node` process; the rest uses the in-process app.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import API_KEY, ROOT, check_timing
from support import clean_env as _clean_env
from support import process_output as _output

NODE = [sys.executable, "-m", "distcache_node.cli"]
Spawn = Callable[..., tuple[subprocess.Popen[bytes], str]]


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def spawn(node_process: Spawn) -> Spawn:
    """conftest's node_process, under the name these tests grew up with."""
    return node_process


def call(url: str, path: str, body: Any = None, key: str | None = API_KEY,
         context: ssl.SSLContext | None = None, method: str | None = None,
         ) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def raw_connect(url: str, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(host_port(url), timeout=timeout)


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response header: {buf!r}")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def is_closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset); False if it is still open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# --- rate limiting, end to end -------------------------------------------------------------


def test_rate_limit_refuses_a_burst_with_429_and_headers(node_process: Spawn) -> None:
    _, url = node_process("--api-key", API_KEY, "--rate-limit", "5")
    conn = HTTPConnection(*host_port(url), timeout=10)
    responses = []
    for i in range(15):
        conn.request("GET", f"/get?key=k{i}", headers={"X-API-Key": API_KEY})
        resp = conn.getresponse()
        responses.append((resp.status, {k.lower(): v for k, v in resp.getheaders()},
                          resp.read()))
    conn.close()

    first_status, first_headers, _ = responses[0]
    assert first_status == 404  # allowed: an honest miss, not a refusal
    assert first_headers["x-ratelimit-limit"] == "5"
    assert first_headers["x-ratelimit-remaining"] == "4"
    assert "retry-after" not in first_headers

    allowed = [r for r in responses if r[0] != 429]
    refused = [r for r in responses if r[0] == 429]
    # The estimate never exceeds the count so far: the first five always pass.
    assert [r[0] for r in responses[:5]] == [404] * 5
    assert refused, "a burst of 15 against a limit of 5 per second must be refused"
    # 5 per second, plus what the sliding window lets through if the burst straddles a
    # window boundary (a fraction of a request, more only on a very slow machine).
    assert len(allowed) <= 7
    for _, headers, _ in allowed:
        assert headers["x-ratelimit-limit"] == "5"
        assert 0 <= int(headers["x-ratelimit-remaining"]) <= 4
    for _, headers, body in refused:
        assert headers["content-type"].startswith("application/json")
        assert int(headers["retry-after"]) >= 1
        assert headers["x-ratelimit-limit"] == "5"
        assert headers["x-ratelimit-remaining"] == "0"
        error = json.loads(body)
        assert error["error"] == "rate_limited"
        assert "5 per second" in error["message"]

    # Probes are not limited...
    for _ in range(5):
        assert call(url, "/healthz", key=None)[0] == 200
    # ...nor is /metrics, and the refusals are counted.
    status, _, body = call(url, "/metrics")
    assert status == 200
    assert sample(metric_samples(body.decode()), "distcache_rate_limited_total") == len(refused)


# --- gzip ----------------------------------------------------------------------------------


async def test_large_responses_are_gzipped_small_ones_not(node_url: str) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY},
                                     auto_decompress=False) as raw:
        big, small = "x" * 4000, "tiny"
        for key, value in (("big", big), ("small", small)):
            async with raw.post(f"{node_url}/set", json={"key": key, "value": value}) as resp:
                assert resp.status == 200

        gzip_hdr = {"Accept-Encoding": "gzip"}
        async with raw.get(f"{node_url}/get", params={"key": "big"}, headers=gzip_hdr) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            compressed = await resp.read()
        assert len(compressed) < 1000
        assert json.loads(gzip.decompress(compressed))["value"] == big

        async with raw.get(f"{node_url}/get", params={"key": "small"},
                           headers=gzip_hdr) as resp:
            assert "Content-Encoding" not in resp.headers
            assert json.loads(await resp.read())["value"] == small

        identity = {"Accept-Encoding": "identity"}
        async with raw.get(f"{node_url}/get", params={"key": "big"}, headers=identity) as resp:
            assert "Content-Encoding" not in resp.headers
            assert json.loads(await resp.read())["value"] == big

        async with raw.get(f"{node_url}/metrics", headers=gzip_hdr) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert b"distcache_requests_total" in gzip.decompress(await resp.read())


async def test_gzip_body_limit_applies_to_the_decompressed_size(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    url = await node_factory(max_body_size=64 * 1024, max_value_size=16 * 1024)
    bomb = gzip.compress(json.dumps({"key": "k", "value": "0" * 2_000_000}).encode())
    assert len(bomb) < 64 * 1024
    async with http.post(f"{url}/set", data=bomb,
                         headers={"Content-Encoding": "gzip",
                                  "Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "body_too_large"


# --- slow clients --------------------------------------------------------------------------


def test_slow_clients_are_dropped_while_others_are_served(node_process: Spawn) -> None:
    _, url = node_process("--api-key", API_KEY, "--request-read-timeout", "1")
    host, _ = host_port(url)

    # A slowloris: half a request header, then nothing.
    slowloris = raw_connect(url)
    slowloris.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
    # A client that connects and never sends a byte.
    silent = raw_connect(url)
    # Full headers, then a body that never comes: answered 408 by the body read timeout.
    slow_body = raw_connect(url)
    slow_body.sendall(
        f"POST /set HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\":".encode()
    )
    # A well-behaved keep-alive client that idles after its request: it must be kept.
    keepalive = HTTPConnection(*host_port(url), timeout=5)
    keepalive.request("GET", "/healthz")
    assert keepalive.getresponse().read() == b'{"status": "ok"}'
    keepalive_sock = keepalive.sock

    start = time.monotonic()
    served = 0
    while time.monotonic() - start < 30.0:  # a deadline only: the bound is asserted below
        status, _, _ = call(url, "/healthz", key=None)
        assert status == 200
        served += 1
        if is_closed_by_server(slowloris) and is_closed_by_server(silent):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert is_closed_by_server(slowloris), "a partial request header must not hold a connection"
    assert is_closed_by_server(silent), "a connection that sends nothing must not be kept"
    assert elapsed > 0.7  # not before the read timeout
    # Dropped within a couple of sweeps of the 1 s timeout (a looser bound, with a warning,
    # on an overloaded machine: see support.check_timing).
    check_timing("slow clients dropped", elapsed, 3.0, 15.0)
    assert served >= 3  # and others were served meanwhile

    status, _, body = read_http_response(slow_body)
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"

    # The idle keep-alive connection is still the same open connection, still served.
    time.sleep(max(0.0, 1.6 - (time.monotonic() - start)))
    keepalive.request("GET", "/healthz")
    assert keepalive.getresponse().status == 200
    assert keepalive.sock is keepalive_sock
    for sock in (slowloris, silent, slow_body):
        sock.close()
    keepalive.close()


@pytest.mark.xfail(strict=True, reason=(
    "known gap: a partial request pipelined behind a complete one is not timed by the sweeper "
    "(the mark is cleared when the first request completes); aiohttp's 75 s keep-alive "
    "timeout is then the only bound"))
def test_partial_request_pipelined_behind_a_complete_one_is_dropped(
    node_process: Spawn,
) -> None:
    _, url = node_process("--request-read-timeout", "1")
    with raw_connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        assert read_http_response(sock)[0] == 200
        time.sleep(1.6)
        assert is_closed_by_server(sock)


# --- connection bound ----------------------------------------------------------------------


def test_connections_over_the_bound_get_503_and_the_server_recovers(
    node_process: Spawn,
) -> None:
    proc, url = node_process("--max-connections", "5")
    held = []
    for _ in range(5):
        conn = HTTPConnection(*host_port(url), timeout=5)
        conn.request("GET", "/healthz")  # keep-alive: the connection stays open, idle
        assert conn.getresponse().read()
        held.append(conn)

    for _ in range(3):
        with raw_connect(url) as extra:
            status, headers, body = read_http_response(extra)
            assert status == 503
            assert headers["content-type"] == "application/json"
            assert headers["retry-after"] == "1"
            assert json.loads(body)["error"] == "too_many_connections"
            assert extra.recv(1) == b""  # and closed

    # The held connections are still served while the extra ones are refused.
    held[0].request("GET", "/healthz")
    assert held[0].getresponse().status == 200

    for conn in held:
        conn.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            status, _, _ = call(url, "/healthz", key=None)
        except OSError:
            status = 0
        if status == 200:
            break
        assert time.monotonic() < deadline, "the server did not recover its connection slots"
        time.sleep(0.05)
    # Five at once fit again.
    again = [HTTPConnection(*host_port(url), timeout=5) for _ in range(5)]
    for conn in again:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    for conn in again:
        conn.close()
    output = _output(proc)
    assert "Traceback" not in output
    assert "ERROR" not in output


# --- graceful shutdown ---------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_then_exits_0(node_process: Spawn) -> None:
    proc, url = node_process("--api-key", API_KEY)
    result: dict[str, Any] = {}
    seconds = 5.0  # the in-flight request: long enough to outlast a slow machine's delays

    def slow_request() -> None:
        try:
            result["response"] = call(url, f"/debug/profile?seconds={seconds}&top=5")
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    # Wait until the request is in the handler, profiling: then another profile is refused
    # with 409. (A probe that got there first makes the slow request the 409: start over.)
    deadline = time.monotonic() + 30
    while True:
        worker = threading.Thread(target=slow_request)
        worker.start()
        while worker.is_alive():
            if call(url, "/debug/profile?seconds=0.01")[0] == 409:
                break
            time.sleep(0.05)
        if worker.is_alive():
            break
        assert time.monotonic() < deadline, result
        result.clear()
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # Draining: the listening socket is closed, the in-flight request still runs.
    while True:
        try:
            socket.create_connection(host_port(url), timeout=2).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() - signalled < seconds, "still listening after SIGTERM"
        time.sleep(0.05)
    assert proc.poll() is None
    assert worker.is_alive(), "the in-flight request ended before the listener closed"

    worker.join(timeout=30)
    assert "error" not in result, result.get("error")
    status, _, body = result["response"]
    assert status == 200
    assert b"function calls" in body
    assert proc.wait(timeout=15) == 0
    output = _output(proc)
    assert "finishing in-flight requests" in output
    assert "Traceback" not in output
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(host_port(url), timeout=2).close()


# --- metrics -------------------------------------------------------------------------------


async def test_metrics_after_traffic(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    url = await node_factory(max_memory=32 * 1024, max_value_size=4096,
                             active_expiry_interval=0.05)

    async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return metric_samples(await resp.text())

    async def set_key(key: str, value: Any, ttl: float | None = None) -> None:
        async with http.post(f"{url}/set", json={"key": key, "value": value, "ttl": ttl}) as r:
            assert r.status == 200

    for i in range(20):
        await set_key(f"k{i}", "v" * 1000)
    async with http.get(f"{url}/get", params={"key": "k19"}) as resp:
        assert resp.status == 200
    async with http.get(f"{url}/get", params={"key": "nope"}) as resp:
        assert resp.status == 404
    async with http.post(f"{url}/mget", json={"keys": ["k18", "k19", "gone"]}) as resp:
        assert resp.status == 200
    before = await scrape()

    for i in range(20, 60):
        await set_key(f"k{i}", "v" * 1000)
    await set_key("short-lived", 1, ttl=0.1)
    async with http.post(f"{url}/incr", json={"key": "k59"}) as resp:  # not an integer
        assert resp.status == 409
    # Nobody reads "short-lived": the active expiry must free it.
    deadline = time.monotonic() + 3
    while True:
        after = await scrape()
        if sample(after, "distcache_expirations_total") >= 1:
            break
        assert time.monotonic() < deadline, "active expiry did not run"
        await asyncio.sleep(0.05)

    assert sample(after, "distcache_requests_total", op="set", status="200") == 61
    assert sample(after, "distcache_requests_total", op="get", status="200") == 1
    assert sample(after, "distcache_requests_total", op="get", status="404") == 1
    assert sample(after, "distcache_requests_total", op="mget", status="200") == 1
    assert sample(after, "distcache_requests_total", op="incr", status="409") == 1
    assert sample(after, "distcache_request_duration_seconds_count", op="set") == 61
    assert sample(after, "distcache_request_duration_seconds_bucket", op="set", le="+Inf") == 61
    # Histogram buckets are cumulative and end with every request: 2 gets, one of each kind.
    get_buckets = sorted(
        (float(dict(labels)["le"]), value) for (name, labels), value in after.items()
        if name == "distcache_request_duration_seconds_bucket" and ("op", "get") in labels)
    assert [v for _, v in get_buckets] == sorted(v for _, v in get_buckets)
    assert get_buckets[-1] == (float("inf"), 2)
    assert sample(after, "distcache_request_duration_seconds_count", op="get") == 2
    assert sample(after, "distcache_hits_total") == 3  # one get, two of the mget's keys
    assert sample(after, "distcache_misses_total") == 2
    used = sample(after, "distcache_memory_used_bytes")
    assert 0 < used <= sample(after, "distcache_memory_max_bytes") == 32 * 1024
    keys = sample(after, "distcache_keys")
    assert 10 < keys < 40
    assert sample(before, "distcache_evictions_total") < sample(
        after, "distcache_evictions_total")
    # Every key set and not held now was evicted or expired.
    assert sample(after, "distcache_evictions_total") + sample(
        after, "distcache_expirations_total") == 61 - keys


# --- debug endpoints -----------------------------------------------------------------------


async def test_debug_profile_returns_a_cpu_profile(
    node_url: str, http: aiohttp.ClientSession,
) -> None:
    async with http.get(f"{node_url}/debug/profile", params={"seconds": "0.2"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert "function calls" in text
    assert "cumulative" in text


async def test_debug_heap_returns_allocations(node_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node_url}/debug/heap", params={"seconds": "0.2", "top": "5"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert text.startswith("traced: current=")
    assert 1 <= len(text.strip().splitlines()) <= 6


async def test_overlapping_debug_sessions(node_url: str, http: aiohttp.ClientSession) -> None:
    """One CPU profile at a time (409 for another, never a 500); heap snapshots may overlap,
    even when the one that started tracing ends first."""
    async def fetch(path: str, seconds: str) -> tuple[int, str]:
        async with http.get(f"{node_url}{path}", params={"seconds": seconds}) as resp:
            return resp.status, await resp.text()

    # Sent together, each for a second: whichever the node takes first, the other arrives
    # while it runs (no sleep-and-hope ordering on a busy machine).
    results = await asyncio.gather(fetch("/debug/profile", "1"), fetch("/debug/profile", "1"))
    assert sorted(status for status, _ in results) == [200, 409], results
    error = json.loads(next(text for status, text in results if status == 409))
    assert error["error"] == "profile_in_progress" and "already running" in error["message"]
    assert (await fetch("/debug/profile", "0.1"))[0] == 200  # free again

    first = asyncio.create_task(fetch("/debug/heap", "0.3"))
    await asyncio.sleep(0.1)
    second_status, second_text = await fetch("/debug/heap", "0.5")
    assert (await first)[0] == 200
    assert second_status == 200, second_text
    assert second_text.startswith("traced: ")
    assert not tracemalloc.is_tracing()  # the last one out stopped it


# --- TLS -----------------------------------------------------------------------------------


def make_self_signed(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distcache-test")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "node.crt", directory / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return str(cert_path), str(key_path)


def test_tls(spawn: Spawn, tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=cert)
    _, url = spawn("--api-key", API_KEY, "--tls-cert", cert, "--tls-key", key,
                   "--tls-ca", cert, context=trusting)
    assert url.startswith("https://")

    status, _, body = call(url, "/set", {"key": "secure", "value": [1, 2]}, context=trusting)
    assert (status, json.loads(body)) == (200, {"stored": True, "key": "secure"})
    status, _, body = call(url, "/get?key=secure", context=trusting)
    assert json.loads(body) == {"key": "secure", "value": [1, 2], "ttl": None}

    # A client that does not trust the certificate refuses the server...
    with pytest.raises(urllib.error.URLError) as exc:
        call(url, "/healthz", key=None, context=ssl.create_default_context())
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    # ...and plain HTTP on the TLS port gets no HTTP answer.
    with pytest.raises((OSError, HTTPException)):
        call(url.replace("https://", "http://"), "/healthz", key=None)


# --- configuration of the process ----------------------------------------------------------


def test_process_honours_config_file_env_and_flags(spawn: Spawn, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("api_key: file-key\nmax_memory: 1MiB\nmax_value_size: 1KiB\n"
                      "max_key_size: 64\n")
    env = {"DISTCACHE_API_KEY": "env-key", "DISTCACHE_MAX_KEY_SIZE": "16"}
    _, url = spawn("--config", str(config), "--max-memory", "2MiB", env=env)

    assert call(url, "/get?key=a", key="file-key")[0] == 401  # env overrides the file
    assert call(url, "/get?key=a", key="env-key")[0] == 404
    # max_value_size from the file
    status, _, body = call(url, "/set", {"key": "a", "value": "v" * 1100}, key="env-key")
    assert (status, json.loads(body)["error"]) == (413, "value_too_large")
    assert call(url, "/set", {"key": "a", "value": "v" * 900}, key="env-key")[0] == 200
    # max_key_size from the environment
    status, _, body = call(url, "/get?key=" + "k" * 17, key="env-key")
    assert (status, json.loads(body)["error"]) == (400, "key_too_long")
    # max_memory from the flag, over the file
    _, _, body = call(url, "/metrics", key="env-key")
    assert sample(metric_samples(body.decode()), "distcache_memory_max_bytes") == 2 * 1024**2


def test_config_file_named_by_environment(spawn: Spawn, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("api_key: via-env-file\n")
    _, url = spawn(env={"DISTCACHE_CONFIG": str(config)})
    assert call(url, "/get?key=a", key="via-env-file")[0] == 404
    assert call(url, "/get?key=a", key="other")[0] == 401


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-memory", "lots"], {}, "max_memory: not a size: 'lots'"),
        (["--max-memory", "5ib"], {}, "max_memory: not a size: '5ib'"),
        (["--log-level", "LOUD"], {}, "--log-level: unknown level 'LOUD'"),
        (["--tls-cert", "node.crt"], {}, "--tls-cert and --tls-key go together"),
        ([], {"DISTCACHE_PORT": "eighty"}, "port: "),
        ([], {"DISTCACHE_MAX_MEMROY": "1GiB"}, "unknown setting 'MAX_MEMROY'"),
    ],
)
def test_bad_configuration_exits_2_with_a_message(
    args: list[str], env: dict[str, str], message: str,
) -> None:
    proc = subprocess.run([*NODE, *args], capture_output=True, text=True, timeout=60,
                          env=_clean_env(env))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("distcache-node: ")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_flag_exits_2_with_usage() -> None:
    proc = subprocess.run([*NODE, "--max-memroy", "1GiB"], capture_output=True, text=True,
                          timeout=60, env=_clean_env())
    assert proc.returncode == 2
    assert "usage: distcache-node" in proc.stderr
    assert "unrecognized arguments: --max-memroy" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- `make run` and the seed's curl example ------------------------------------------------


def _http_via_curl_or_urllib(method: str, url: str, body: str | None = None) -> str:
    curl = shutil.which("curl")
    if curl:
        cmd = [curl, "-sS", "--max-time", "10", "-X", method, url]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "-d", body]
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=30).stdout
    request = urllib.request.Request(url, method=method,
                                     data=None if body is None else body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.read().decode())


def test_make_run_and_the_seed_curl_example(spawn: Spawn) -> None:
    distcache_node = Path(sys.executable).parent / "distcache-node"
    assert distcache_node.exists()
    _, url = spawn("--config", "config.yaml", cmd=[str(distcache_node)], cwd=ROOT)
    port = host_port(url)[1]
    # Exactly the README's example, on the port chosen for this test.
    stored = _http_via_curl_or_urllib(
        "POST", f"http://localhost:{port}/set?api_key=my-secret-key",
        '{"key":"user:1","value":"Alice"}',
    )
    assert json.loads(stored) == {"stored": True, "key": "user:1"}
    got = _http_via_curl_or_urllib(
        "GET", f"http://localhost:{port}/get?key=user:1&api_key=my-secret-key")
    assert json.loads(got) == {"key": "user:1", "value": "Alice", "ttl": None}
    # The shipped config's key is enforced.
    assert call(url, "/get?key=user:1", key="not-the-key")[0] == 401


def test_a_rotated_certificate_is_served_without_a_restart(spawn: Spawn, tmp_path: Path) -> None:
    """The files are replaced the way a Secret volume does it (a new file swapped in); new
    connections get the new certificate, the process is the same, data is still there."""
    from cryptography import x509

    from distcache_node.local import certs

    certs.make_ca(tmp_path)
    cert, key = certs.make_cert(tmp_path / "live", "node", tmp_path)
    trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    proc, url = spawn("--api-key", API_KEY, "--tls-cert", str(cert), "--tls-key", str(key),
                      "--tls-ca", str(tmp_path / "ca.pem"), context=trusting)
    assert call(url, "/set", {"key": "kept", "value": 1}, context=trusting)[0] == 200

    def served_serial() -> int:
        host, port = host_port(url)
        with socket.create_connection((host, port), timeout=5) as raw, \
                trusting.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    before = served_serial()
    new_cert, new_key = certs.make_cert(tmp_path / "next", "node", tmp_path)
    for new, live in ((new_key, key), (new_cert, cert)):
        staged = live.with_suffix(".new")
        staged.write_bytes(new.read_bytes())
        os.replace(staged, live)
    deadline = time.monotonic() + 20  # the node polls its files every 2 s
    while (after := served_serial()) == before:
        assert time.monotonic() < deadline, "the new certificate was not served in 20 s"
        time.sleep(0.2)
    assert after == x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number
    assert proc.poll() is None  # no restart
    status, _, body = call(url, "/get?key=kept", context=trusting)
    assert (status, json.loads(body)["value"]) == (200, 1)


def test_status_reports_the_loaded_tls_material_and_follows_a_reload(
        spawn: Spawn, tmp_path: Path) -> None:
    """/status and /cluster/status say which certificate the node serves and which CAs it
    trusts, by SHA-256 of the DER, and follow the files as a move to a new CA replaces
    them (the operator's three steps): trust extended, certificate from the new CA, old CA
    dropped from the file (and from the node's trust: each reload builds it anew from the
    file)."""
    import hashlib

    import jsonschema_rs

    from distcache_node.local import certs
    from distcache_node.protocol import SECRET_HEADER

    document = json.loads((ROOT / "node" / "distcache_node" / "openapi.json").read_text())
    schema = document["components"]["schemas"]["TlsLoaded"]

    def fp(pem: Path) -> str:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()

    def put(live: Path, data: bytes) -> None:  # swapped in whole, as a Secret volume does
        staged = live.with_suffix(".new")
        staged.write_bytes(data)
        os.replace(staged, live)

    old_ca, _ = certs.make_ca(tmp_path / "old", "old CA")
    new_ca, _ = certs.make_ca(tmp_path / "new", "new CA")
    cert, key = certs.make_cert(tmp_path / "live", "node", tmp_path / "old")
    trust = tmp_path / "live" / "ca.crt"
    trust.write_bytes(old_ca.read_bytes())
    both = ssl.create_default_context(cadata=old_ca.read_text() + new_ca.read_text())
    secret = "s" * 32
    _, url = spawn("--api-key", API_KEY, "--cluster-secret", secret, "--advertise-url",
                   "https://127.0.0.1:1", "--tls-cert", str(cert), "--tls-key", str(key),
                   "--tls-ca", str(trust), context=both)

    def loaded() -> dict[str, Any]:
        status, _, body = call(url, "/status", context=both)
        assert status == 200, body
        request = urllib.request.Request(url + "/cluster/status",
                                         headers={SECRET_HEADER: secret})
        with urllib.request.urlopen(request, timeout=10, context=both) as resp:
            peer_view = json.loads(resp.read())["tls"]
        mine = json.loads(body)["tls"]
        assert mine == peer_view
        jsonschema_rs.validate(schema, mine)  # as openapi.json documents it
        return dict(mine)

    def wait(what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 20  # the node polls its files every 2 s
        while not ok(now := loaded()):
            assert time.monotonic() < deadline, f"{what}: not reported in 20 s: {now}"
            time.sleep(0.2)
        return now

    assert loaded() == {"cert_sha256": fp(cert), "ca_sha256": [fp(old_ca)], "reloads": 0,
                        "error": None}
    # (1) the new CA is trusted too.
    put(trust, old_ca.read_bytes() + new_ca.read_bytes())
    wait("trust extended", lambda t: t["ca_sha256"] == sorted([fp(old_ca), fp(new_ca)]))
    # (2) a certificate from the new CA.
    new_cert, new_key = certs.make_cert(tmp_path / "next", "node", tmp_path / "new")
    put(key, new_key.read_bytes())
    put(cert, new_cert.read_bytes())
    now = wait("new certificate", lambda t: t["cert_sha256"] == fp(new_cert)
               and t["error"] is None)
    host, port = host_port(url)
    with socket.create_connection((host, port), timeout=5) as raw, \
            both.wrap_socket(raw, server_hostname=host) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None and hashlib.sha256(der).hexdigest() == fp(new_cert)
    # (3) the old CA leaves the file; the process keeps trusting it (reported as it is).
    reloads = now["reloads"]
    put(trust, new_ca.read_bytes())
    now = wait("trust reduced", lambda t: t["reloads"] > reloads)
    assert fp(new_ca) in now["ca_sha256"] and now["cert_sha256"] == fp(new_cert)
