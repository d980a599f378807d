"""status and conditions from what a step observed and decided."""

from __future__ import annotations

from test_operator_steps import all_settled, ring_of, st

from distcache_node.cluster.coordinator import CapacityCheck
from distcache_operator import status
from distcache_operator.steps import Action, Observed


def conds(s):
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def test_settled_cache_is_available_and_running(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    obs = Observed(ring, 3, all_settled(dc, ring))
    s = status.compute(dc, obs, Action("idle", "settled"),
                       {"cache-0": True, "cache-1": True, "cache-2": True}, {})
    assert s["phase"] == "Running" and s["replicas"] == 3 and s["readyReplicas"] == 3
    assert s["ringVersion"] == 5 and s["observedGeneration"] == 1
    assert s["selector"] == dc.selector
    assert conds(s) == {"Available": ("True", "Serving"), "Progressing": ("False", "Settled"),
                        "Degraded": ("False", "AsExpected"), "Migrating": ("False", "Idle")}
    assert s["members"][0] == {"id": "cache-0", "pod": "cache-0", "state": "active",
                               "ready": True, "keys": 100, "bytes": 10 * 1024 * 1024}
    assert s["migration"]["state"] == "Idle"


def test_draining_shows_migration_progress(make_dc) -> None:
    dc = make_dc(replicas=2)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    statuses = all_settled(dc, ring)
    statuses["cache-2"] = st(5, done=False, remaining=700)
    action = Action("wait", "ring v5 settling", pending=("cache-2: 700 keys to move",),
                    migration="Draining", members=("cache-2",))
    s = status.compute(dc, Observed(ring, 3, statuses), action,
                       {"cache-0": True, "cache-1": True, "cache-2": True}, {})
    assert s["phase"] == "Migrating"
    assert conds(s)["Migrating"] == ("True", "Draining")
    assert conds(s)["Progressing"] == ("True", "Settling")
    assert s["migration"]["keysRemaining"] == 700 and s["migration"]["members"] == ["cache-2"]
    assert s["migration"]["started"]
    # The start time is kept across steps of the same migration.
    again = status.compute(dc, Observed(ring, 3, statuses), action, {}, {
        "migration": {"state": "Draining", "started": "2020-01-01T00:00:00Z"}})
    assert again["migration"]["started"] == "2020-01-01T00:00:00Z"


def test_refusal_is_degraded_with_the_figures(make_dc) -> None:
    dc = make_dc(replicas=1)
    ring = ring_of(dc, {0: "active", 1: "active"})
    check = CapacityCheck(False, 300, 200, 100, "cannot hold the data: 100 MiB missing")
    action = Action("refuse", "scale down 2 -> 1 refused: cannot hold the data: 100 MiB "
                    "missing", check=check)
    s = status.compute(dc, Observed(ring, 2, all_settled(dc, ring)), action,
                       {"cache-0": True, "cache-1": True}, {})
    assert s["phase"] == "Degraded"
    assert conds(s)["Degraded"] == ("True", "ScaleDownRefused")
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert "100 MiB missing" in degraded["message"]
    assert conds(s)["Available"] == ("True", "Serving")


def test_a_member_down_is_degraded_but_available_below_the_replication(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    statuses = {**all_settled(dc, ring), "cache-1": None}
    s = status.compute(dc, Observed(ring, 3, statuses), Action("wait", "x"),
                       {"cache-0": True, "cache-1": False, "cache-2": True},
                       {"phase": "Running"})
    assert conds(s)["Degraded"][0] == "True" and "cache-1" in s["conditions"][2]["message"]
    assert conds(s)["Available"] == ("True", "Serving")


def test_a_new_cache_whose_pods_start_is_creating_not_degraded(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    statuses = {**all_settled(dc, ring), "cache-1": None, "cache-2": None}
    ready = {"cache-0": True, "cache-1": False, "cache-2": False}
    s = status.compute(dc, Observed(ring, 3, statuses), Action("idle", "x"), ready, {})
    assert s["phase"] == "Creating"
    assert conds(s)["Degraded"] == ("False", "Starting")
    assert "1 of 3 ready" in s["conditions"][2]["message"]
    # Once it has served, the same picture is a degradation.
    again = status.compute(dc, Observed(ring, 3, statuses), Action("idle", "x"), ready,
                           {"phase": "Running"})
    assert again["phase"] == "Degraded"
    assert conds(again)["Degraded"] == ("True", "MembersNotReady")


def test_transition_time_moves_only_when_the_status_flips(make_dc) -> None:
    prev = [{"type": "Available", "status": "True", "lastTransitionTime": "T0"}]
    same = status.condition("Available", True, "Serving", "", 1, prev, now="T1")
    flipped = status.condition("Available", False, "NoReadyPods", "", 1, prev, now="T1")
    assert same["lastTransitionTime"] == "T0" and flipped["lastTransitionTime"] == "T1"


def test_user_error_is_degraded_with_the_message(make_dc) -> None:
    dc = make_dc()
    s = status.compute(dc, Observed(None, None, {}), Action("invalid", "Secret x not found"),
                       {}, {}, error="Secret x not found")
    assert s["phase"] == "Degraded" and conds(s)["Degraded"][0] == "True"
    assert s["message"] == "Secret x not found"


def test_pods_that_cannot_run_are_degraded_with_what_to_check(make_dc) -> None:
    dc = make_dc(replicas=3, image="nope:1")
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    statuses = dict.fromkeys(("cache-0", "cache-1", "cache-2"))
    s = status.compute(dc, Observed(ring, 3, statuses), Action("wait", "x"),
                       {"cache-0": False}, {},
                       pod_problems={"cache-0": "ErrImageNeverPull: image not present"})
    assert s["phase"] == "Degraded"
    degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "PodsFailing"
    assert "cache-0: ErrImageNeverPull" in degraded["message"]
    assert "spec.image" in degraded["message"]


def test_pods_behind_on_a_ca_move_make_it_degraded_naming_them(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    problem = "moving to a new CA: ... not loaded after 300 s by cache-1: not answering"
    s = status.compute(dc, Observed(ring, 3, all_settled(dc, ring)), Action("idle", "settled"),
                       {"cache-0": True, "cache-1": True, "cache-2": True}, {},
                       tls_problem=problem)
    assert s["phase"] == "Degraded"
    assert conds(s)["Degraded"] == ("True", "TLSNotLoaded")
    assert conds(s)["Available"] == ("True", "Serving")  # it still serves
    assert "cache-1: not answering" in next(
        c["message"] for c in s["conditions"] if c["type"] == "Degraded")


def test_a_joining_member_that_is_not_ready_yet_is_a_join_not_a_fault(make_dc) -> None:
    # Seen on kind: every normal grow showed Degraded=True (MembersNotReady) for a step or
    # two, while the new member took its share (it is Ready only once it has).
    dc = make_dc(replicas=4)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "joining"})
    statuses = all_settled(dc, ring)
    action = Action("wait", "ring v5 settling", migration="Joining", members=("cache-3",))
    s = status.compute(dc, Observed(ring, 4, statuses), action,
                       {"cache-0": True, "cache-1": True, "cache-2": True, "cache-3": False},
                       {"phase": "Running"})
    assert conds(s)["Degraded"] == ("False", "AsExpected")
    assert conds(s)["Migrating"] == ("True", "Joining")
    # An active member that is not ready still is a fault.
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "active"})
    s = status.compute(dc, Observed(ring, 4, all_settled(dc, ring)), Action("idle", "x"),
                       {"cache-0": True, "cache-1": True, "cache-2": True, "cache-3": False},
                       {"phase": "Running"})
    assert conds(s)["Degraded"] == ("True", "MembersNotReady")


def test_a_whole_zone_down_leaves_the_cache_available_when_every_key_has_a_copy_elsewhere(
        make_dc) -> None:
    dc = make_dc(replicas=4)
    plain = ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "active"})
    zoned = plain.with_zones({"cache-0": "zone-a", "cache-1": "zone-a",
                              "cache-2": "zone-b", "cache-3": "zone-b"})
    ready = {"cache-0": False, "cache-1": False, "cache-2": True, "cache-3": True}
    for ring, available in ((zoned, ("True", "Serving")), (plain, ("False", "MembersDown"))):
        statuses = {**all_settled(dc, ring), "cache-0": None, "cache-1": None}
        s = status.compute(dc, Observed(ring, 4, statuses), Action("wait", "x"), ready,
                           {"phase": "Running"})
        assert conds(s)["Available"] == available
        degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "MembersNotReady"
        assert "cache-0, cache-1" in degraded["message"]
        assert ("(zone zone-a)" in degraded["message"]) == (ring is zoned)
