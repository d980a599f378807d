"""A bounded fuzzer for the RESP edge: thousands of broken and hostile frames (truncated,
bit-flipped, lengths huge, negative or not numbers, nested arrays, RESP3 types where a
request has none, garbage, endless lines), each on its own connection, against a real
node process. Whatever a frame gets, an error or a close, the node keeps answering other
clients within a second, and the data nobody wrote stays as it was."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import Callable

import redis

from resp_support import encode_command
from support import API_KEY, free_port

Spawn = Callable[..., tuple[subprocess.Popen[bytes], str]]
SEED = 20261207
CASES = 1500
AT_ONCE = 100

VALID = [
    encode_command("GET", "fz:a"), encode_command("SET", "fz:b", "value", "EX", "100"),
    encode_command("MGET", "fz:a", "fz:b", "fz:c"), encode_command("INCRBY", "fz:n", "5"),
    encode_command("HELLO", "3", "AUTH", "default", API_KEY), encode_command("CLIENT", "INFO"),
    encode_command("MSET", "fz:x", "1", "fz:y", "2"), encode_command("DEL", "fz:x"),
    b"PING\r\n", b'SET fz:q "quoted \\x41"\r\n',
]
TYPES = b"*$+-:_#,(!=%~|>"


def _hostile(rng: random.Random) -> bytes:
    frame = bytearray(rng.choice(VALID))
    kind = rng.randrange(12)
    if kind == 0:  # cut anywhere
        return bytes(frame[:rng.randrange(1, len(frame))])
    if kind == 1:  # flip bytes
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        return bytes(frame)
    if kind == 2:  # a length replaced
        number = rng.choice([b"-1", b"-2", b"-99999999999", b"99999999999999999999999",
                             b"2147483648", b"abc", b"", b"1e3", b"0x10", b" 3", b"3 "])
        marker = rng.choice([b"*", b"$"])
        at = frame.find(marker)
        end = frame.find(b"\r\n", at)
        return bytes(frame[:at + 1] + number + frame[end:])
    if kind == 3:  # nested arrays
        depth = rng.randrange(1, 40)
        return b"*1\r\n" * depth + bytes(frame)
    if kind == 4:  # RESP3 and reply types where a request has only bulk strings
        t = bytes([rng.choice(TYPES)])
        return b"*2\r\n$3\r\nGET\r\n" + t + b"1\r\n" + (b"x\r\n" if t == b"$" else b"")
    if kind == 5:  # garbage
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 6:  # a line with no end
        return b"GET " + b"a" * rng.choice([100, 70_000, 200_000])
    if kind == 7:  # too many arguments
        return b"*%d\r\n" % rng.choice([20_002, 1 << 31, 1 << 62]) + b"$1\r\nx\r\n" * 3
    if kind == 8:  # a bulk longer than any value
        return b"*3\r\n$3\r\nSET\r\n$4\r\nfz:z\r\n$%d\r\n" % rng.choice([2 << 20, 1 << 40])
    if kind == 9:  # CRLF games
        return bytes(frame).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
    if kind == 10:  # unbalanced quotes and control bytes inline
        return rng.choice([b'SET "a b\r\n', b"GET 'x\r\n", b"\x00\x01\x02\r\n", b'"\\x\r\n'])
    return bytes(frame) * rng.randrange(1, 5) + rng.randbytes(rng.randrange(1, 20))


async def _one(port: int, payload: bytes) -> bytes:
    """Send `payload` after AUTH; read what comes for a short while or until closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_command("AUTH", API_KEY) + payload)
        await writer.drain()
        got = b""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.1)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        return got
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()


async def test_hostile_frames_never_stop_the_node(node_process: Spawn) -> None:
    port = free_port()
    proc, _ = node_process("--resp-port", str(port), "--max-value-size", "1MiB",
                           env={"DISTCACHE_API_KEY": API_KEY})
    guard = redis.Redis(port=port, password=API_KEY, socket_timeout=1)
    guard.set("guard", "untouched")
    rng = random.Random(SEED)
    payloads = [_hostile(rng) for _ in range(CASES)]
    for start in range(0, CASES, AT_ONCE):
        answers = await asyncio.gather(*(_one(port, p) for p in payloads[start:start + AT_ONCE]))
        for payload, got in zip(payloads[start:start + AT_ONCE], answers, strict=True):
            # Only RESP comes back: the AUTH's +OK first, then replies or an error.
            assert got == b"" or got.startswith(b"+OK\r\n"), (payload[:80], got[:200])
            rest = got[5:]
            assert rest == b"" or rest[:1] in b"+-:$*%_", (payload[:80], got[:200])
        assert proc.poll() is None, "the node exited"
        began = time.monotonic()
        assert guard.ping() is True  # a socket timeout of 1 s: a stuck loop fails here
        assert time.monotonic() - began < 1
    assert guard.get("guard") == b"untouched"
    assert guard.info("clients")["connected_clients"] <= 2  # nothing left hanging open...
