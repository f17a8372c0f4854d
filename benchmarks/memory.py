"""Process memory read from /proc (Linux): the peak-memory figures of the side-by-side benchmarks."""

from __future__ import annotations


def status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process (VmHWM is the peak of this address space, fresh after exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
