"""Rendering a Report for people (a terminal table, Markdown) and programs (JSON)."""

from __future__ import annotations

import json
import math
import os

from equiv import atomic
from equiv.compare import Report, TapResult


def _fmt(x: float) -> str:
    if isinstance(x, str):
        return x
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf"
    return "0" if x == 0 else f"{x:.1e}"


def _rows(report: Report):
    """One row per tap: the tap, its shape, then one relative error per pair."""
    pairs = list(dict.fromkeys(r.pair for r in report.taps))
    by_tap: dict[str, dict[tuple[str, str], TapResult]] = {}
    for r in report.taps:
        by_tap.setdefault(r.name, {})[r.pair] = r
    return pairs, by_tap


def _mark(r: TapResult) -> str:
    return {"ok": "", "diverged": " !", "nonfinite": " NaN/Inf", "shape": " shape"}[r.status]


def information_line(report: Report) -> str:
    """How many taps carried information: a tap whose reference side is all zero or constant
    matches whatever the arithmetic, so it proves nothing (marked in the table)."""
    total, dull = len(report.tap_names), report.uninformative
    if not dull:
        return f"information: all {total} taps carried information (none all zero or constant)"
    shown = ", ".join(f"{t} ({why})" for t, why in list(dull.items())[:6])
    more = f", and {len(dull) - 6} more" if len(dull) > 6 else ""
    return (f"information: {total - len(dull)} of {total} taps carried information; uninformative "
            f"(the reference side all zero or constant, proving nothing): {shown}{more}")


def _tap_cell(name: str, cells) -> str:
    why = next((r.uninformative for r in cells.values() if r.uninformative), None)
    return f"{name} [{why}]" if why else name


def summary_lines(report: Report) -> list[str]:
    lines = []
    first, nan = report.first, ""
    if report.nonfinite:
        r = report.nonfinite[0]
        counts = f": {r.nonfinite[0]} and {r.nonfinite[1]} values" if r.nonfinite else ""
        nan = (f"NaN or Inf first at tap {r.name} ({r.pair[0]} vs {r.pair[1]}{counts}), "
               f"where no error can be measured: the weights, the input or an overflow")
    if first is not None and first.status == "nonfinite":
        lines.append(f"NON-FINITE: {nan}")
    elif first is not None and report.nonfinite:  # finite values diverged first (a ReLU can turn NaN into 0)
        lines.append(f"NOT EQUIVALENT, then NON-FINITE: first divergence at tap {first.name} "
                     f"({first.pair[0]} vs {first.pair[1]}): relative error {_fmt(first.rel)} > tolerance "
                     f"{_fmt(first.tol)}, max abs {_fmt(first.max_abs)}; {nan}")
    elif first is None:
        lines.append(f"EQUIVALENT: {len(report.taps)} tap comparisons, worst relative error "
                     f"{_fmt(report.worst_rel)} (tolerance {_fmt(report.tolerance)} x sqrt(depth))")
    else:
        where = f" at index {list(first.worst_index)}" if first.worst_index is not None else ""
        vals = (f" ({first.pair[0]}={first.worst_values[0]:.6g}, {first.pair[1]}={first.worst_values[1]:.6g})"
                if first.worst_values else "")
        lines.append(f"NOT EQUIVALENT: first divergence at tap {first.name} ({first.pair[0]} vs {first.pair[1]}): "
                     f"relative error {_fmt(first.rel)} > tolerance {_fmt(first.tol)}, "
                     f"max abs {_fmt(first.max_abs)}{where}{vals}")
    lines.append(information_line(report))
    if report.timings:
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    if report.peak_memory_mb:
        lines.append(f"peak memory: {report.peak_memory_mb:.0f} MB")
    lines += [f"note: {n}" for n in report.notes]
    return lines


def to_text(report: Report, *, color: bool | None = None, width: int = 120) -> str:
    """The per-tap table a person reads in a terminal."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    pairs, by_tap = _rows(report)
    table = Table(title=f"equiv {report.kind} {report.variant}  (relative error = max|a-b| / max|a|)",
                  title_justify="left")
    table.add_column("tap")
    table.add_column("shape")
    for a, b in pairs:
        table.add_column(f"{a}~{b}", justify="right")
    table.add_column("cosine min", justify="right")
    for name, cells in by_tap.items():
        bad = any(not r.ok for r in cells.values())
        first = next(iter(cells.values()))
        row = [_tap_cell(name, cells), "x".join(map(str, first.shape[1:]))]
        for p in pairs:
            r = cells.get(p)
            row.append("" if r is None else _fmt(r.rel) + _mark(r))
        row.append(f"{min(r.cosine for r in cells.values()):.8f}")
        table.add_row(*row, style="bold red" if bad else None)
    console = Console(record=True, width=width, force_terminal=color, no_color=color is False,
                      file=open(os.devnull, "w"))
    # As wide as the table needs (four backends make six pair columns): a tap name is never cut short.
    console.width = max(width, Measurement.get(console, console.options.update(width=10_000), table).maximum)
    console.print(table)
    if report.isolated:
        iso = Table(title="isolated: each framework's unit on its own input vs the float64 reference unit",
                    title_justify="left")
        iso.add_column("segment")
        fws = list(dict.fromkeys(r["framework"] for r in report.isolated))
        for fw in fws:
            iso.add_column(f"{fw} made", justify="right")
            iso.add_column(f"{fw} inherited", justify="right")
        rows: dict[str, dict] = {}
        for r in report.isolated:
            rows.setdefault(r["segment"], {})[r["framework"]] = r
        for seg, cells in rows.items():
            row = [seg]
            for fw in fws:
                c = cells.get(fw)
                row += [_fmt(c["made_rel"]), _fmt(c["total_rel"])] if c else ["", ""]
            iso.add_row(*row)
        console.print(iso)
    verdict_style = "green" if report.equivalent else "bold red"
    for line in summary_lines(report):
        console.print(line, style=verdict_style if line.startswith(("EQ", "NOT", "NON")) else None, highlight=False)
    return console.export_text(styles=bool(color))


def to_markdown(report: Report) -> str:
    pairs, by_tap = _rows(report)
    out = [f"# equiv {report.kind}: `{report.variant}`", ""]
    out += [f"- {line}" for line in summary_lines(report)]
    out += ["", "| tap | shape | " + " | ".join(f"{a} vs {b}" for a, b in pairs) + " |",
            "|---|---|" + "---:|" * len(pairs)]
    for name, cells in by_tap.items():
        first = next(iter(cells.values()))
        vals = []
        for p in pairs:
            r = cells.get(p)
            vals.append("" if r is None else ("**" + _fmt(r.rel) + "**" if not r.ok else _fmt(r.rel)))
        why = next((r.uninformative for r in cells.values() if r.uninformative), None)
        name = f"{name}` [{why}]" if why else f"{name}`"
        out.append(f"| `{name} | {'x'.join(map(str, first.shape[1:]))} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


def to_json_text(report: Report, *, timings: bool = False) -> str:
    """The JSON report: byte-identical for the same command and seed (no times unless `timings`)."""
    return json.dumps(report.to_json(timings=timings), indent=2, sort_keys=False) + "\n"


def write_atomic(path: str | os.PathLike, data: str | bytes, *, force: bool = False) -> None:
    """Write to a temporary file in the target folder, flush, fsync, then rename into place;
    an existing file only with `force` (equiv.atomic)."""
    atomic.write_bytes(path, data, force=force)
