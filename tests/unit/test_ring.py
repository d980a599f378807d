"""The ring: spread, movement on membership change, preference lists, ring documents."""

from __future__ import annotations

import bisect
from collections import Counter

import pytest

from distcache_node.cluster.ring import Member, Ring, RingDoc, RingError, hash64, segments

KEYS = [f"key:{i}" for i in range(100_000)]


def test_spread_within_ten_percent_of_mean_for_five_nodes() -> None:
    ring = Ring([f"node-{i}" for i in range(5)], replication=1)
    counts = Counter(ring.primary(k) for k in KEYS)
    mean = len(KEYS) / 5
    assert set(counts) == {f"node-{i}" for i in range(5)}
    for node, count in counts.items():
        assert abs(count - mean) / mean <= 0.10, (node, count)


def test_adding_one_of_ten_nodes_moves_about_one_eleventh() -> None:
    before = Ring([f"n{i}" for i in range(10)])
    after = Ring([f"n{i}" for i in range(11)])
    moved = [k for k in KEYS if before.primary(k) != after.primary(k)]
    assert 0.07 <= len(moved) / len(KEYS) <= 0.11
    # Every moved key moved to the new node: nothing shuffles between old nodes.
    assert all(after.primary(k) == "n10" for k in moved)


def test_owners_are_distinct_and_primary_first() -> None:
    ring = Ring(["a", "b", "c", "d"], replication=3)
    for key in KEYS[:2000]:
        owners = ring.owners(key)
        assert len(owners) == len(set(owners)) == 3
        assert owners[0] == ring.primary(key)
        assert ring.preference(key)[:3] == owners


def test_replication_larger_than_members_is_capped() -> None:
    assert sorted(Ring(["a", "b"], replication=3).owners("k")) == ["a", "b"]
    assert Ring([], replication=2).owners("k") == []


def test_placement_is_deterministic_across_instances() -> None:
    one, two = Ring(["x", "y", "z"], 2), Ring(["z", "y", "x"], 2)
    assert all(one.owners(k) == two.owners(k) for k in KEYS[:1000])


def test_ring_doc_roundtrip_and_transition_views() -> None:
    doc = RingDoc.from_json({"version": 3, "replication": 2, "members": [
        {"id": "a", "url": "http://a/", "state": "active"},
        {"id": "b", "url": "http://b", "state": "joining"},
        {"id": "c", "url": "http://c", "state": "leaving"},
    ]})
    assert doc.to_json()["members"][0]["url"] == "http://a"
    assert RingDoc.from_json(doc.to_json()) == doc
    assert doc.target().members == ("a", "b")
    assert doc.previous().members == ("a", "c")
    assert doc.in_transition
    bumped = doc.with_state(["b"], "active")
    assert bumped.version == 4 and bumped.member("b") == Member("b", "http://b", "active")


@pytest.mark.parametrize("bad", [
    [], {"members": []}, {"version": -1, "members": []}, {"version": 1, "members": {}},
    {"version": 1, "members": [{"id": "a"}]},
    {"version": 1, "members": [{"id": "a", "url": "u", "state": "gone"}]},
    {"version": 1, "members": [{"id": "a", "url": "u"}, {"id": "a", "url": "v"}]},
    {"version": 1, "replication": 0, "members": []},
    {"version": True, "members": []},
])
def test_bad_ring_documents_are_refused(bad: object) -> None:
    with pytest.raises(RingError):
        RingDoc.from_json(bad)


@pytest.mark.parametrize(("members", "replication", "named"), [
    ([{"id": "a", "url": "http://a:xx"}], 2, "member 'a'"),  # port not a number
    ([{"id": "a", "url": "http://a:0"}], 2, "member 'a'"),
    ([{"id": "a", "url": "http://a:65536"}], 2, "member 'a'"),
    ([{"id": "a", "url": "ftp://a:21"}], 2, "member 'a'"),
    ([{"id": "a", "url": "a:8080"}], 2, "member 'a'"),
    ([{"id": "a", "url": "http://:8080"}], 2, "member 'a'"),
    ([{"id": "a", "url": "http://a:8080/path"}], 2, "member 'a'"),
    ([{"id": "a", "url": "http://user:pw@a:8080"}], 2, "member 'a'"),
    ([{"id": "a", "url": "http://a b:8080"}], 2, "member 'a'"),
    ([{"id": "a", "url": 8080}], 2, "member 'a'"),
    ([{"id": "ok", "url": "http://a:1"}, {"id": "b", "url": "http://b:1", "state": "gone"}],
     2, "member 'b'"),
    ([{"id": "a", "url": "http://a:1"}, {"id": "b", "url": "http://a:1"}], 2, "member 'b'"),
    ([{"id": "a", "url": "http://a:1"}, {"id": "a", "url": "http://b:1"}], 2, "member 'a'"),
    ([{"id": "has space", "url": "http://a:1"}], 2, "members[0]"),
    ([{"id": "", "url": "http://a:1"}], 2, "members[0]"),
    ([{"id": "x" * 254, "url": "http://a:1"}], 2, "members[0]"),
    ([{"id": 7, "url": "http://a:1"}], 2, "members[0]"),
    (["a"], 2, "members[0]"),
    ([], 17, "'replication'"),
    ([], "2", "'replication'"),
])
def test_every_member_is_checked_and_named(
    members: list[object], replication: object, named: str,
) -> None:
    with pytest.raises(RingError) as info:
        RingDoc.from_json({"version": 2, "replication": replication, "members": members})
    assert named in str(info.value)


@pytest.mark.parametrize("version", [-1, 2**63, 1.5, "1", None, True])
def test_version_is_a_bounded_integer(version: object) -> None:
    with pytest.raises(RingError, match="'version'"):
        RingDoc.from_json({"version": version, "members": []})


def test_good_urls_are_kept_without_a_trailing_slash() -> None:
    doc = RingDoc.from_json({"version": 1, "replication": 16, "members": [
        {"id": "a", "url": "http://a:1/"}, {"id": "b", "url": "https://[::1]:65535"},
        {"id": "c", "url": "http://node-2.cache.svc.cluster.local"},  # scheme's port
    ]})
    assert [m.url for m in doc.members] == [
        "http://a:1", "https://[::1]:65535", "http://node-2.cache.svc.cluster.local"]


def test_same_content_ignores_member_order_but_not_state_or_replication() -> None:
    a, b = Member("a", "http://a:1"), Member("b", "http://b:1")
    doc = RingDoc(3, 2, (a, b))
    assert doc.same_content(RingDoc(3, 2, (b, a)))
    assert not doc.same_content(RingDoc(3, 1, (a, b)))
    assert not doc.same_content(RingDoc(3, 2, (a, Member("b", "http://b:1", "leaving"))))
    assert not doc.same_content(RingDoc(3, 2, (a,)))


def test_segments_place_every_key_as_both_rings_do() -> None:
    a, b = Ring(["n1", "n2", "n3"], 2), Ring(["n1", "n2", "n4", "n5"], 2)
    cuts, owners = segments(a, b)
    for i in range(20_000):
        key = f"seg:{i}"
        pair = owners[bisect.bisect(cuts, hash64(key)) % len(cuts)]
        assert pair == (tuple(a.owners(key)), tuple(b.owners(key)))
