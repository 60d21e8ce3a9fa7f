"""Throughput of each framework's build of a variant, next to two ceilings measured in the
same run: that framework's own large matrix product, and the best such product over every
installed framework (the machine's ceiling as far as these libraries can reach it).

FLOPs come from the variant's description (`canonical.flops`), never from a table.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from equiv import canonical as C
from equiv import weights
from equiv.compare import tap_tolerances
from equiv.errors import EquivError, FrameworkError
from equiv.frameworks import FRAMEWORKS, adapter, loaded, parse_frameworks
from equiv.variants import Variant, get

MATMUL_N = 4096


def time_it(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5, min_seconds: float = 0.0) -> float:
    """Median seconds of one call, after warm-up calls (compilation, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(framework: str, *, device: str = "cpu", dtype: str = "float32", n: int = MATMUL_N,
                  repeats: int = 5) -> float:
    """GFLOP/s of that framework's n x n matrix product."""
    fn = adapter(framework).matmul_fn(n, device=device, dtype=dtype)
    return 2 * n**3 / time_it(fn, repeats=repeats) / 1e9


@dataclass
class Row:
    variant: str
    framework: str
    path: str  # "plain" or a fast path of the adapter's FAST_PATHS
    batch: int
    images_per_s: float
    seconds_per_batch: float
    gflops: float  # achieved
    of_framework_ceiling: float
    of_machine_ceiling: float
    rel_error: float = 0.0  # of the logits, against the plain path
    used: bool = True  # False: the path changed the numbers beyond tolerance (reported, not used)
    best: bool = False  # the fastest usable path of its framework at this batch


@dataclass
class BenchResult:
    variant: str
    device: str
    dtype: str
    input_size: tuple[int, int]
    channels_last: bool
    flops_per_image: int
    ceilings_gflops: dict  # framework -> GFLOP/s of its own n x n product
    machine_ceiling_gflops: float
    rows: list[Row]
    skipped: dict  # framework -> reason
    settings: dict

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def bench(variant: str | Variant, frameworks: Sequence[str] | str = FRAMEWORKS, *,
          batches: Sequence[int] = (16,), input_size: tuple[int, int] = (224, 224), device: str = "cpu",
          dtype: str = "float32", channels_last: bool = False, paths: Sequence[str] = (), best: bool = False,
          repeats: int = 5, matmul_n: int = MATMUL_N, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Time each framework's forward pass. `paths` names fast paths to try as well
    (channels_last, jit_freeze, compile for PyTorch; xla for Keras); `best` tries them all.
    Each is checked against the plain path on the same input: one that changes the logits
    beyond the float32 tolerance is reported and not used. `matmul_n`: the side of the matrix
    product whose rate is each engine's ceiling (smaller ones fall short of the peak)."""
    v = get(variant)
    fws = parse_frameworks(frameworks)
    say = progress or (lambda msg: None)
    if device not in ("cpu", "cuda"):
        raise EquivError(f"`device={device!r}` must be cpu or cuda")
    if any(b < 1 for b in batches):
        raise EquivError(f"`batches={tuple(batches)}` must all be positive")
    h, w = input_size
    flops = C.flops(v, h, w)
    load_before, started = _load(), (time.perf_counter(), _cpu_seconds())
    skipped: dict[str, str] = {}
    ceilings: dict[str, float] = {}
    engines: dict[str, float] = {}  # backends on one library (slim, Keras on TF) share its product: measure once
    for fw in FRAMEWORKS:
        try:
            ad = adapter(fw)
            key = ad.engine()
            if key not in engines:
                say(f"measuring the {n_str(matmul_n)} matrix product in {fw}")
                engines[key] = matmul_gflops(fw, device=device, dtype=dtype, n=matmul_n)
            ceilings[fw] = engines[key]
        except (FrameworkError, EquivError) as e:
            skipped[fw] = str(e)
    if not ceilings:
        raise EquivError(f"nothing can run on {device} in {dtype} here: "
                         + "; ".join(f"{fw}: {why}" for fw, why in skipped.items()))
    skipped = {fw: why for fw, why in skipped.items() if fw in fws}
    machine = max(ceilings.values())
    params = weights.random_params(v, 0)
    tol = tap_tolerances(v, dtype)[C.output_tap(v)]
    rows = []
    for fw in fws:
        if fw in skipped:
            continue
        ad = adapter(fw)
        say(f"building {v.name} in {fw}")
        with loaded(fw, v, params) as model:
            tried = {"plain": {"channels_last": channels_last}}
            for name, opts in ad.FAST_PATHS.items():
                if best or name in paths:
                    tried[name] = opts
            for b in batches:
                x = weights.random_input(v, b, h, w)
                plain = None
                for name, opts in tried.items():
                    try:
                        fn = ad.forward_fn(v, model, x, device=device, dtype=dtype, **opts)
                        say(f"timing {fw} ({name}) at batch {b}")
                        out = _numpy(fn())  # also the first warm-up (compilation)
                    except FrameworkError as e:
                        skipped[fw if name == "plain" else f"{fw}:{name}"] = str(e)
                        if name == "plain":
                            break
                        continue
                    except Exception as e:  # noqa: BLE001 - a fast path that fails is reported, not fatal
                        skipped[f"{fw}:{name}"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        continue
                    plain = out if plain is None else plain
                    rel = float(np.abs(out - plain).max() / max(np.abs(plain).max(), 1e-30))
                    sec = time_it(fn, repeats=repeats)
                    achieved = flops * b / sec / 1e9
                    rows.append(Row(v.name, fw, name, b, b / sec, sec, achieved, achieved / ceilings[fw],
                                    achieved / machine, rel, used=rel <= tol))
                usable = [r for r in rows if r.framework == fw and r.batch == b and r.used]
                if usable:
                    max(usable, key=lambda r: r.images_per_s).best = True
    return BenchResult(v.name, device, dtype, (h, w), channels_last, flops, ceilings, machine, rows, skipped,
                       settings={"repeats": repeats, "matmul_n": matmul_n, **_versions(fws, device),
                                 "load_average": {"before": load_before, "after": _load(), "cpus": _cpus(),
                                                  "own": _own_cores(*started)}})


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (a busy machine's figures are not the paths' own)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_seconds() -> float:
    """CPU seconds this process has used so far, all its threads together."""
    t = os.times()
    return t.user + t.system


def _own_cores(wall0: float, cpu0: float) -> float:
    """How many cores the run itself kept busy on average: its share of the load average after it."""
    wall = time.perf_counter() - wall0
    return round((_cpu_seconds() - cpu0) / wall, 2) if wall > 0 else 0.0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy(result) -> str:
    """One line on the machine's load around the run, saying when it was busy."""
    load = result.settings.get("load_average") or {}
    before, after, cpus = load.get("before"), load.get("after"), load.get("cpus")
    if not before or not after:
        return ""
    own = load.get("own", 0.0)  # the run's own threads raise the load after it; they are not other jobs
    others_after = max(after[0] - own, 0.0)
    busy = max(before[0], others_after) > 0.5 * cpus
    return (f"load average (1 min) before {before[0]:.2f}, after {after[0]:.2f} on {cpus} CPUs"
            f" (this run itself kept {own:.2f} busy on average)"
            + (": BUSY, other jobs shared the CPUs; these figures are not the paths' own" if busy else ": quiet"))


def _numpy(out) -> np.ndarray:
    """Logits of any framework as float64 numpy (torch tensors, TF or Keras arrays)."""
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    return np.asarray(out, np.float64)


def n_str(n: int = MATMUL_N) -> str:
    return f"{n}x{n}"


def _versions(fws: Sequence[str], device: str) -> dict:
    """Framework versions and the device each ran on, for the record of a run."""
    import sys

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "cpu_count": os.cpu_count()}
    for fw in fws:
        out.update(adapter(fw).versions())
        if device != "cpu":
            out[f"{fw}_device"] = adapter(fw).device_name(device)
    return out


def to_text(result: BenchResult) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"equiv bench {result.variant}: {result.device}, {result.dtype}, "
                    f"{result.input_size[0]}x{result.input_size[1]}"
                    f"{', channels_last' if result.channels_last else ''}; "
                    f"{result.flops_per_image / 1e9:.2f} GFLOP per image", title_justify="left")
    for col in ("framework", "path", "batch", "images/s", "GFLOP/s", "of own matmul", "of machine ceiling",
                "logits vs plain"):
        t.add_column(col, justify="left" if col in ("framework", "path") else "right")
    for r in result.rows:
        mark = " (best)" if r.best and len(result.rows) > len({(x.framework, x.batch) for x in result.rows}) else ""
        t.add_row(r.framework, r.path + mark, str(r.batch), f"{r.images_per_s:.1f}", f"{r.gflops:.0f}",
                  f"{r.of_framework_ceiling:.0%}", f"{r.of_machine_ceiling:.0%}",
                  f"{r.rel_error:.1e}" + ("" if r.used else " NOT USED"))
    console = Console(record=True, width=140, file=open(os.devnull, "w"))
    console.print(t)
    console.print("ceilings (" + n_str(result.settings.get("matmul_n", MATMUL_N)) + " matrix product, GFLOP/s): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in result.ceilings_gflops.items())
                  + f"; machine {result.machine_ceiling_gflops:.0f}", highlight=False)
    for fw, why in result.skipped.items():
        console.print(f"skipped {fw}: {why}", highlight=False)
    if _busy(result):
        console.print(_busy(result), highlight=False)
    return console.export_text()


def to_markdown(result: BenchResult, command: str = "") -> str:
    lines = [f"# equiv bench `{result.variant}`", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [f"{result.device}, {result.dtype}, {result.input_size[0]}x{result.input_size[1]}"
              f"{', channels_last' if result.channels_last else ''}, "
              f"{result.flops_per_image / 1e9:.2f} GFLOP per image; versions: "
              + ", ".join(f"{k} {v}" for k, v in result.settings.items()
                          if k not in ("repeats", "matmul_n", "load_average")),
              "",
              "| framework | path | batch | images/s | GFLOP/s | of own matmul | of machine ceiling "
              "| logits vs plain |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result.rows:
        lines.append(f"| {r.framework} | {r.path}{' **best**' if r.best else ''} | {r.batch} | {r.images_per_s:.1f} | "
                     f"{r.gflops:.0f} | {r.of_framework_ceiling:.0%} | {r.of_machine_ceiling:.0%} | "
                     f"{r.rel_error:.1e}{'' if r.used else ' (not used)'} |")
    lines += ["", "Ceilings (" + n_str(result.settings.get("matmul_n", MATMUL_N)) + " matrix product, GFLOP/s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in result.ceilings_gflops.items())
              + f"; machine {result.machine_ceiling_gflops:.0f}."]
    lines += [f"Skipped {fw}: {why}" for fw, why in result.skipped.items()]
    lines += [f"{_busy(result)[0].upper()}{_busy(result)[1:]}."] if _busy(result) else []
    return "\n".join(lines) + "\n"
