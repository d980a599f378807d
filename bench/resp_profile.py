"""Where a DistCache node's time goes under RESP GET load: py-spy (a sampling profiler, from
PyPI into .venv) attached to the node for a few seconds of an uncounted run, its stacks
folded into self and inclusive shares. Sampling, not cProfile: cProfile's per-call hook
costs more than a whole GET does here and would move the shares it measures.

py-spy sees Python frames only: time in C (uvloop's socket calls, hiredis' parser, bytes
joins) counts to the Python function that called it. --nonblocking: the node is not
stopped to be sampled (a stack may now and then be torn; that is noise, not bias)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import RESULTS, ROOT, Pinning, log

SECONDS = 5
RATE = 200  # samples a second


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, load: Callable[[], Any], pinning: Pinning, name: str) -> dict[str, Any]:
    """py-spy on `pid` while `load()` runs; the folded stacks saved, a summary returned."""
    binary = py_spy()
    if binary is None:
        log("  no py-spy (`.venv/bin/pip install py-spy`): profile skipped")
        return {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"profile-resp-{name}.folded"
    argv = [binary, "record", "--pid", str(pid), "--duration", str(SECONDS), "--rate",
            str(RATE), "--nonblocking", "--format", "raw", "--output", str(raw)]
    spy: list[subprocess.CompletedProcess[str]] = []

    def run() -> None:
        spy.append(subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60,
                                  preexec_fn=pinning.preexec(pinning.client)))

    thread = threading.Thread(target=run)
    thread.start()
    load()
    thread.join()
    if not raw.exists():
        log(f"  py-spy failed: {spy[0].stderr[-500:] if spy else '?'}")
        return {}
    summary = summarize(raw.read_text())
    text = render(summary)
    (RESULTS / f"profile-resp-{name}.txt").write_text(text)
    log(f"  profile written to {(RESULTS / f'profile-resp-{name}.txt').relative_to(ROOT)}")
    return summary


def frame_name(frame: str) -> str:
    """py-spy's 'function (path/to/file.py:line)' as 'file.py:function'."""
    func, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1] if where else "?"
    return f"{file}:{func}"


def summarize(folded: str, top: int = 15) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / total, 1)) for f, c in counter.most_common(top)]

    return {"samples": total, "seconds": SECONDS, "rate": RATE, "self": share(self_time),
            "inclusive": share(inclusive)}


def render(summary: dict[str, Any]) -> str:
    lines = [f"py-spy, {summary['samples']} samples of the busy main thread "
             f"({summary['rate']}/s for {summary['seconds']} s)", "", "self time:"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["self"]]
    lines += ["", "inclusive (the function and what it calls):"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["inclusive"]]
    return "\n".join(lines) + "\n"
