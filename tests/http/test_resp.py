"""The Redis protocol edge of one node: a real `distcache-node` process (serve.py's wiring,
uvloop) with --resp-port, driven by real clients over loopback: redis-py (RESP2, RESP3,
pipelines, TLS), redis-cli, raw sockets for what clients never send."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from distcache_node.local import certs
from resp_support import encode_command, read_exact, read_replies, read_until_closed
from support import API_KEY, free_port

Spawn = Callable[..., tuple[subprocess.Popen[bytes], str]]


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    url: str
    port: int  # RESP

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("password", API_KEY)
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, **kwargs)

    def sock(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def http(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"X-API-Key": API_KEY,
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture
def start_node(node_process: Spawn) -> Callable[..., Node]:
    def start(*flags: str, context: ssl.SSLContext | None = None) -> Node:
        port = free_port()
        proc, url = node_process("--resp-port", str(port), *flags,
                                 env={"DISTCACHE_API_KEY": API_KEY}, context=context)
        return Node(proc, url, port)

    return start


@pytest.fixture
def node(start_node: Callable[..., Node]) -> Node:
    return start_node()


@pytest.fixture
def r(node: Node) -> Iterator[redis.Redis]:
    client = node.client()
    yield client
    client.close()


# --- commands, with Redis's semantics -----------------------------------------------------

def test_get_set_and_set_options(r: redis.Redis) -> None:
    assert r.get("missing") is None
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None  # NX on a present key: nil, nothing changed
    assert r.get("k") == b"v"
    assert r.set("new", "x", xx=True) is None and r.get("new") is None
    assert r.set("k", "w", xx=True) is True and r.get("k") == b"w"
    assert r.set("k", "z", get=True) == b"w"  # SET ... GET returns the old value
    assert r.set("k", "y", ex=100) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "kept", keepttl=True) is True
    assert r.get("k") == b"kept" and 99 <= r.ttl("k") <= 100
    assert r.set("k", "p", px=5000) is True and 4000 < r.pttl("k") <= 5000
    assert r.set("k", "at", exat=int(time.time()) + 50) is True and 48 <= r.ttl("k") <= 50
    assert r.set("k", "past", pxat=int(time.time() * 1000) - 1000) is True
    assert r.get("k") is None  # an expiry in the past: the key is gone, as in Redis
    with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.execute_command("SET", "k", "v", "EX", "0")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.execute_command("SET", "k", "v", "EX", "ten")
    with pytest.raises(redis.ResponseError,
                       match="wrong number of arguments for 'get' command"):
        r.execute_command("GET")


def test_multi_key_commands(r: redis.Redis) -> None:
    assert r.mset({"a": "1", "b": "2", "c": "3"}) is True
    assert r.mget("a", "nope", "c", "a") == [b"1", None, b"3", b"1"]
    assert r.exists("a", "b", "nope", "a") == 3  # a repeated key counts each time
    assert r.msetnx({"c": "x", "d": "4"}) is False and r.get("d") is None
    assert r.msetnx({"d": "4", "e": "5"}) is True and r.get("e") == b"5"
    assert r.delete("a", "b", "nope", "a") == 2
    assert r.unlink("c", "d") == 2
    assert r.mget("a", "b", "c", "d") == [None] * 4
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
        r.execute_command("MSET", "a", "1", "b")
    assert r.get("a") is None  # an odd MSET stores nothing


def test_counters(r: redis.Redis) -> None:
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.decr("n") == 41
    assert r.decrby("n", 50) == -9
    r.set("big", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.incr("big")
    r.set("word", "ten")
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        r.incr("word")
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        r.incrby("n", "1.5")
    r.set("padded", "007")  # not how Redis writes an integer: not one
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("padded")
    r.set("t", "5", ex=100)
    assert r.incr("t") == 6 and 99 <= r.ttl("t") <= 100  # INCR keeps the TTL


def test_expiry_commands(r: redis.Redis) -> None:
    assert r.ttl("none") == -2 and r.pttl("none") == -2
    r.set("k", "v")
    assert r.ttl("k") == -1
    assert r.expire("k", 100) is True and 99 <= r.ttl("k") <= 100
    assert r.expire("k", 200, nx=True) is False  # it has a TTL already
    assert r.expire("k", 50, gt=True) is False and r.expire("k", 300, gt=True) is True
    assert r.pexpire("k", 100_000) is True and 99_000 < r.pttl("k") <= 100_000
    assert r.persist("k") is True and r.ttl("k") == -1 and r.get("k") == b"v"
    assert r.persist("k") is False
    assert r.expire("none", 10) is False
    assert r.expire("k", -1) is True and r.exists("k") == 0  # a past expiry deletes
    r.setex("s", 100, "v")
    assert r.get("s") == b"v" and 99 <= r.ttl("s") <= 100
    r.psetex("p", 100_000, "v")
    assert 99_000 < r.pttl("p") <= 100_000
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'setex' command"):
        r.setex("s", 0, "v")
    assert r.getex("s", persist=True) == b"v" and r.ttl("s") == -1
    assert r.getex("s", ex=30) == b"v" and 29 <= r.ttl("s") <= 30
    assert r.getex("none", ex=30) is None
    assert r.getdel("s") == b"v" and r.get("s") is None and r.getdel("s") is None


def test_append_strlen_and_connection_commands(r: redis.Redis) -> None:
    assert r.append("t", "Hello") == 5
    assert r.append("t", " World") == 11
    assert r.get("t") == b"Hello World" and r.strlen("t") == 11 and r.strlen("none") == 0
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.execute_command("SELECT", "0") is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", "1")
    assert r.client_setname("worker-1") is True
    assert r.client_getname() == "worker-1"
    assert isinstance(r.client_id(), int)
    assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "mine") == b"OK"
    assert b"lib-name=mine" in r.execute_command("CLIENT", "INFO")
    with pytest.raises(redis.ResponseError, match="Try CLIENT HELP"):
        r.execute_command("CLIENT", "KILL", "x")
    assert r.dbsize() == 1
    info = r.info()
    assert info["redis_version"] and info["db0"] == {"keys": 1, "expires": 0, "avg_ttl": 0}
    r.set("ttl-1", "x", ex=100)
    r.set("ttl-2", "x", ex=200)
    keyspace = r.info("keyspace")["db0"]
    assert keyspace["keys"] == 3 and keyspace["expires"] == 2
    assert 140_000 < keyspace["avg_ttl"] <= 150_000  # milliseconds, as Redis reports it
    r.delete("ttl-1", "ttl-2")
    assert info["connected_clients"] >= 1 and info["used_memory"] > 0
    assert set(r.info("stats")) >= {"keyspace_hits", "keyspace_misses",
                                   "total_commands_processed"}
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert r.command_count() >= 30
    table = r.command()  # redis-py parses the whole table
    assert table["get"]["arity"] == 2 and table["mset"]["step_count"] == 2
    conn = r.connection_pool.get_connection()  # COMMAND INFO, as redis-cli asks
    try:
        conn.send_command("COMMAND", "INFO", "get", "nosuch")
        info_get = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert info_get[0][0] == b"get" and info_get[0][1] == 2 and info_get[1] is None


def test_unknown_command_is_redis_error_and_connection_stays(node: Node) -> None:
    with node.sock() as sock:
        sock.sendall(encode_command("AUTH", API_KEY) + encode_command("FLUSHALL", "ASYNC")
                     + encode_command("PING"))
        got = read_replies(sock, 3)
    assert got == (b"+OK\r\n-ERR unknown command 'FLUSHALL', with args beginning with: "
                   b"'ASYNC' \r\n+PONG\r\n")


# --- authentication -----------------------------------------------------------------------

def test_every_command_but_auth_hello_ping_quit_needs_the_key(node: Node) -> None:
    # RESP2 and no CLIENT SETINFO: redis-py would open with those, refused without a key
    # (as Redis refuses them).
    anonymous = node.client(password=None, protocol=2, lib_name=None, lib_version=None)
    assert anonymous.ping() is True
    for command in (("GET", "k"), ("SET", "k", "v"), ("INFO",), ("DBSIZE",), ("CLIENT", "ID"),
                    ("COMMAND", "COUNT"), ("CONFIG", "GET", "save"), ("ECHO", "x")):
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            anonymous.execute_command(*command)
    with pytest.raises(redis.AuthenticationError, match="HELLO must be called"):
        anonymous.execute_command("HELLO", "3")
    with node.sock() as sock:
        sock.sendall(encode_command("AUTH", "wrong") + encode_command("AUTH", "root", API_KEY)
                     + encode_command("GET", "k") + encode_command("HELLO", "3", "AUTH",
                                                                   "default", "wrong"))
        got = read_replies(sock, 4)
    assert got == (b"-WRONGPASS invalid username-password pair or user is disabled.\r\n" * 2
                   + b"-NOAUTH Authentication required.\r\n"
                   + b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    keyed = node.client(username="default", password=API_KEY)
    assert keyed.set("k", "v") is True and keyed.get("k") == b"v"
    hello3 = node.client(password=API_KEY, protocol=3)  # HELLO 3 AUTH default <key>
    assert hello3.get("k") == b"v"


def test_a_rotated_key_file_is_taken_in_over_resp(node_process: Spawn,
                                                  tmp_path: Path) -> None:
    """The RESP edge uses the node's own key set: a key file rotated in place is honoured
    without a restart, and the dropped key is refused once its grace period is over."""
    key_file = tmp_path / "api-key"
    key_file.write_text("old-key\n")
    port = free_port()
    node_process("--resp-port", str(port), "--api-key-file", str(key_file),
                 "--api-key-grace-seconds", "1")
    assert redis.Redis(port=port, password="old-key").set("k", "v") is True
    key_file.write_text("new-key\n")

    def accepts(key: str) -> bool:
        try:
            return bool(redis.Redis(port=port, password=key, socket_timeout=5).ping())
        except redis.AuthenticationError:
            return False

    for key, wanted in (("new-key", True), ("old-key", False)):
        deadline = time.monotonic() + 10
        while accepts(key) != wanted:
            assert time.monotonic() < deadline, f"{key} accepted: {not wanted}"
            time.sleep(0.2)
    assert redis.Redis(port=port, password="new-key").get("k") == b"v"


def test_no_api_key_configured_means_open_and_auth_says_so(start_node: Callable[..., Node],
                                                            node_process: Spawn) -> None:
    port = free_port()
    node_process("--resp-port", str(port))  # no DISTCACHE_API_KEY
    client = redis.Redis(port=port, socket_timeout=10)
    assert client.set("k", "v") is True
    with pytest.raises(redis.RedisError, match="without any password configured"):
        client.execute_command("AUTH", "anything")


# --- RESP3 --------------------------------------------------------------------------------

def test_resp3_hello_map_and_null(node: Node) -> None:
    client = node.client(protocol=3)
    assert client.get("none") is None
    hello = client.execute_command("HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"server"] == b"distcache"
    with node.sock() as sock:
        sock.sendall(encode_command("HELLO", "3", "AUTH", "default", API_KEY)
                     + encode_command("GET", "none") + encode_command("MGET", "none", "none")
                     + encode_command("HELLO", "2") + encode_command("GET", "none"))
        got = read_replies(sock, 5)
    hello_map, rest = got.split(b"+master\r\n", 1)[0], got.split(b"]", 1)[0]
    assert hello_map.startswith(b"%7\r\n")  # a RESP3 map
    tail = got[got.index(b"modules") + len(b"modules\r\n*0\r\n"):]
    assert tail.startswith(b"_\r\n*2\r\n_\r\n_\r\n*14\r\n")  # RESP3 nulls, then RESP2 again
    assert tail.endswith(b"$-1\r\n") and rest


# --- pipelines ----------------------------------------------------------------------------

def test_pipeline_replies_keep_command_order(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"p{i}", i)
        pipe.incr(f"p{i}")
        pipe.get(f"p{i}")
    pipe.execute_command("NOSUCH")
    pipe.get("p7")
    results = pipe.execute(raise_on_error=False)
    for i in range(2000):
        assert results[3 * i:3 * i + 3] == [True, i + 1, str(i + 1).encode()]
    assert isinstance(results[-2], redis.ResponseError) and results[-1] == b"8"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_is_paused_not_buffered(node: Node) -> None:
    """600 pipelined GETs of a 1 MB value (600 MB of replies) from a client that reads
    nothing: the node stops running its commands once the socket is full, instead of
    buffering the replies, and answers in order once the client reads."""
    value = b"x" * 1_000_000
    node.client().set("big", value)
    before = _rss(node.proc.pid)
    with node.sock() as sock:
        sock.sendall(encode_command("AUTH", API_KEY) + encode_command("GET", "big") * 600)
        time.sleep(1.5)  # what the node would buffer, it would have by now
        grown = _rss(node.proc.pid) - before
        assert grown < 100_000_000, f"the node grew by {grown} bytes for a client not reading"
        reply = b"$1000000\r\n" + value + b"\r\n"
        got = read_replies(sock, 4, timeout=30)
        assert got.startswith(b"+OK\r\n" + reply * 3)
    assert node.client().ping() is True


# --- values between HTTP and RESP ---------------------------------------------------------

def test_values_written_over_http_read_over_resp(node: Node, r: redis.Redis) -> None:
    cases = {"str": ("Alice", b"Alice"), "uni": ("héllo ✓", "héllo ✓".encode()),
             "int": (10, b"10"), "float": (1.5, b"1.5"), "true": (True, b"true"),
             "null": (None, b"null"), "obj": ({"a": [1, 2]}, b'{"a":[1,2]}'),
             "list": ([1, "x"], b'[1,"x"]'), "jsontext": ('{"a":1}', b'{"a":1}')}
    for key, (value, _) in cases.items():
        node.http("/set", {"key": key, "value": value})
    for key, (_, expected) in cases.items():
        assert r.get(key) == expected, key
    assert r.incr("int") == 11
    node.http("/set", {"key": "strnum", "value": "10"})  # a JSON string holding digits
    assert r.incr("strnum") == 11  # counts like Redis
    assert node.http("/get?key=strnum")["value"] == 11


def test_values_written_over_resp_read_over_http(node: Node, r: redis.Redis) -> None:
    r.set("text", "Alice")
    r.set("number", "42")
    r.set("padded", "042")
    r.set("json", '{"a":1}')
    r.set("binary", b"\xff\x00\xfe")
    r.incr("counter")
    assert node.http("/get?key=text")["value"] == "Alice"
    assert node.http("/get?key=number")["value"] == 42
    assert node.http("/get?key=padded")["value"] == "042"
    assert node.http("/get?key=json")["value"] == '{"a":1}'
    assert node.http("/get?key=binary")["value"] == {"$bytes": "/wD+"}
    assert node.http("/get?key=counter")["value"] == 1
    for key, raw in (("text", b"Alice"), ("number", b"42"), ("padded", b"042"),
                     ("json", b'{"a":1}'), ("binary", b"\xff\x00\xfe")):
        assert r.get(key) == raw  # and back, byte for byte
    assert node.http("/incr", {"key": "number", "delta": 1})["value"] == 43


def test_keys_follow_http_rules(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="reserved"):
        r.set("__ratelimit__:1.2.3.4:1", "0")
    with pytest.raises(redis.ResponseError, match="UTF-8"):
        r.set(b"\xff", "v")
    with pytest.raises(redis.ResponseError, match="over the 1024-byte limit"):
        r.get("k" * 1025)


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("frame, error", [
    (b"*1\r\n$999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\nxx", b"-ERR Protocol error: invalid bulk length"),
    (b"*99999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*2\r\n$3\r\nGET\r\n:5\r\n", b"-ERR Protocol error: expected"),
    (b"*1\r\n$x\r\n", b"-ERR Protocol error"),
    (b"*1\r\n*1\r\n$4\r\nPING\r\n", b"-ERR Protocol error: expected"),
    (b"PING " + b"x" * 70_000, b"-ERR Protocol error: too big inline request\r\n"),
    (b"*1\r\n$4\r\nPING\r\n+OK\r\n", b"+PONG\r\n-ERR Protocol error: expected"),
])
def test_a_broken_or_oversized_frame_gets_an_error_and_a_close(
        node: Node, frame: bytes, error: bytes) -> None:
    with node.sock() as sock:
        sock.sendall(frame)
        got, closed = read_until_closed(sock)
    assert got.startswith(error) and closed, got[:200]
    assert node.client().ping() is True


def test_inline_commands(node: Node) -> None:
    with node.sock() as sock:
        sock.sendall(f'AUTH {API_KEY}\r\nSET greeting "hello world\\n"\r\nGET greeting\r\n'
                     "\r\nPING\n".encode())
        got = read_replies(sock, 4)
    assert got == b"+OK\r\n+OK\r\n$12\r\nhello world\n\r\n+PONG\r\n"


def test_a_client_that_stops_sending_still_gets_every_reply(node: Node) -> None:
    """`nc`-style: commands, then the write side closed; every reply comes, then the close.
    SET ... GET reads before it writes, so its replies come from a task, after the EOF."""
    with node.sock() as sock:
        sock.sendall(encode_command("AUTH", API_KEY)
                     + encode_command("SET", "half", "closed", "GET") * 500 + b"GET half\r\n")
        sock.shutdown(socket.SHUT_WR)
        got, closed = read_until_closed(sock)
    assert got == (b"+OK\r\n$-1\r\n" + b"$6\r\nclosed\r\n" * 500) and closed


def test_sigterm_closes_resp_connections_and_exits_0(node: Node) -> None:
    with node.sock() as sock:
        sock.sendall(encode_command("PING"))
        assert read_replies(sock, 1) == b"+PONG\r\n"
        node.proc.send_signal(signal.SIGTERM)
        _, closed = read_until_closed(sock, timeout=15)
        assert closed
    assert node.proc.wait(timeout=15) == 0


def test_quit_answers_then_closes(node: Node) -> None:
    with node.sock() as sock:
        sock.sendall(encode_command("QUIT") + encode_command("PING"))
        got, closed = read_until_closed(sock)
    assert got == b"+OK\r\n" and closed


def test_slow_and_idle_connections_are_closed(start_node: Callable[..., Node]) -> None:
    node = start_node("--resp-idle-timeout", "4", "--request-read-timeout", "1")
    with node.sock() as idle, node.sock() as slow:
        opened = time.monotonic()
        slow.sendall(b"*2\r\n$3\r\nGET\r\n")  # half a command, then nothing
        _, closed = read_until_closed(slow, timeout=5)
        slow_closed = time.monotonic() - opened
        assert closed and slow_closed < 3, slow_closed  # the read timeout, not the idle one
        _, closed = read_until_closed(idle, timeout=8)
        idle_closed = time.monotonic() - opened
        assert closed and 3.5 < idle_closed < 8, idle_closed
    with node.sock() as trickle:  # a byte every 0.2 s of a command that never ends in time
        trickle.sendall(b"*2\r\n$3\r\nGET\r\n$100\r\n")
        opened = time.monotonic()
        trickle.settimeout(0.2)
        closed = False
        while time.monotonic() - opened < 6 and not closed:
            try:
                trickle.sendall(b"x")
                closed = trickle.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - opened < 3.5
    assert node.client().ping() is True


def test_a_client_waiting_on_its_replies_is_not_taken_for_a_slow_one(
        start_node: Callable[..., Node]) -> None:
    """A pipeline the node is still answering (the client reads slowly), with the next
    command half sent: the read timeout does not run while the node owes replies."""
    node = start_node("--request-read-timeout", "1")
    value = b"x" * 1_000_000
    node.client().set("big", value)
    with node.sock() as sock:
        sock.sendall(encode_command("AUTH", API_KEY) + encode_command("GET", "big") * 300
                     + b"*2\r\n$3\r\nGET\r\n")
        time.sleep(2.5)  # past the read timeout, replies unread
        reply = b"$1000000\r\n" + value + b"\r\n"
        expected = b"+OK\r\n" + reply * 300
        assert read_exact(sock, len(expected)) == expected
        sock.sendall(b"$3\r\nbig\r\n")  # the rest of the last command, at once
        assert read_replies(sock, 1) == reply


def test_connection_limit(start_node: Callable[..., Node]) -> None:
    node = start_node("--max-connections", "2")
    with node.sock() as a, node.sock() as b:
        a.sendall(encode_command("PING"))
        b.sendall(encode_command("PING"))
        assert read_replies(a, 1) == b"+PONG\r\n" and read_replies(b, 1) == b"+PONG\r\n"
        with node.sock() as c:
            got, closed = read_until_closed(c)
        assert got == b"-ERR max number of clients reached\r\n" and closed


def test_rate_limit_counts_resp_commands(start_node: Callable[..., Node]) -> None:
    node = start_node("--rate-limit", "5")
    client = node.client()
    errors = 0
    for _ in range(30):
        try:
            client.set("k", "v")
        except redis.ResponseError as exc:
            assert "too many requests: limit is 5 per second" in str(exc)
            errors += 1
    assert errors >= 20
    assert client.ping() is True  # PING is not counted


def test_metrics_count_resp_commands(node: Node, r: redis.Redis) -> None:
    r.set("k", "v")
    r.get("k")
    r.get("k")
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOSUCH")
    request = urllib.request.Request(node.url + "/metrics", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    assert 'distcache_commands_total{command="get",outcome="ok",protocol="resp"} 2.0' in text
    assert ('distcache_commands_total{command="unknown",outcome="error",protocol="resp"} 1.0'
            in text)
    assert 'distcache_command_duration_seconds_count{command="set",protocol="resp"} 1.0' in text


# --- TLS ----------------------------------------------------------------------------------

def test_tls_with_the_nodes_certificate(start_node: Callable[..., Node], tmp_path: Path) -> None:
    ca, _ = certs.make_ca(tmp_path)
    cert, key = certs.make_cert(tmp_path / "node", "node", tmp_path)
    context = ssl.create_default_context(cafile=str(ca))
    node = start_node("--tls-cert", str(cert), "--tls-key", str(key), context=context)
    client = node.client(ssl=True, ssl_ca_certs=str(ca))
    assert client.set("k", "v") is True and client.get("k") == b"v"
    with node.sock() as plain:  # no TLS on a TLS port: no answer in plain text
        plain.sendall(encode_command("PING"))
        got, _ = read_until_closed(plain, timeout=2)
        assert b"PONG" not in got
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli (Debian's redis-tools) is needed"
    out = subprocess.run([redis_cli, "--tls", "--cacert", str(ca), "-p", str(node.port),
                          "-a", API_KEY, "--no-auth-warning", "GET", "k"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "v", out


def test_a_rotated_certificate_is_served_on_the_resp_port(start_node: Callable[..., Node],
                                                          tmp_path: Path) -> None:
    """The RESP listener serves with the HTTP server's SSLContext, which tlsreload.py keeps
    on the files: a certificate replaced on disk is served without a restart."""
    from cryptography import x509

    ca, _ = certs.make_ca(tmp_path)
    cert, key = certs.make_cert(tmp_path / "live", "node", tmp_path)
    trusting = ssl.create_default_context(cafile=str(ca))
    node = start_node("--tls-cert", str(cert), "--tls-key", str(key), context=trusting)

    def served_serial() -> int:
        with node.sock() as raw, trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
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
    client = node.client(ssl=True, ssl_ca_certs=str(ca))
    assert client.set("k", "v") is True and client.get("k") == b"v"


# --- redis-cli ----------------------------------------------------------------------------

def test_redis_cli(node: Node) -> None:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli (Debian's redis-tools) is needed"

    def cli(*args: str, stdin: str | None = None) -> str:
        return subprocess.run([redis_cli, "-p", str(node.port), "-a", API_KEY,
                               "--no-auth-warning", *args], input=stdin, capture_output=True,
                              text=True, timeout=30, check=True).stdout

    assert cli("SET", "user:1", "Alice") == "OK\n"
    assert cli("GET", "user:1") == "Alice\n"
    assert cli("-3", "GET", "nothing") == "\n"
    assert cli("INCRBY", "visits", "3") == "3\n"
    assert cli("MGET", "user:1", "visits", "nothing") == "Alice\n3\n\n"
    assert cli("NOSUCH", "a").startswith("ERR unknown command 'NOSUCH'")
    assert "redis_version:" in cli("INFO", "server")
    # Commands piped in, one per line (what `redis-cli < file` sends).
    assert cli(stdin="SET a 1\nINCR a\nGET a\n") == "OK\n2\n2\n"
    out = subprocess.run([redis_cli, "-p", str(node.port), "GET", "user:1"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "NOAUTH" in out


def test_interactive_redis_cli_shows_hints_from_command_docs(node: Node) -> None:
    """redis-cli on a terminal asks COMMAND DOCS at start and shows each command's syntax
    as a hint while one types (a pseudo-terminal here; it asks for the cursor position,
    which the test answers as a terminal would)."""
    import pty
    import select

    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli (Debian's redis-tools) is needed"
    pid, fd = pty.fork()
    if pid == 0:  # the child: redis-cli on the pseudo-terminal
        os.execv(redis_cli, [redis_cli, "-p", str(node.port), "-a", API_KEY,
                             "--no-auth-warning"])

    def read(seconds: float) -> bytes:
        out = b""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                out += chunk
                if b"\x1b[6n" in chunk:  # where is the cursor? (linenoise)
                    os.write(fd, b"\x1b[1;200R")
        return out

    try:
        read(1.5)
        os.write(fd, b"SET ")
        typed = read(1.0)
        os.write(fd, b"greeting hi\r")
        read(1.0)
        os.write(fd, b"GET greeting\r")
        answered = read(1.5)
        os.write(fd, b"quit\r")
        read(1.0)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    assert b"key value [NX|XX] [GET]" in typed
    assert b'"hi"' in answered

