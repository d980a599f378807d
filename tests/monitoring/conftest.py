"""The monitoring tier: the generator lives in monitoring/ at the repository root."""

from __future__ import annotations

import sys

from support import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
