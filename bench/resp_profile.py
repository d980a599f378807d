"""Where a DistCache node's time goes under RESP GET load: py-spy (a sampling profiler, from
PyPI into .venv) attached to the node for a few seconds of an uncounted run, its stacks
folded into self and inclusive shares. Sampling, not cProfile: cProfile's per-call hook
costs more than a whole GET does here and would move the shares it measures.

py-spy sees Python frames only: time in C (uvloop's socket calls, hiredis' parser, bytes
joins) counts to the Python function that called it. The node is paused for each sample
(py-spy's default): --nonblocking reads the stacks of a running process and tears them
(a function shown under one it never calls), which makes inclusive shares wrong."""

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
            str(RATE), "--format", "raw", "--output", str(raw)]
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


def frame_name(frame: str, line: bool = False) -> str:
    """py-spy's 'function (path/to/file.py:line)' as 'file.py:function' (with `line`:
    'file.py:line function', where a C call such as a socket write shows)."""
    func, _, where = frame.partition(" (")
    path, _, number = where.rstrip(")").rpartition(":")
    file = path.rsplit("/", 1)[-1] if where else "?"
    return f"{file}:{number} {func}" if line else f"{file}:{func}"


def summarize(folded: str, top: int = 15) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not raw_frames:
            continue
        frames = [frame_name(f) for f in raw_frames]
        total += count
        by_line[frame_name(raw_frames[-1], line=True)] += count
        self_time[frames[-1]] += count
        by_module[frames[-1].split(":", 1)[0]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / total, 1)) for f, c in counter.most_common(top)]

    return {"samples": total, "seconds": SECONDS, "rate": RATE, "self": share(self_time),
            "modules": share(by_module), "lines": share(by_line),
            "inclusive": share(inclusive)}


def render(summary: dict[str, Any]) -> str:
    lines = [f"py-spy, {summary['samples']} samples of the busy main thread "
             f"({summary['rate']}/s for {summary['seconds']} s)", "", "self time:"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["self"]]
    lines += ["", "self time by module:"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["modules"]]
    lines += ["", "self time by line:"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["lines"]]
    lines += ["", "inclusive (the function and what it calls):"]
    lines += [f"  {pct:5.1f}%  {name}" for name, pct in summary["inclusive"]]
    return "\n".join(lines) + "\n"
