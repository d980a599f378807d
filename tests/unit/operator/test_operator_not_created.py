"""A scale-up whose pods the StatefulSet cannot create (a ResourceQuota, an admission
webhook) says why within seconds: PodsFailing with the controller's FailedCreate message,
instead of "Migrating" with nothing wrong until JoinStuck's deadline (seen on kind)."""

from __future__ import annotations

import asyncio
from typing import Any

from fakes_k8s import FakeApi

from distcache_operator import status
from distcache_operator.handlers.membership import NOT_CREATED_GRACE, not_created
from distcache_operator.handlers.memory import DistCacheMemory

QUOTA = ('create Pod {pod} in StatefulSet cache failed error: pods "{pod}" is forbidden: '
         "exceeded quota: pods, requested: pods=1, used: pods=3, limited: pods=3")


async def test_pods_missing_past_the_grace_are_named_with_the_controllers_reason(
        make_dc: Any) -> None:
    dc, api, mem = make_dc(replicas=5), FakeApi(), DistCacheMemory()
    api.failed_create_messages = [QUOTA.format(pod="cache-4"), QUOTA.format(pod="cache-3")]
    present = {"cache-0": True, "cache-1": True, "cache-2": True}
    assert await not_created(api, dc, mem, 5, present) == {}  # just scaled: give it time
    assert ("list", "Event/FailedCreate") not in api.calls  # no extra read meanwhile
    now = asyncio.get_running_loop().time()
    mem.missing_since = dict.fromkeys(mem.missing_since, now - NOT_CREATED_GRACE - 1)
    late = await not_created(api, dc, mem, 5, present)
    assert sorted(late) == ["cache-3", "cache-4"]
    # Each pod with the controller's words about it (not the newest Event for both).
    assert 'pods "cache-3" is forbidden: exceeded quota' in late["cache-3"]
    assert 'pods "cache-4" is forbidden' in late["cache-4"]
    message = status.pods_failing_message(late)
    assert "exceeded quota" in message and "lower spec.replicas" in message
    assert "spec.image" not in message  # not the image's fault
    # Scaled back: nothing is missing any more.
    assert await not_created(api, dc, mem, 3, present) == {}
    assert mem.missing_since == {}
