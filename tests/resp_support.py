"""Helpers for the RESP edge's tests: raw sockets speaking the Redis protocol."""

from __future__ import annotations

import socket
import time


def encode_command(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True), or until
    `timeout` passes with the connection still open (False)."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def read_exact(sock: socket.socket, size: int, timeout: float = 30.0) -> bytes:
    """Exactly `size` bytes (a known reply stream, however large)."""
    sock.settimeout(timeout)
    chunks, have = [], 0
    while have < size:
        chunk = sock.recv(min(1 << 20, size - have))
        if not chunk:
            raise AssertionError(f"closed after {have} of {size} bytes")
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


def read_replies(sock: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    """Read until `count` top-level replies of simple types (+ - : $ _ and flat arrays of
    bulk strings) have arrived; returns the raw bytes."""
    sock.settimeout(timeout)
    data = b""
    while _count_replies(data) < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {data!r}")
        data += chunk
    return data


def _count_replies(data: bytes) -> int:
    pos = count = 0
    while pos < len(data):
        end = _reply_end(data, pos)
        if end is None:
            break
        pos = end
        count += 1
    return count


def _reply_end(data: bytes, pos: int) -> int | None:
    eol = data.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, head = data[pos:pos + 1], data[pos + 1:eol]
    if kind == b"$":
        size = int(head)
        if size < 0:
            return eol + 2
        end = eol + 2 + size + 2
        return end if end <= len(data) else None
    if kind in (b"*", b"%"):
        items = int(head) * (2 if kind == b"%" else 1)
        p: int | None = eol + 2
        for _ in range(max(items, 0)):
            assert p is not None
            p = _reply_end(data, p)
            if p is None:
                return None
        return p
    return eol + 2
