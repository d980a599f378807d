"""handlers.owned.ensure_monitoring's decisions against a scripted stand-in for the API
layer (the real API server path is e2e/test_operator_monitoring.py on kind; a 403 from RBAC
that predates ServiceMonitors cannot be produced there without breaking the shared
operator's RBAC)."""

from __future__ import annotations

from typing import Any

import pytest

from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.owned import ensure_monitoring
from distcache_operator.kubeapi import ApiError


class FakeApi:
    def __init__(self, served: bool, fail: int = 0) -> None:
        self._served, self.fail = served, fail
        self.calls: list[tuple[str, str]] = []

    async def served(self, group_version: str, resource: str) -> bool:
        return self._served

    async def _maybe_fail(self) -> None:
        if self.fail:
            raise ApiError(self.fail, "Forbidden", "servicemonitors is forbidden")

    async def apply(self, obj: dict[str, Any]) -> None:
        self.calls.append(("apply", obj["kind"]))
        await self._maybe_fail()

    async def delete(self, obj: dict[str, Any]) -> None:
        self.calls.append(("delete", obj["kind"]))
        await self._maybe_fail()

    async def event(self, dc: Any, reason: str, message: str, warning: bool = False) -> None:
        self.calls.append(("event", reason))


async def _run(api: FakeApi, dc: Any, c: DistCacheMemory | None = None) -> DistCacheMemory:
    c = c or DistCacheMemory()
    notes = await ensure_monitoring(api, dc, c)  # type: ignore[arg-type]
    assert notes == c.notes  # returned, and kept for the steps that do not apply
    return c


async def test_enabled_and_served_applies(make_dc) -> None:
    api = FakeApi(served=True)
    c = await _run(api, make_dc(metrics={"serviceMonitor": {"enabled": True}}))
    assert api.calls == [("apply", "ServiceMonitor")] and c.notes == []


async def test_enabled_not_served_is_an_event_once_and_a_note(make_dc) -> None:
    api = FakeApi(served=False)
    dc = make_dc(metrics={"serviceMonitor": {"enabled": True}})
    c = await _run(api, dc)
    await _run(api, dc, c)
    assert api.calls == [("event", "ServiceMonitorUnavailable")]
    assert c.notes and "monitoring.coreos.com/v1" in c.notes[0]


async def test_off_deletes_only_where_served(make_dc) -> None:
    api = FakeApi(served=True)
    await _run(api, make_dc())
    assert api.calls == [("delete", "ServiceMonitor")]
    api = FakeApi(served=False)
    await _run(api, make_dc())
    assert api.calls == []


async def test_forbidden_is_a_note_not_a_retry_loop(make_dc) -> None:
    api = FakeApi(served=True, fail=403)
    c = await _run(api, make_dc(metrics={"serviceMonitor": {"enabled": True}}))
    assert ("event", "ServiceMonitorUnavailable") in api.calls and "RBAC" in c.notes[0]
    off = await _run(FakeApi(served=True, fail=403), make_dc())
    assert off.notes == []  # nothing asked for: nothing to say
    with pytest.raises(ApiError):
        await _run(FakeApi(served=True, fail=500), make_dc())
