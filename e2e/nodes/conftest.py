"""The nodes tier: node and zone faults on a kind cluster of a control plane and three
workers in two zones (`NODES=4 make kind-up`; scripts/tiers.py nodes brings its own up).
Marked `nodes`, not `e2e`: the one-node kind tier does not collect these."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.nodes)
