"""Measurements: latency percentiles from Kafka timestamps, and RSS/CPU of a process tree."""

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ascending values, by linear interpolation."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def first_latencies(
    created_ms: Mapping[str, int], alerts: Iterable[tuple[str, int]]
) -> list[tuple[int, int]]:
    """(send time ms, latency ms) of each timed input's first alert (duplicates ignored)."""
    first: dict[str, int] = {}
    for transaction_id, timestamp_ms in alerts:
        if transaction_id in created_ms:
            first[transaction_id] = min(timestamp_ms, first.get(transaction_id, timestamp_ms))
    return sorted((created_ms[t], first[t] - created_ms[t]) for t in first)


def latency_summary(timed: int, first: Iterable[tuple[int, int]]) -> dict[str, object]:
    """p50/p95/p99/p99.9 (ms) from each input's CreateTime to its first alert's timestamp.

    ``timed`` is how many timed inputs were sent; ``first`` is :func:`first_latencies` of
    their alerts. Inputs without an alert are counted as ``missing``: percentiles over the
    delivered alerts only would flatter a pipeline that fell behind.
    """
    latencies = sorted(float(latency) for _, latency in first)
    summary: dict[str, object] = {
        "timed": timed,
        "delivered": len(latencies),
        "missing": timed - len(latencies),
    }
    if latencies:
        summary |= {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "p999": round(percentile(latencies, 99.9), 1),
            "max": round(latencies[-1], 1),
        }
    else:
        summary |= dict.fromkeys(("p50", "p95", "p99", "p999", "max"))
    return summary


# --- RSS and CPU of a process tree ----------------------------------------------------------


def _children(pid: int) -> list[int]:
    children: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text().split()
            children += [int(c) for c in text]
    except OSError:
        return []
    return children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_tree(root: int, exclude: tuple[str, ...] = ()) -> list[int]:
    """``root`` and its descendants, skipping subtrees whose command line has an ``exclude``."""
    pids, pending = [], [root]
    while pending:
        pid = pending.pop()
        if pid != root and any(pattern in _cmdline(pid) for pattern in exclude):
            continue
        pids.append(pid)
        pending += _children(pid)
    return pids


def _rss_and_cpu(pid: int) -> tuple[int, float]:
    """Resident bytes and user+system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0, 0.0
    # After the command name: state is field 3, utime 14, stime 15, rss 24 (1-based).
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return int(fields[21]) * _PAGE_BYTES, cpu


@dataclass
class ResourceUsage:
    """Peak RSS and CPU time of a process tree over one measured phase."""

    peak_rss_mb: float
    cpu_seconds: float
    wall_seconds: float

    @property
    def avg_cores(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "wall_seconds": round(self.wall_seconds, 2),
            "avg_cores": round(self.avg_cores, 2),
        }


class ResourceSampler:
    """Samples a process tree every ``interval_s`` from a background thread.

    CPU is the growth of the tree's user+system time between start and stop (per process,
    so processes that start mid-phase count from zero); RSS is the largest sum seen.
    """

    def __init__(self, root: int, exclude: tuple[str, ...] = (), interval_s: float = 0.25):
        self.root = root
        self.exclude = exclude
        self.interval_s = interval_s
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._peak = 0
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, initial: bool = False) -> None:
        total_rss = 0
        for pid in process_tree(self.root, self.exclude):
            rss, cpu = _rss_and_cpu(pid)
            total_rss += rss
            if initial:
                self._cpu_start[pid] = cpu
            else:
                self._cpu_start.setdefault(pid, 0.0)
            self._cpu_last[pid] = max(cpu, self._cpu_last.get(pid, 0.0))
        self._peak = max(self._peak, total_rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "ResourceSampler":
        self._started = time.monotonic()
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.usage = ResourceUsage(
            peak_rss_mb=self._peak / 2**20,
            cpu_seconds=sum(self._cpu_last[p] - self._cpu_start[p] for p in self._cpu_last),
            wall_seconds=time.monotonic() - self._started,
        )
