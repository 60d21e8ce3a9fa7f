"""Memory: what a job will need, from the description alone, and what the machine has.

A check that cannot fit should be refused in a second with the number, not found out minutes
later by the kernel's OOM killer. The estimate follows what `equiv.checking.check` holds at its
peak, measured on resnet152 at 224x224 (benchmarks/check_peak_memory.py): the frameworks' own
code; the weights (the seeded set, the model it is loaded into, the native export, the
framework's own copy on the way in) while the first framework runs, two sets after; every
framework's taps kept for the comparison; and the framework at work holding about one more
set of activations.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

from equiv import canonical as C
from equiv.errors import EquivError, ResourceError
from equiv.frameworks import FRAMEWORKS, REGISTRY
from equiv.variants import Variant

MB = 1024 * 1024


def tap_elements(v: Variant, height: int, width: int) -> dict[str, int]:
    """Elements of every tap of one image, from the plan (no framework)."""
    return {t: math.prod(shape) for t, shape in C.tap_shapes(v, height, width).items()}


def estimate(v: Variant, batch: int, height: int, width: int, frameworks: Sequence[str]) -> dict[str, int]:
    """Bytes a job needs at its peak, by part: `frameworks` run one after the other (a name
    may repeat), each keeping every tap of the batch in float32."""
    weights = 4 * C.param_count(v)
    taps = 4 * batch * sum(tap_elements(v, height, width).values())
    n = len(frameworks)
    parts = {
        # each runtime once: TensorFlow serves both slim and Keras (frameworks.REGISTRY)
        "frameworks": sum(dict((REGISTRY[f].runtime, REGISTRY[f].runtime_bytes) for f in frameworks).values()),
        # the first framework's stage holds four sets of weights and two of taps; the last one's
        # two sets of weights, the taps of every framework and its own working set
        "weights and activations": max(4 * weights + 2 * taps, 2 * weights + (n + 1) * taps),
        "input": 4 * batch * height * width * v.in_channels,
    }
    parts["total"] = sum(parts.values())
    return parts


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Room left under this process's cgroup memory limit (v2, then v1), if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 says so with a huge number)
            return None
        return max(int(limit) - usage, 0)
    return None


def available() -> int | None:
    """Bytes this process can still use: the system's available memory, or less under a cgroup limit."""
    known = [b for b in (_meminfo_available(), _cgroup_room()) if b is not None]
    return min(known) if known else None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def needs_text(parts: dict[str, int]) -> str:
    detail = ", ".join(f"{k} {human(b)}" for k, b in parts.items() if k != "total" and b)
    return f"about {human(parts['total'])} of memory ({detail})"


def peak_memory_mb() -> float:
    """Peak resident memory of this process: Linux's VmHWM, which starts afresh at exec (ru_maxrss
    keeps the peak of the process that forked it: a check started by a 6 GB parent said 6 GB);
    elsewhere ru_maxrss (macOS reports bytes)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def check_input(v: Variant, batch: int, height: int, width: int, *,
                frameworks: Sequence[str] = FRAMEWORKS) -> None:
    """Refuse, before any work, sizes the network cannot take or the machine cannot hold.

    `frameworks`: those the job runs one after the other (see `estimate`)."""
    if batch < 1:
        raise EquivError(f"`batch={batch}` must be at least 1")
    C.check_input_size(v, height, width)
    need = estimate(v, batch, height, width, frameworks)
    if max(height, width) > 4096:
        raise ResourceError(f"`input_size=({height}, {width})` is too large: at most 4096 per side "
                            f"(this one would need {needs_text(need)})")
    room = available()
    if room is not None and need["total"] > room:
        raise ResourceError(
            f"{v.name} at `batch={batch}` `input_size=({height}, {width})` in {', '.join(frameworks)} needs "
            f"{needs_text(need)}; this machine has {human(room)} available: "
            f"lower `batch` or `input_size`")
