"""The RESP edge's pure parts: the value mapping between stored JSON and bulk strings, and
the request reader's framing and bounds, fed the way a socket would (any split)."""

from __future__ import annotations

import orjson
import pytest

from distcache_node.resp.errors import FrameError
from distcache_node.resp.parser import RequestReader, split_inline
from distcache_node.resp.values import canonical_int, to_resp, to_stored


@pytest.mark.parametrize("raw", [b"Alice", b"", b"10", b"-3", b"010", b"+1", b"1.5",
                                 "héllo ✓".encode(), b'{"$bytes":"AA=="}', b'"quoted"',
                                 b"\xff\xfe\x00", b"9223372036854775808", b"null"])
def test_any_bytes_written_over_resp_read_back_the_same(raw: bytes) -> None:
    stored = to_stored(raw)
    orjson.loads(stored)  # always JSON, so HTTP can read it
    assert to_resp(stored) == raw


def test_what_http_sees_of_resp_values() -> None:
    assert orjson.loads(to_stored(b"42")) == 42
    assert orjson.loads(to_stored(b"042")) == "042"
    assert orjson.loads(to_stored(b"9223372036854775808")) == "9223372036854775808"
    assert orjson.loads(to_stored(b"\xff")) == {"$bytes": "/w=="}
    assert orjson.loads(to_stored(b"null")) == "null"


def test_what_resp_sees_of_http_values() -> None:
    assert to_resp(orjson.dumps({"a": [1, None]})) == b'{"a":[1,null]}'
    assert to_resp(orjson.dumps("x")) == b"x"
    assert to_resp(orjson.dumps(True)) == b"true"
    # Only exactly {"$bytes": <valid base64>} is taken as bytes.
    assert to_resp(b'{"$bytes":"not base64!"}') == b'{"$bytes":"not base64!"}'
    assert to_resp(b'{"$bytes":"AA==","x":1}') == b'{"$bytes":"AA==","x":1}'


def test_canonical_int_is_redis_string2ll() -> None:
    assert [canonical_int(x) for x in (b"0", b"-1", b"9223372036854775807")] == [
        0, -1, 2**63 - 1]
    for bad in (b"-0", b"01", b"+1", b" 1", b"1 ", b"9223372036854775808", b"", b"1_0"):
        assert canonical_int(bad) is None


def reader() -> RequestReader:
    return RequestReader(max_args=10, max_bulk=100, max_frame=1000)


STREAM = (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n"
          b"*0\r\n*1\r\n$4\r\nPING\r\n")
COMMANDS = [[b"GET", b"k"], [b"PING"], [b"SET", b"k", b"hello"], [b"PING"]]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, len(STREAM)])
def test_commands_come_whole_however_the_bytes_are_split(size: int) -> None:
    r = reader()
    got = []
    for i in range(0, len(STREAM), size):
        got += r.feed(STREAM[i:i + size])
    assert got == COMMANDS and not r.mid_frame


def test_mid_frame_is_known_even_when_hiredis_took_the_headers() -> None:
    r = reader()
    assert r.feed(b"*2\r\n$3\r\nGET\r\n") == [] and r.mid_frame
    assert r.feed(b"$1\r\nk\r\n") == [[b"GET", b"k"]] and not r.mid_frame


@pytest.mark.parametrize("chunks, error", [
    ([b"*11\r\n"], "invalid multibulk length"),
    ([b"*1\r\n$101\r\n"], "invalid bulk length"),
    ([b"*2\r\n$3\r\nGET\r\n", b"$101\r\n"], "invalid bulk length"),
    ([b"*2\r\n$3\r\nGET\r\n:1\r\n"], "expected"),
    ([b"*1\r\n*1\r\n$1\r\nx\r\n"], "expected"),
    ([b"*99999999\r\n"], "invalid multibulk length"),
    ([b"*9999", b"9999\r\n"], "invalid multibulk length"),
    ([b"*1\r\n$" + b"9" * 40], "invalid bulk length"),
    ([b"PING " + b"x" * 70_000], "too big inline request"),
    ([b'GET "unterminated\r\n'], "unbalanced quotes"),
    ([b"SET k 'open\r\n"], "unbalanced quotes"),
    ([(b"*10\r\n" + (b"$100\r\n" + b"x" * 100 + b"\r\n") * 10)[:-1]], "over the size limit"),
])
def test_broken_or_oversized_frames(chunks: list[bytes], error: str) -> None:
    r = reader()
    with pytest.raises(FrameError, match=error):
        for chunk in chunks:
            r.feed(chunk)


def test_commands_before_a_broken_frame_are_kept() -> None:
    with pytest.raises(FrameError) as caught:
        reader().feed(b"*1\r\n$4\r\nPING\r\n*99999999\r\n")
    assert caught.value.commands == [[b"PING"]]


def test_inline_quoting() -> None:
    assert split_inline(b'SET k "a b\\n\\x41" \'c d\'  e\r') == [
        b"SET", b"k", b"a b\nA", b"c d", b"e"]
