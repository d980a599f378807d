from __future__ import annotations

from typing import Any

import pytest

from distcache_operator.model import DistCache


def body(spec: dict[str, Any] | None = None, name: str = "cache", namespace: str = "ns",
         generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "distcache.io/v1alpha1", "kind": "DistCache",
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1",
                         "generation": generation},
            "spec": spec or {}}


@pytest.fixture
def make_dc():
    def make(**spec: Any) -> DistCache:
        return DistCache.from_body(body(spec))

    return make
