"""Reply encoding, RESP2 and RESP3 (after HELLO 3): bytes ready for the socket."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL2 = b"$-1\r\n"  # RESP2's null bulk string
NULL3 = b"_\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"

Value = bytes | str | int | float | None | list["Value"] | Mapping[str, "Value"]


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def error(text: str) -> bytes:
    # A reply line cannot hold a newline: it would end the error and start garbage.
    return b"-%b\r\n" % text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def null(resp3: bool) -> bytes:
    return NULL3 if resp3 else NULL2


def array(items: Iterable[bytes]) -> bytes:
    """An array of already encoded replies."""
    parts = list(items)
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


def encode(value: Value, resp3: bool) -> bytes:
    """A plain Python value: str and bytes as bulk strings, dicts as RESP3 maps (flat
    arrays in RESP2), None as null."""
    if value is None:
        return null(resp3)
    if isinstance(value, bytes):
        return bulk(value)
    if isinstance(value, str):
        return bulk(value.encode())
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, float):
        return b",%b\r\n" % repr(value).encode() if resp3 else bulk(repr(value).encode())
    if isinstance(value, Mapping):
        body = b"".join(encode(k, resp3) + encode(v, resp3) for k, v in value.items())
        if resp3:
            return b"%%%d\r\n%b" % (len(value), body)
        return b"*%d\r\n%b" % (2 * len(value), body)
    return array(encode(v, resp3) for v in value)
