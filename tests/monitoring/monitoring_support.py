"""Helpers of the monitoring tier (not in conftest: see tests/support.py)."""

from __future__ import annotations

import shutil

import pytest


def need(binary: str) -> str:
    """A binary of Debian's `prometheus` package (`make test` installs it through
    scripts/ensure-debs.sh promtool=prometheus); the test is skipped, saying so, without it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install prometheus; `make test` "
                    "installs it)")
    return path
