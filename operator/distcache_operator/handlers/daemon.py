"""The life of one DistCache in the operator: a loop run by its kopf daemon (kopf_main).

It steps, then waits for the delay the step returned, or less when woken (mem.poke: a spec
change, one of its pods changed). One task per DistCache does every step, so two steps of
the same DistCache never overlap and no lock is needed. It ends when the DistCache is gone
or when kopf stops it (mem.stop: the operator exits).

Its pods are watched from here, with a label selector the API server applies (defect 11):
kopf (>=1.37, as pinned) cannot put a labelSelector on its own watches (settings.watching.
label_selectors came only with kopf 1.45), so a kopf pod handler would receive every pod of
the cluster and drop all but ours in the operator. The watch is per namespace and per
DistCache, so it only ever carries the cache's own pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from distcache_operator import metrics
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.step import run_step
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache, DistCacheSpec

log = logging.getLogger("distcache.operator")
MIN_GAP = 1.0  # seconds from one step's end to a woken one: a burst of pod events is one step
WATCH_RETRY = 5.0  # seconds before a pod watch that failed is opened again


StepFn = Callable[[Api, str, str, str, DistCacheMemory], Awaitable[float | None]]


async def run(api: Api, namespace: str, name: str, uid: str, mem: DistCacheMemory,
              step: StepFn = run_step) -> None:
    """Steps the DistCache (`step`: handlers.step.run_step) until it is gone or stopped."""
    loop = asyncio.get_running_loop()
    selector = DistCache(name, namespace, uid, 0, spec=DistCacheSpec()).selector
    # kopf stops a daemon when the operator pauses (a peer of higher priority took over) and
    # starts it again on the same memo when it resumes: a stop is for the run it ended.
    mem.stopping = False
    watcher = asyncio.create_task(watch_pods(api, namespace, selector, mem),
                                  name=f"pods of {namespace}/{name}")
    try:
        while not mem.stopping:
            mem.wake.clear()  # a poke from here on steps again at once
            delay = await step(api, namespace, name, uid, mem)
            if delay is None:
                log.info("%s/%s: gone", namespace, name)
                metrics.forget(namespace, name)
                return
            ended = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mem.wake.wait(), delay)
            if not mem.stopping:
                await asyncio.sleep(max(0.0, min(ended + delay, ended + MIN_GAP) - loop.time()))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await mem.close()


async def watch_pods(api: Api, namespace: str, selector: str, mem: DistCacheMemory) -> None:
    """Pokes the daemon whenever one of the DistCache's pods changes (created, deleted,
    restarted, ready or not), so status follows within a second instead of at the next idle
    step. Runs until cancelled; a failed watch is opened again after WATCH_RETRY."""
    said = ""
    while True:
        try:
            async for _ in api.watch_pods(namespace, selector):
                mem.poke()
                said = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever broke it, the watch is opened again
            # Said once per cause (a watch refused by RBAC would fail every WATCH_RETRY);
            # meanwhile status still follows the pods at each step, only later.
            if str(exc) != said:
                said = str(exc)
                log.warning("%s: pod watch (%s) failed, opened again every %.0f s: %s",
                            namespace, selector, WATCH_RETRY, exc)
        await asyncio.sleep(WATCH_RETRY)
