"""CPU time and memory of a process and its descendants, read from Linux ``/proc``.

A server may be one process (``wshub serve``) or a supervisor with worker children
(``--workers N``, or a Node server with helper threads). Its cost is the sum over the whole
tree: CPU as ``utime + stime`` from ``/proc/PID/stat`` (threads included), memory as ``VmRSS``.
A child that exits during a measurement takes its CPU time with it; servers under a benchmark
do not restart their workers, so that does not happen in practice.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "process_tree", "rss_bytes"]

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    raw = (_PROC / str(pid) / "stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it (empty if ``pid`` is gone)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry.name))
    if not (_PROC / str(pid)).exists():
        return []
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User plus system CPU seconds used so far by ``pid`` (and its descendants)."""
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICK


def rss_bytes(pid: int, *, tree: bool = True) -> int:
    """Resident memory of ``pid`` (and its descendants), in bytes."""
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        try:
            status = (_PROC / str(member) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total
