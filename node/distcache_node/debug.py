"""Profiling endpoints, the Python answer to Go's pprof: a CPU profile and a heap snapshot."""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import tracemalloc

from aiohttp import web

from distcache_node.errors import Conflict, bad_request

MAX_SECONDS = 60.0
_profile_lock = asyncio.Lock()
_heap_requests = 0  # /debug/heap requests in flight
_heap_started_tracing = False


def _seconds(request: web.Request, default: float) -> float:
    raw = request.query.get("seconds", str(default))
    try:
        seconds = float(raw)
    except ValueError:
        raise bad_request(f"'seconds' must be a number, got {raw!r}", "invalid_seconds") from None
    if not 0 < seconds <= MAX_SECONDS:
        raise bad_request(f"'seconds' must be > 0 and <= {MAX_SECONDS:.0f}", "invalid_seconds")
    return seconds


def _limit(request: web.Request) -> int:
    raw = request.query.get("top", "40")
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 1000:  # not '²'
        raise bad_request("'top' must be an integer from 1 to 1000", "invalid_top")
    return int(raw)


async def handle_profile(request: web.Request) -> web.Response:
    """GET /debug/profile?seconds=N&top=K: cProfile of the event loop thread for N seconds.
    Every handler runs on that thread, so this is the whole node's CPU time."""
    seconds, top = _seconds(request, 5.0), _limit(request)
    if _profile_lock.locked():
        raise Conflict("profile_in_progress", "a profile is already running; retry later")
    async with _profile_lock:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            await asyncio.sleep(seconds)
        finally:
            profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return web.Response(text=out.getvalue())


async def handle_heap(request: web.Request) -> web.Response:
    """GET /debug/heap?seconds=N&top=K: allocations by source line. Tracing costs memory and
    time, so it runs only for the request: started, N seconds of traffic, snapshot, stopped."""
    global _heap_requests, _heap_started_tracing
    seconds, top = _seconds(request, 1.0), _limit(request)
    # Overlapping requests share one tracing session: the last one out stops it (if a heap
    # request started it), never one still sleeping under another.
    if _heap_requests == 0:
        _heap_started_tracing = not tracemalloc.is_tracing()
        if _heap_started_tracing:
            tracemalloc.start(10)
    _heap_requests += 1
    try:
        await asyncio.sleep(seconds)
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        _heap_requests -= 1
        if _heap_requests == 0 and _heap_started_tracing:
            tracemalloc.stop()
    lines = [f"traced: current={current} peak={peak} bytes (allocations since tracing began)"]
    lines += [str(stat) for stat in snapshot.statistics("lineno")[:top]]
    return web.Response(text="\n".join(lines) + "\n")
