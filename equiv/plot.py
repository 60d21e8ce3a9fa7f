"""A Report as a picture: relative error per tap along the network, one line per framework pair.

Log scale, the tolerance drawn as a dashed line, failing taps marked in red, so a person sees
at a glance where the error grows and where it crosses the line. matplotlib is optional
(`pip install equiv[plot]`) and imported only here, through its Agg canvas: no pyplot, no
global backend switched under the caller's feet.
"""

from __future__ import annotations

import io
import math
import os
import re

from equiv.compare import Report
from equiv.errors import EquivError

FAIL_COLOR = "#ff0000"  # pure red: failing taps, and nothing else, are drawn in it


def available() -> str | None:
    """None when plots can be drawn, else why not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        return f"plots need matplotlib (pip install 'equiv[plot]'): {e}"
    return None


def _ticks(taps: list[str]) -> list[tuple[int, str]]:
    """Where to label the x axis: the stem, the first tap of each stage, the head."""
    ticks, seen = [], set()
    for i, name in enumerate(taps):
        m = re.match(r"(stage\d+)/", name)
        group = m.group(1) if m else name.split("/")[0]
        if group not in seen and (m or name in ("input", "stem/conv", "post", "pool", "logits")):
            seen.add(group)
            ticks.append((i, group if m else name))
    return ticks


def render_png(report: Report, *, size: tuple[float, float] = (10.0, 4.5), dpi: int = 100) -> bytes:
    """The plot of `report` as PNG bytes, `size` inches at `dpi` (1000x450 pixels by default)."""
    why = available()
    if why:
        raise EquivError(why)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    taps = list(dict.fromkeys(r.name for r in report.taps))
    at = {t: i for i, t in enumerate(taps)}
    pairs = list(dict.fromkeys(r.pair for r in report.taps))
    finite = [v for r in report.taps for v in (r.rel, r.tol) if math.isfinite(v) and v > 0]
    floor = min(finite, default=1e-8) / 10  # where exact zeros sit (log scale has no zero)
    ceiling = max(finite, default=1.0) * 10  # where NaN, Inf and shape mismatches sit

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for pair in pairs:
        rows = [r for r in report.taps if r.pair == pair]
        ys = [ceiling if not math.isfinite(r.rel) else max(r.rel, floor) for r in rows]
        ax.plot([at[r.name] for r in rows], ys, marker=".", markersize=4, linewidth=1, label=f"{pair[0]} vs {pair[1]}")
        bad = [(at[r.name], y) for r, y in zip(rows, ys) if not r.ok]
        if bad:
            ax.plot(*zip(*bad), linestyle="none", marker="x", markersize=8, markeredgewidth=2, color=FAIL_COLOR)
    first_pair = [r for r in report.taps if r.pair == pairs[0]] if pairs else []
    ax.step([at[r.name] for r in first_pair], [r.tol if math.isfinite(r.tol) else ceiling for r in first_pair],
            where="mid", linestyle="--", color="black", linewidth=1, label="tolerance")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, ceiling * 2)
    ticks = _ticks(taps)
    ax.set_xticks([i for i, _ in ticks], [label for _, label in ticks], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("tap, in network order")
    ax.set_ylabel("max|a - b| / max|a|")
    verdict = "equivalent" if report.equivalent else f"first divergence: {report.first.name}"
    ax.set_title(f"equiv {report.kind} {report.variant}: {verdict}", fontsize=10)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.text(0.99, 0.01, "exact zeros on the bottom edge, NaN/Inf on the top; x: failing tap",
             ha="right", va="bottom", fontsize=7, color="gray")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_plot(report: Report, path: str | os.PathLike, *, force: bool = False, **kwargs) -> None:
    """Render, then write atomically (no partial PNG is ever left at `path`; an existing file
    only with `force`)."""
    from equiv.report import write_atomic

    write_atomic(path, render_png(report, **kwargs), force=force)
