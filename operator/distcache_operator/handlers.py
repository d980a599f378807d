"""kopf handlers of the DistCache operator: none yet but a start-up log line (a later stage)."""

from __future__ import annotations

import logging
from typing import Any

import kopf


@kopf.on.startup()
def _started(logger: logging.Logger, **_: Any) -> None:
    logger.info("distcache-operator started (no resource handlers yet)")
