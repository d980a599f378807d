"""status of a DistCache from what a step observed and decided. Pure.

Conditions (each with reason and message):
  Available    every ring member answers and the ready pods hold every key (>= 1 ready)
  Progressing  a scale or a ring change is in flight
  Degraded     something a user should look at: a refused scale-down, a member or pod down,
               a spec the operator cannot serve, pods that have not loaded a step of a move
               to a new CA in time
  Migrating    keys are moving (members joining or leaving)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from distcache_operator.model import DistCache
from distcache_operator.steps import Action, Observed, refusal_reason

CONDITION_TYPES = ("Available", "Progressing", "Degraded", "Migrating")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int,
              previous: Sequence[Mapping[str, Any]] = (), now: str | None = None
              ) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == ctype), None)
    since = (before.get("lastTransitionTime") if before and before.get("status") == status
             else None) or now or now_iso()
    return {"type": ctype, "status": status, "reason": reason, "message": message[:1000],
            "lastTransitionTime": since, "observedGeneration": generation}


def members_status(dc: DistCache, obs: Observed, pods_ready: Mapping[str, bool]
                   ) -> list[dict[str, Any]]:
    out = []
    for m in obs.ring.members if obs.ring else ():
        s = obs.statuses.get(m.id)
        out.append({"id": m.id, "pod": m.id, "state": m.state,
                    "ready": bool(pods_ready.get(m.id)),
                    "keys": int(s["keys"]) if s else 0,
                    "bytes": int(s["bytes_used"]) if s else 0,
                    **({"zone": m.zone} if m.zone else {})})
    return out


def pods_failing_message(problems: Mapping[str, str]) -> str:
    """The PodsFailing text: each pod and why, with where to look. A pod the StatefulSet
    could not create (a quota, an admission webhook) is not the image's fault."""
    text = "; ".join(f"{pod}: {why}" for pod, why in sorted(problems.items()))
    hints = []
    if any(not why.startswith("not created") for why in problems.values()):
        hints.append("check spec.image, spec.imagePullPolicy and the pod's logs")
    if any(why.startswith("not created") for why in problems.values()):
        hints.append("lower spec.replicas to take the scale-up back, or lift what refuses "
                     "the pods")
    return f"{text} ({'; '.join(hints)})"


def compute(dc: DistCache, obs: Observed, action: Action, pods_ready: Mapping[str, bool],
            previous: Mapping[str, Any], error: str | None = None,
            pod_problems: Mapping[str, str] | None = None,
            notes: Sequence[str] = (), tls_problem: str | None = None,
            tls_invalid: str | None = None, member_lost: str | None = None
            ) -> dict[str, Any]:
    """The whole status (merge-patched over the old one). `error`: a problem the user must
    fix (missing Secret, bad spec) found before or while acting; `pod_problems`: pods whose
    container cannot run (bad image, crash loop), by name; `notes`: what is not there but
    does not degrade the cache (a ServiceMonitor whose API is not served), appended to the
    Available message; `tls_problem`: pods that have not loaded a step of a move to a new CA
    within the operator's patience (the move waits for them); `tls_invalid`: a CA or
    certificate the operator cannot use (the pods go on with what they mount);
    `member_lost`: a member dropped undrained, said until the survivors have re-replicated
    its keys (handlers.membership.member_lost): before everything but `error`, since some
    keys have fewer copies than asked for while it lasts."""
    gen = dc.generation
    prev_conditions = previous.get("conditions") or []
    ring = obs.ring
    members = members_status(dc, obs, pods_ready)
    for m in members:  # kept in status so a restarted operator goes on counting
        if (lost_at := action.unreachable_since.get(m["id"])) is not None:
            m["unreachableSince"] = dt.datetime.fromtimestamp(lost_at, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
    ready = sum(1 for p in pods_ready.values() if p)
    # A joining member is not Ready until it has taken its share: that is the join, not a
    # fault (one held up past the deadline is JoinStuck, from the membership machine).
    settled_members = [m for m in members if m["state"] != "joining"]
    unreachable = [m["id"] for m in settled_members if obs.statuses.get(m["id"]) is None]
    not_ready = [m["id"] for m in settled_members if not m["ready"]]
    migrating = action.migration != "Idle"
    progressing = action.kind not in ("idle", "refuse") or migrating
    # Never served yet: the phase says Creating until every member is first ready.
    creating = previous.get("phase") in (None, "Pending", "Creating")

    if error:
        degraded = (True, "InvalidSpec" if action.kind == "invalid" else "Error", error)
    elif member_lost or action.kind == "drop_dead":
        degraded = (True, "MemberLost", member_lost or action.reason)
    elif pod_problems:
        degraded = (True, "PodsFailing", pods_failing_message(pod_problems))
    elif action.kind == "refuse":
        degraded = (True, refusal_reason(action), action.reason)
    elif action.degraded:
        degraded = (True, *action.degraded)
    elif tls_invalid:
        degraded = (True, "TLSInvalid", tls_invalid)
    elif tls_problem:
        degraded = (True, "TLSNotLoaded", tls_problem)
    elif (unreachable or not_ready) and creating:
        # A new cache whose pods are still starting is not degraded (as a new Deployment is
        # not): Available=False says it does not serve yet.
        degraded = (False, "Starting", f"pods starting: {len(members) - len(not_ready)} of "
                    f"{len(members)} ready")
    elif unreachable or not_ready:
        down = sorted(set(unreachable) | set(not_ready))
        zones = {m["zone"] for m in members if m["id"] in down and m.get("zone")}
        where = f" (zone {', '.join(sorted(zones))})" if zones else ""
        degraded = (True, "MembersNotReady", f"not ready: {', '.join(down)}{where}")
    else:
        degraded = (False, "AsExpected", "every member answers and is ready")

    if ring is None or not ring.members:
        available = (False, "NoMembers", "the ring has no members yet")
    elif ready == 0:
        available = (False, "NoReadyPods", "no cache pod is ready")
    elif len(unreachable) >= ring.replication and ring.target().all_copies_on(unreachable):
        available = (False, "MembersDown", f"{len(unreachable)} members unreachable at "
                     f"replication {ring.replication}: some keys have every copy on them")
    else:
        available = (True, "Serving", "; ".join([f"{ready} of {len(ring.members)} pods ready",
                                                  *notes]))

    if migrating:
        pend = "; ".join(action.pending) if action.pending else action.reason
        mig = (True, action.migration, f"{', '.join(action.members)}: {pend}")
    else:
        mig = (False, "Idle", "no keys moving")
    prog = (True, _reason(action), action.reason) if progressing else \
        (False, "Settled", f"{len(members)} member(s), ring v{ring.version if ring else 0}")

    now = now_iso()
    conditions = [
        condition("Available", available[0], available[1], available[2], gen, prev_conditions,
                  now),
        condition("Progressing", prog[0], prog[1], prog[2], gen, prev_conditions, now),
        condition("Degraded", degraded[0], degraded[1], degraded[2], gen, prev_conditions, now),
        condition("Migrating", mig[0], mig[1], mig[2], gen, prev_conditions, now),
    ]
    if error or pod_problems or tls_problem or tls_invalid or member_lost \
            or action.kind in ("refuse", "drop_dead"):
        phase = "Degraded"
    elif migrating:
        phase = "Migrating"
    elif progressing:
        phase = "Scaling" if ring is not None else "Pending"
    elif degraded[0]:
        phase = "Degraded"
    elif creating and (unreachable or not_ready):
        phase = "Creating"
    else:
        phase = "Running"
    if action.degraded:  # a join held up past its deadline (steps._stuck)
        phase = "Degraded"

    prev_mig = previous.get("migration") or {}
    keys_moved = sum(int((obs.statuses.get(m) or {}).get("migration", {}).get("keys_moved", 0))
                     for m in action.members) if migrating else 0
    keys_remaining = sum(
        int((obs.statuses.get(m["id"]) or {}).get("migration", {}).get("keys_remaining", 0))
        for m in members) if migrating else 0
    migration: dict[str, Any] = {
        "state": action.migration,
        "members": list(action.members),
        "keysMoved": keys_moved,
        "keysRemaining": keys_remaining,
        "pending": list(action.pending)[:20],
        "started": (prev_mig.get("started") if prev_mig.get("state") == action.migration
                    and prev_mig.get("started") else now) if migrating else None,
        "lastError": error or (action.reason if action.kind in ("refuse", "drop_dead")
                               else action.degraded[1] if action.degraded
                               else prev_mig.get("lastError")),
    }
    return {
        "phase": phase,
        "replicas": len(members) if ring else 0,
        "readyReplicas": ready,
        "selector": dc.selector,
        "ringVersion": ring.version if ring else 0,
        "observedGeneration": gen,
        "members": members,
        "migration": migration,
        "conditions": conditions,
        "message": error or action.reason,
        # Its own field, not only the Degraded condition: a problem that takes Degraded
        # meanwhile (a Secret gone, an invalid spec) must not erase the under-replication.
        "memberLost": member_lost or (action.reason if action.kind == "drop_dead" else ""),
    }


def _reason(action: Action) -> str:
    return {
        "create_ring": "Creating", "scale": "ScalingStatefulSet", "publish": "RingChange",
        "remove": "RemovingMembers", "drop_dead": "MemberLost", "wait": "Settling",
    }.get(action.kind, action.kind.capitalize())
