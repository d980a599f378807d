"""How migration cuts and frames its batches: bounded in bytes as well as in entries (large
values must fit a receiver's body limit), and sent with the values outside JSON."""

from __future__ import annotations

import orjson
import pytest

from distcache_node.cluster.migration import ENTRY_OVERHEAD, batches
from distcache_node.cluster.peers import WireEntry, decode_batch, encode_batch


def _entry(i: int, size: int) -> WireEntry:
    return (f"k{i:04d}", orjson.dumps("v" * size), None, 1000 + i)


def test_batches_stay_under_the_byte_bound_and_keep_every_entry_in_order() -> None:
    entries = [_entry(i, 16 * 1024) for i in range(100)]
    weight = len(entries[0][0]) + len(entries[0][1]) + ENTRY_OVERHEAD
    cut = list(batches(entries, 2000, 10 * weight))
    assert [len(b) for b in cut] == [10] * 10
    assert [e for b in cut for e in b] == entries


def test_batches_stay_under_the_entry_bound_for_small_values() -> None:
    entries = [_entry(i, 1) for i in range(45)]
    assert [len(b) for b in batches(entries, 20, 1 << 30)] == [20, 20, 5]


def test_an_entry_larger_than_the_byte_bound_goes_alone() -> None:
    entries = [_entry(0, 10), _entry(1, 5000), _entry(2, 10)]
    assert [[e[0] for e in b] for b in batches(entries, 2000, 1000)] == [
        ["k0000"], ["k0001"], ["k0002"]]


def test_a_batch_round_trips_values_ttls_versions_and_deletes() -> None:
    entries: list[WireEntry] = [
        ("a", b'"x"', None, 1), ("b\n\"", b'{"n":[1,2]}', 30.5, 2), ("c", b"7", 3.0, 3),
        ("empty", b'""', None, 4)]
    deletes = [("gone", 9)]
    assert decode_batch(encode_batch(entries, deletes)) == (entries, deletes)


def test_entries_that_expired_in_flight_are_skipped() -> None:
    body = encode_batch([("a", b"1", -1.0, 1), ("b", b"2", None, 2)])
    assert decode_batch(body) == ([("b", b"2", None, 2)], [])


@pytest.mark.parametrize(("body", "message"), [
    (b'{"entries":[]}', "no head line"),
    (b'[1]\n', "head must be a JSON object"),
    (b'{"entries":[["a",5,null,1]]}\n"x"', "run past the end"),
    (b'{"entries":[["a",1,null,1]]}\n"x"', "not JSON|unexpected|invalid|Input"),
    (b'{"entries":[["a",3,null,1]]}\n"x"   ', "bytes after the last value"),
    (b'{"entries":[["a",-1,null,1]]}\n', "non-negative"),
    (b'{"entries":[["a",3,"soon",1]]}\n"x"', "ttl must be a number"),
    (b'{"entries":[["a",3,null,-5]]}\n"x"', "version must be"),
    (b'{"entries":[["a",3,null]]}\n"x"', "must be \\[key, length"),
    (b'{"entries":[], "deletes":[["a",true]]}\n', "version must be"),
])
def test_a_malformed_batch_is_refused_whole(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_batch(body)
