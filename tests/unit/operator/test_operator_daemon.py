"""handlers.daemon.run, the loop of a DistCache's kopf daemon: it steps, sleeps the delay
the step returned unless woken (a change to one of its pods, seen by its own pod watch; a
spec change), and ends when the DistCache is gone or kopf stops it (its session closed)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from fakes_k8s import FakeApi

from distcache_operator.handlers import daemon
from distcache_operator.handlers.memory import DistCacheMemory


class Steps:
    """Records each step; returns the delays it is given, then None (the DistCache gone)."""

    def __init__(self, *delays: float | None) -> None:
        self.delays = list(delays)
        self.at: list[float] = []
        self.forced: list[bool] = []

    async def __call__(self, api: object, namespace: str, name: str, uid: str,
                       mem: DistCacheMemory) -> float | None:
        self.at.append(time.monotonic())
        self.forced.append(mem.force_apply)
        mem.force_apply = False  # as apply_owned does
        return self.delays.pop(0) if self.delays else None


@pytest.fixture(autouse=True)
def quick_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "MIN_GAP", 0.05)


async def test_a_pod_change_steps_at_once_instead_of_after_the_delay() -> None:
    api, mem, steps = FakeApi(), DistCacheMemory(), Steps(60.0, 0.0)
    task = asyncio.create_task(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                          steps))
    await asyncio.sleep(0.1)
    assert len(steps.at) == 1  # then asleep for 60 s
    await api.pod_changes.put("MODIFIED")  # the pod watch (server-filtered) sees a change
    await asyncio.wait_for(task, 2.0)  # stepped twice more: the third says "gone"
    assert len(steps.at) == 3
    assert steps.at[1] - steps.at[0] < 1.0


async def test_a_spec_change_steps_at_once_and_applies_the_owned_objects() -> None:
    api, mem, steps = FakeApi(), DistCacheMemory(), Steps(60.0)
    task = asyncio.create_task(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                          steps))
    await asyncio.sleep(0.1)
    mem.poke(force_apply=True)  # kopf_main.spec_changed
    await asyncio.wait_for(task, 2.0)
    assert steps.forced == [True, True]  # the first step of a memory applies too


async def test_stopped_while_asleep_ends_at_once_and_closes_the_session() -> None:
    api, mem, steps = FakeApi(), DistCacheMemory(), Steps(60.0, 60.0)
    mem.session = aiohttp.ClientSession()
    task = asyncio.create_task(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                          steps))
    await asyncio.sleep(0.1)
    mem.stop()  # kopf's `stopped` flag (operator exiting) or the DELETED event
    await asyncio.wait_for(task, 1.0)
    assert len(steps.at) == 1 and mem.session is None


async def test_a_failed_pod_watch_is_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "WATCH_RETRY", 0.01)
    opened: list[int] = []

    class Flaky(FakeApi):
        async def watch_pods(self, namespace: str, selector: str):  # type: ignore[override]
            opened.append(1)
            if len(opened) < 3:
                raise aiohttp.ClientError("connection reset")
            yield "ADDED"
            await asyncio.sleep(60)

    api, mem, steps = Flaky(), DistCacheMemory(), Steps(60.0, 0.0)
    task = asyncio.create_task(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                          steps))
    await asyncio.wait_for(task, 2.0)
    assert len(opened) == 3 and len(steps.at) == 3


async def test_a_daemon_started_again_after_a_pause_steps_again() -> None:
    """kopf stops the daemons while the operator is paused (a peer of higher priority runs)
    and starts them again on the same memo: the stop must not outlive the run it ended."""
    api, mem = FakeApi(), DistCacheMemory()
    first = Steps(60.0)
    task = asyncio.create_task(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                          first))
    await asyncio.sleep(0.1)
    mem.stop()
    await asyncio.wait_for(task, 1.0)
    again = Steps(0.0)
    await asyncio.wait_for(daemon.run(api, "ns", "cache", "uid-1", mem,  # type: ignore[arg-type]
                                      again), 1.0)
    assert len(again.at) == 2  # stepped (then found it gone)
