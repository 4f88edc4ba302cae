"""How far a process's resident memory rises while something runs (Linux's peak-RSS counters in /proc)."""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def _status_kb(pid, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@dataclass
class Growth:
    mb: float = 0.0


@contextmanager
def peak_rss_growth(pid="self"):
    """Yields a ``Growth`` whose ``mb`` is, after the block, how far the peak RSS of ``pid`` rose above its RSS at
    the start (the peak is reset first, so earlier peaks do not hide anything)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    start = _status_kb(pid, "VmRSS")
    growth = Growth()
    yield growth
    growth.mb = (_status_kb(pid, "VmHWM") - start) / 1024
