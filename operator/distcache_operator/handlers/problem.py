"""A condition the user must fix (a missing Secret, an unusable ring or CA, a bad spec):
raised by a concern, turned by the step into a Degraded condition and one Warning Event
(report.write_problem), never a traceback or a retry loop."""

from __future__ import annotations


class Problem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
