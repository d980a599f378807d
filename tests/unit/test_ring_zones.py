"""Zone-aware placement: with members in two or more zones, the first min(R, zones) owners of
every key sit in different zones, so a whole zone going away leaves a copy of every key."""

from __future__ import annotations

from collections import Counter

import pytest

from distcache_node.cluster.ring import Member, Ring, RingDoc, RingError

KEYS = [f"key:{i}" for i in range(20_000)]
TWO_ZONES = {"a": "zone-a", "b": "zone-a", "c": "zone-b", "d": "zone-b"}


def zones_of(ring: Ring, zones: dict[str, str], key: str) -> set[str]:
    return {zones[m] for m in ring.owners(key)}


def test_two_copies_never_share_a_zone_when_there_are_two() -> None:
    ring = Ring(list(TWO_ZONES), replication=2, zones=TWO_ZONES)
    assert all(len(zones_of(ring, TWO_ZONES, k)) == 2 for k in KEYS)
    # The same members without zones put both copies in one zone for about a sixth of the
    # keys: what the zones are there to prevent (and what the test would catch).
    plain = Ring(list(TWO_ZONES), replication=2)
    shared = sum(1 for k in KEYS if len(zones_of(plain, TWO_ZONES, k)) == 1)
    assert shared / len(KEYS) > 0.1


def test_losing_a_whole_zone_leaves_a_copy_of_every_key() -> None:
    zones = {"a": "zone-a", "b": "zone-a", "c": "zone-a", "d": "zone-b", "e": "zone-b",
             "f": "zone-c"}
    ring = Ring(list(zones), replication=2, zones=zones)
    for lost in ("zone-a", "zone-b", "zone-c"):
        survivors = {m for m, z in zones.items() if z != lost}
        assert all(set(ring.owners(k)) & survivors for k in KEYS), lost


def test_three_copies_in_three_zones() -> None:
    zones = {f"m{i}": f"zone-{i % 3}" for i in range(7)}
    ring = Ring(list(zones), replication=3, zones=zones)
    assert all(len(zones_of(ring, zones, k)) == 3 for k in KEYS[:5000])


def test_more_copies_than_zones_fill_up_with_distinct_members() -> None:
    ring = Ring(list(TWO_ZONES), replication=3, zones=TWO_ZONES)
    for key in KEYS[:5000]:
        owners = ring.owners(key)
        assert len(set(owners)) == 3 and len(zones_of(ring, TWO_ZONES, key)) == 2


@pytest.mark.parametrize("zones", [None, {}, {m: "zone-a" for m in TWO_ZONES}])
def test_no_zones_or_one_zone_place_exactly_like_a_ring_without_zones(
        zones: dict[str, str] | None) -> None:
    plain = Ring(list(TWO_ZONES), replication=2)
    ring = Ring(list(TWO_ZONES), replication=2, zones=zones)
    assert all(ring.preference(k) == plain.preference(k) for k in KEYS[:5000])
    assert ring.same_placement(plain)


def test_a_member_without_a_zone_is_a_zone_of_its_own() -> None:
    zones = {"a": "zone-a", "b": "zone-a"}  # c and d have none
    ring = Ring(["a", "b", "c", "d"], replication=2, zones=zones)
    assert not any(set(ring.owners(k)) == {"a", "b"} for k in KEYS)


def test_primaries_stay_spread_and_balanced_zones_stay_balanced() -> None:
    ring = Ring(list(TWO_ZONES), replication=2, zones=TWO_ZONES)
    primaries = Counter(ring.primary(k) for k in KEYS)
    copies = Counter(m for k in KEYS for m in ring.owners(k))
    for member in TWO_ZONES:
        assert abs(primaries[member] - len(KEYS) / 4) / (len(KEYS) / 4) <= 0.15
        assert abs(copies[member] - len(KEYS) / 2) / (len(KEYS) / 2) <= 0.15


def test_a_zone_change_is_a_placement_change() -> None:
    moved = dict(TWO_ZONES, b="zone-b", c="zone-a")
    before = Ring(list(TWO_ZONES), replication=2, zones=TWO_ZONES)
    after = Ring(list(TWO_ZONES), replication=2, zones=moved)
    assert not before.same_placement(after)
    assert any(before.owners(k) != after.owners(k) for k in KEYS[:1000])


def test_ring_documents_carry_zones_and_leave_them_out_when_none() -> None:
    doc = RingDoc.from_json({"version": 3, "replication": 2, "members": [
        {"id": "a", "url": "http://a:1", "zone": "zone-a"},
        {"id": "b", "url": "http://b:1"}]})
    assert doc.zones() == {"a": "zone-a"}
    assert doc.to_json()["members"] == [
        {"id": "a", "url": "http://a:1", "state": "active", "zone": "zone-a"},
        {"id": "b", "url": "http://b:1", "state": "active"}]
    assert RingDoc.from_json(doc.to_json()) == doc
    moved = doc.with_zones({"b": "zone-b"})
    assert moved.version == 4 and moved.zones() == {"a": "zone-a", "b": "zone-b"}
    assert not moved.same_content(doc)
    assert moved.target().zones["b"] == "zone-b"
    assert moved.with_state(["a"], "leaving").member("a") == Member(
        "a", "http://a:1", "leaving", "zone-a")


@pytest.mark.parametrize("zone", [3, "", "-a", "a b", "x" * 64, "zone/a", None])
def test_a_bad_zone_is_refused_naming_the_member(zone: object) -> None:
    doc = {"version": 1, "members": [{"id": "a", "url": "http://a:1", "zone": zone}]}
    if zone == "":  # the same as no zone
        assert RingDoc.from_json(doc).zones() == {}
        return
    with pytest.raises(RingError, match="member 'a': 'zone' must be a label value"):
        RingDoc.from_json(doc)


def test_all_copies_on_says_whether_some_key_has_every_copy_on_the_members_given() -> None:
    aware = Ring(list(TWO_ZONES), replication=2, zones=TWO_ZONES)
    plain = Ring(list(TWO_ZONES), replication=2)
    assert not aware.all_copies_on(["a", "b"])  # a whole zone: every key has a copy left
    assert plain.all_copies_on(["a", "b"])
    assert aware.all_copies_on(["a", "c"]) and aware.all_copies_on(list(TWO_ZONES))
    assert not aware.all_copies_on(["a"]) and not aware.all_copies_on([])
    # Agrees with the keys themselves.
    assert plain.all_copies_on(["a", "b"]) == any(
        set(plain.owners(k)) <= {"a", "b"} for k in KEYS)
