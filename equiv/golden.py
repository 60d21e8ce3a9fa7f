"""Golden outputs: every framework's taps of one seeded network on one fixed input, kept in
`fixtures/golden/`, so that an upgrade of TensorFlow, Keras or PyTorch shows, tap by tap, what
it changed before it reaches users.

One file per variant (`fixtures/golden/<variant name>.npz`; its format: `equiv.golden_file`).
Weights are not stored: they are regenerated from the seed, the same bits on any machine
(`equiv.weights`), and their SHA-256 and generator name are kept so that changed weights are
told apart from a framework moving. The input is stored (it is small). Each framework's taps
come from loading the seeded weights straight into that framework (no port through another), so
a moved tap belongs to exactly one framework.

`verify` runs today's frameworks and compares each one with its own stored taps, with the
float32 tolerance of each tap (`equiv.compare.tap_tolerances`); `update` rewrites the files,
atomically, and says what changed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv import compare, weights
from equiv.compare import TapResult
from equiv.errors import EquivError
from equiv.frameworks import FRAMEWORKS, REGISTRY, adapter, imported, loaded, module, parse_frameworks
from equiv.golden_file import FORMAT, Golden, GoldenFileError, decode, encode, path_for, read
from equiv.variants import Variant, all_variants, get

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
SEED = 0
BATCH = 1
# Small, to keep fixtures/ compact, and odd by even, so TF SAME pads differently on each side.
INPUT_SIZE = (15, 14)
# Each tap keeps this many evenly spaced elements (the whole tap where it is no larger), so that
# fixtures/ stays small; the same elements are taken from today's taps when verifying. At
# INPUT_SIZE, 512 elements still touch every spatial position of every tap (a tap has more
# channels than the spacing). A network that takes only a large input (the seed's 224x224-only
# ones), or none as small as INPUT_SIZE (a VGG's five pools need 32x32), keeps TAP_SAMPLE_LARGE.
TAP_SAMPLE = 512
TAP_SAMPLE_LARGE = 1024

Progress = Callable[[str], None]
PROBLEMS = ("missing", "unreadable", "stale")  # verdicts that say the file, not a framework, is at fault


# ---------------------------------------------------------------------------------------
# Producing taps


def settings_for(v: Variant) -> dict:
    """Seed, batch and input size of `v`'s golden run (the input at least the network's minimum)."""
    smallest = C.min_input_size(v)
    large = v.input_size is not None or smallest > min(INPUT_SIZE)
    return {"seed": SEED, "batch": BATCH, "height": max(INPUT_SIZE[0], smallest),
            "width": max(INPUT_SIZE[1], smallest), "sample": TAP_SAMPLE_LARGE if large else TAP_SAMPLE}


def sample(a: np.ndarray, n: int | None) -> np.ndarray:
    """`a` itself, or (n given and `a` larger) n evenly spaced elements of it, flattened."""
    if n is None or a.size <= n:
        return a
    return a.reshape(-1)[np.linspace(0, a.size - 1, n).round().astype(np.int64)]


def produce(v: Variant, frameworks: Sequence[str], x: np.ndarray, params: dict[str, np.ndarray],
            progress: Progress | None = None, n_sample: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every tap of `v` in each framework, the seeded weights loaded straight into each
    (`n_sample`: only that many evenly spaced elements of each tap, see TAP_SAMPLE)."""
    say = progress or (lambda msg: None)
    out = {}
    for fw in frameworks:
        say(f"{v.name}: running {fw}")
        with loaded(fw, v, params) as model:
            taps = adapter(fw).run(v, model, x)
        out[fw] = {t: sample(np.asarray(taps[t], np.float32), n_sample) for t in C.tap_names(v)}
    return out


def fingerprint(v: Variant, params: dict[str, np.ndarray]) -> np.ndarray:
    """(sum, sum of |w|) of every parameter in canonical order, float64: enough to tell whether
    the weight generator changed, without storing the weights."""
    return np.array([[np.sum(params[n], dtype=np.float64), np.sum(np.abs(params[n]), dtype=np.float64)]
                     for n in C.param_shapes(v)])


def versions(frameworks: Iterable[str]) -> dict[str, dict[str, str]]:
    """What computes each framework's taps: its packages' versions (Keras: and its backend's)."""
    return {fw: adapter(fw).versions() for fw in frameworks}


def environment() -> dict:
    """Where the taps were computed: versions, and the machine (CPU model, the CPUs this process
    may use, every thread pool loaded: BLAS library, its kernel for this CPU, its threads)."""
    return {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "cpu": _cpu_model(), "cpus": _cpus(),
            "threads": _threads()}


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _threads() -> list[dict]:
    """threadpoolctl's view of the loaded thread pools (BLAS, OpenMP), and each framework's own."""
    from threadpoolctl import threadpool_info

    pools = [{"library": Path(p.get("filepath", "?")).name, "api": p.get("internal_api", "?"),
              "version": p.get("version") or "?", "kernel": p.get("architecture") or "-",
              "threads": p.get("num_threads")} for p in threadpool_info()]
    pools += [pool for fw in imported() for pool in module(fw).thread_pools()]
    return sorted(pools, key=lambda p: (p["api"], p["library"]))


def machine_line(env: dict) -> str:
    """The CPU and the BLAS kernels of an `environment()`, on one line."""
    blas = [f"{p['api']} {p['version']} {p['kernel']} {p['threads']} thread(s)" for p in env.get("threads", [])
            if p["api"] in ("openblas", "mkl", "blis")]
    rest = [f"{p['library']} {p['api']} {p['threads']}" for p in env.get("threads", [])
            if p["api"] not in ("openblas", "mkl", "blis")]
    return (f"{env.get('cpu', 'unknown CPU')}, {env.get('cpus', '?')} CPU(s); BLAS: " + ("; ".join(blas) or "none seen")
            + (f"; other thread pools: {', '.join(rest)}" if rest else ""))


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(x) for x in value]
    return value


def identity(v: Variant) -> dict:
    """What a golden file must agree with to describe `v`: its conventions and parameter shapes."""
    return {"name": v.name, "native": v.native,
            "conventions": {k: _jsonable(x) for k, x in v.conventions().items()},
            "param_shapes": {n: list(s) for n, s in C.param_shapes(v).items()}}


def describes_other(v: Variant, golden: Golden) -> str | None:
    """Why `golden` is not a golden file of `v` (conventions, parameters, taps), or None."""
    stored = golden.meta["variant"]
    now = identity(v)
    where = f"{golden.path} describes another network than {v.name}"
    if stored["name"] != v.name:
        return f"{golden.path} is the golden file of {stored['name']}, not {v.name}"
    # A convention added to the description after the file was made reads as its default, the value
    # every earlier description had (each new field's default keeps the networks before it unchanged).
    defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(v) if f.default is not dataclasses.MISSING}
    was = {k: stored["conventions"].get(k, defaults.get(k)) for k in now["conventions"]}
    changed = [k for k in now["conventions"] if was[k] != now["conventions"][k]]
    if changed:
        k = changed[0]
        return (f"{where}: {len(changed)} convention(s) differ (first: {k} stored "
                f"{was[k]!r}, now {now['conventions'][k]!r})")
    old, new = stored["param_shapes"], now["param_shapes"]
    if old != new:
        wrong = [n for n in new if n in old and old[n] != new[n]]
        missing, extra = [n for n in new if n not in old], [n for n in old if n not in new]
        if wrong:
            return f"{where}: parameter {wrong[0]} was {tuple(old[wrong[0]])}, is now {tuple(new[wrong[0]])}"
        name = (missing or extra)[0]
        return f"{where}: parameter {name} is {'new' if missing else 'gone'} ({len(missing)} new, {len(extra)} gone)"
    if golden.tap_names != C.tap_names(v):
        return (f"{where}: its taps are not the variant's taps "
                f"(stored {len(golden.meta['taps'])}, now {len(C.tap_names(v))})")
    return None


# ---------------------------------------------------------------------------------------
# Verify


@dataclass
class Verdict:
    """One variant's golden check: `status` is unchanged, moved, or a problem with its file:
    missing, unreadable, stale (it describes another network, or the seeded weights changed)."""

    variant: str
    status: str
    path: str
    message: str = ""
    frameworks: list[str] = field(default_factory=list)
    taps: list[TapResult] = field(default_factory=list)  # pair: ("<fw>@golden", fw)
    version_changes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    made_on: dict = field(default_factory=dict)  # the stored file's environment (versions, machine)

    def worst(self, fw: str) -> TapResult | None:
        mine = [r for r in self.taps if r.pair[1] == fw]
        return max(mine, key=lambda r: math.inf if math.isnan(r.rel) else r.rel, default=None)

    @property
    def moved(self) -> list[TapResult]:
        return [r for r in self.taps if not r.ok]

    def to_json(self) -> dict:
        worst = {fw: _tap_json(self.worst(fw)) for fw in self.frameworks if self.worst(fw) is not None}
        return {"variant": self.variant, "status": self.status, "path": self.path, "message": self.message,
                "frameworks": self.frameworks, "version_changes": self.version_changes,
                "worst": worst, "moved": [_tap_json(r) for r in self.moved], "made_on": self.made_on,
                "seconds": round(self.seconds, 2), "taps": [r.to_json() | {"framework": r.pair[1]} for r in self.taps]}


def _tap_json(r: TapResult) -> dict:
    d = r.to_json()
    return {"framework": r.pair[1], "tap": r.name, **{k: d[k] for k in ("rel", "tol", "max_abs", "status")},
            "of_tolerance": _of_tol(r)}


def _of_tol(r: TapResult) -> float:
    """The drift as a fraction of its tolerance (1: at the tolerance)."""
    return r.rel / r.tol if r.tol > 0 else (0.0 if r.rel == 0 else math.inf)


@dataclass
class VerifyReport:
    directory: str
    frameworks: list[str]
    today: dict
    verdicts: list[Verdict]
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        """0 every tap within tolerance, 1 some tap moved, 2 a golden file missing, unreadable or stale."""
        if any(v.status in PROBLEMS for v in self.verdicts):
            return 2
        return 1 if any(v.status == "moved" for v in self.verdicts) else 0

    def largest_drift(self) -> dict[str, tuple[float, str, str]]:
        """Per framework: the largest relative error over all variants, its variant and tap."""
        out: dict[str, tuple[float, str, str]] = {}
        for v in self.verdicts:
            for fw in v.frameworks:
                r = v.worst(fw)
                if r is not None and (fw not in out or not r.rel <= out[fw][0]):
                    out[fw] = (r.rel, v.variant, r.name)
        return out

    def version_changes(self) -> dict[str, list[str]]:
        """Each version change since the golden files, with the variants whose file it concerns."""
        out: dict[str, list[str]] = {}
        for v in self.verdicts:
            for change in v.version_changes:
                out.setdefault(change, []).append(v.variant)
        return out

    def to_json(self) -> dict:
        return {"kind": "golden-verify", "directory": self.directory, "frameworks": self.frameworks,
                "today": self.today, "exit_status": self.exit_status, "seconds": round(self.seconds, 1),
                "version_changes": self.version_changes(),
                "largest_drift": {fw: {"rel": rel if math.isfinite(rel) else str(rel),
                                       "variant": var if rel != 0 else None, "tap": tap if rel != 0 else None}
                                  for fw, (rel, var, tap) in self.largest_drift().items()},
                "variants": [v.to_json() for v in self.verdicts]}


def _select(variants: Iterable[str | Variant] | None) -> list[Variant]:
    return [get(v) for v in variants] if variants else all_variants()


def _version_changes(stored: dict, today: dict, frameworks: Iterable[str]) -> list[str]:
    """One line per framework whose versions changed: "keras: backend tensorflow -> torch, ..."."""
    changes = []
    for fw in frameworks:
        old, new = stored.get(fw, {}), today.get(fw, {})
        moved = [f"{pkg} {old.get(pkg, '(none)')} -> {new.get(pkg, '(none)')}"
                 for pkg in dict.fromkeys([*old, *new]) if old.get(pkg) != new.get(pkg)]
        if moved:
            changes.append(f"{fw}: " + ", ".join(moved))
    return changes


def _made_by(golden: Golden) -> str:
    import equiv

    return (f"made by equiv {golden.meta['equiv_version']} on {golden.meta.get('created', '?')}; "
            f"this is equiv {equiv.__version__}")


def _settings_change(v: Variant, golden: Golden) -> str | None:
    old, new = golden.meta["settings"], settings_for(v)
    moved = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    if not moved:
        return None
    return f"{golden.path}: its input or sampling settings are not today's ({', '.join(moved)})"


def _weights_change(v: Variant, golden: Golden, params: dict[str, np.ndarray]) -> tuple[str, bool] | None:
    """Why the seeded weights are not the bits the file was made with, and whether that is a change
    to commit (a new generator or numpy) rather than this machine computing other bits (a bug)."""
    stored = golden.meta["weights"]
    if stored["sha256"] == weights.digest(v, params):
        return None
    fp = fingerprint(v, params)
    where = "the fingerprint agrees, the bits do not"
    if golden.fingerprint.shape == fp.shape and not np.array_equal(golden.fingerprint, fp):
        off = np.abs(golden.fingerprint - fp) / np.maximum(np.abs(golden.fingerprint[:, 1]), 1e-30)[:, None]
        i = int(np.argmax(np.any(golden.fingerprint != fp, axis=1)))
        where = f"first {list(C.param_shapes(v))[i]}, relative change {off[i].max():.1e}"
    then_numpy = golden.meta["environment"].get("numpy", "?")
    changes = []
    if stored["generator"] != weights.GENERATOR:
        changes.append(f"weight generator {stored['generator']} -> {weights.GENERATOR}")
    if then_numpy != np.__version__:
        changes.append(f"numpy {then_numpy} -> {np.__version__}")
    if changes:
        return f"{golden.path}: the seeded weights changed ({where}) with the {', '.join(changes)}", True
    return (f"{golden.path}: the seeded weights differ from the ones it was made with ({where}), although the "
            f"weight generator ({weights.GENERATOR}) and numpy ({np.__version__}) are the same: either the "
            f"generator depends on the machine (made on {machine_line(golden.meta['environment'])}; here "
            f"{machine_line(environment())}) or its code changed without a new equiv.weights.GENERATOR. That is a "
            "bug of equiv's to report, not a change to commit: `equiv golden update` would hide it"), False


def _stale(v: Variant, golden: Golden, frameworks: Sequence[str]) -> tuple[str, bool, dict | None]:
    """(why the file cannot be compared, whether regenerating it is the fix, the seeded weights)."""
    why = describes_other(v, golden) or _settings_change(v, golden)
    absent = [fw for fw in frameworks if fw not in golden.taps]
    if why is None and absent:
        why = f"{golden.path} holds no taps of {', '.join(absent)}"
    if why is not None:
        return why, True, None
    params = weights.random_params(v, golden.meta["settings"]["seed"])
    change = _weights_change(v, golden, params)
    return (*change, params) if change else ("", False, params)


def verify_one(v: Variant, frameworks: Sequence[str], directory: str | Path = DEFAULT_DIR,
               progress: Progress | None = None) -> Verdict:
    """Today's taps of `v` in each framework against that framework's stored taps."""
    t0 = time.perf_counter()
    path = path_for(directory, v)
    fws = list(frameworks)
    if not path.exists():
        return Verdict(v.name, "missing", str(path), f"no golden file {path}; run `equiv golden update {v.name}`",
                       frameworks=fws)
    try:
        golden = read(path)
    except GoldenFileError as e:
        return Verdict(v.name, "unreadable", str(path), f"{e}; regenerate with `equiv golden update {v.name}`",
                       frameworks=fws)
    absent = [fw for fw in fws if fw not in golden.taps]
    if absent:  # a backend registered after the file was made
        return Verdict(v.name, "stale", str(path), f"{path} holds no taps of {', '.join(absent)} (made before it was "
                       f"registered, {_made_by(golden)}); to add them, run `equiv golden update --frameworks "
                       f"{','.join(absent)} {v.name}` (the others' taps stay as stored) and commit the file, or "
                       f"verify the others with --frameworks", frameworks=fws,
                       made_on=golden.meta["environment"])
    why, regenerate, params = _stale(v, golden, fws)
    if why:
        fix = f"; if that change is meant, regenerate with `equiv golden update {v.name}` and commit the file"
        return Verdict(v.name, "stale", str(path), f"{why} ({_made_by(golden)})" + (fix if regenerate else ""),
                       frameworks=fws, made_on=golden.meta["environment"])
    today = produce(v, fws, golden.input, params, progress, golden.meta["settings"].get("sample"))
    tols = compare.tap_tolerances(v, "float32")
    results = [compare.compare_tap(t, golden.taps[fw][t], today[fw][t], (f"{fw}@golden", fw), tols[t])
               for fw in fws for t in golden.tap_names]
    verdict = Verdict(v.name, "unchanged", str(path), frameworks=fws, taps=results,
                      version_changes=_version_changes(golden.meta["versions"], versions(fws), fws),
                      made_on=golden.meta["environment"])
    if verdict.moved:
        verdict.status = "moved"
        verdict.message = "; ".join(_moved_summary(verdict, fw) for fw in fws
                                    if any(r.pair[1] == fw for r in verdict.moved))
    verdict.seconds = time.perf_counter() - t0
    return verdict


def _moved_summary(verdict: Verdict, fw: str) -> str:
    moved = [r for r in verdict.moved if r.pair[1] == fw]
    first = moved[0]
    return (f"{fw} moved at {len(moved)} of {len(verdict.taps) // len(verdict.frameworks)} taps, first {first.name} "
            f"(relative error {first.rel:.1e} > tolerance {first.tol:.1e})")


def verify(variants: Iterable[str | Variant] | None = None, frameworks: Sequence[str] | str | None = None,
           directory: str | Path = DEFAULT_DIR, progress: Progress | None = None) -> VerifyReport:
    """Check today's frameworks against the golden files of `variants` (default: every registered one)."""
    fws = parse_frameworks(frameworks or FRAMEWORKS)
    selected = _select(variants)
    if not Path(directory).is_dir():
        raise GoldenFileError(f"no golden folder {directory}")
    t0 = time.perf_counter()
    verdicts = [verify_one(v, fws, directory, progress) for v in selected]
    ran = any(v.taps for v in verdicts)  # else no framework was imported: do not import one for its version
    # backends' versions nested: a backend's name may be anything, even "numpy" or "python"
    return VerifyReport(str(directory), fws, {**environment(), "backends": versions(fws) if ran else {}}, verdicts,
                        time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------
# Update


@dataclass
class Change:
    """What `update` did to one variant's file: new, changed or unchanged (taps bit for bit)."""

    variant: str
    status: str
    path: str
    changed_taps: int = 0
    worst: tuple[str, str, float] | None = None  # framework, tap, relative change
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.variant}: {self.status}"
        if self.worst:
            fw, tap, rel = self.worst
            text += f", {self.changed_taps} tap(s) changed, worst {fw} {tap} relative change {rel:.1e}"
        return text + "".join(f"; {n}" for n in self.notes)


def make(v: Variant, progress: Progress | None = None, command: str | None = None) -> tuple[dict, bytes]:
    """Run every framework on `v`'s golden input; the metadata and the file's bytes."""
    import equiv

    s = settings_for(v)
    params = weights.random_params(v, s["seed"])
    x = weights.random_input(v, s["batch"], s["height"], s["width"], s["seed"])
    order = sorted(FRAMEWORKS, key=lambda f: f != v.native)
    taps = produce(v, order, x, params, progress, s["sample"])
    for fw, by_tap in taps.items():
        bad = [t for t, a in by_tap.items() if not np.isfinite(a).all()]
        if bad:
            raise EquivError(f"{v.name}: {fw} gives NaN or Inf at tap {bad[0]}; no golden file written")
    meta = {"format": FORMAT, "variant": identity(v), "settings": s, "frameworks": order,
            "taps": [[t, list(taps[order[0]][t].shape)] for t in C.tap_names(v)],  # in network order
            "versions": versions(order), "environment": environment(),
            "weights": {"generator": weights.GENERATOR, "sha256": weights.digest(v, params)},
            "equiv_version": equiv.__version__, "command": command or "equiv.golden.update",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return meta, encode(meta, x, fingerprint(v, params), taps)


def merge(v: Variant, path: Path, frameworks: Sequence[str], progress: Progress | None = None,
          command: str | None = None) -> tuple[dict, bytes]:
    """`v`'s golden file at `path` with the taps of `frameworks` made anew (a backend registered
    after the file was made, say) and every other framework's stored taps kept bit for bit: the
    same input, seed and weights as the file, which must describe `v` today."""
    try:
        old = read(path)
    except GoldenFileError as e:
        raise GoldenFileError(f"{e}; `equiv golden update {v.name}` (every framework) makes it") from None
    why, _, params = _stale(v, old, [fw for fw in old.meta["frameworks"] if fw not in frameworks])
    if why:
        raise GoldenFileError(f"{path} cannot take more frameworks: {why}; regenerate it whole with "
                              f"`equiv golden update {v.name}`")
    s = old.meta["settings"]
    new = produce(v, list(frameworks), old.input, params, progress, s.get("sample"))
    for fw, by_tap in new.items():
        bad = [t for t, a in by_tap.items() if not np.isfinite(a).all()]
        if bad:
            raise EquivError(f"{v.name}: {fw} gives NaN or Inf at tap {bad[0]}; {path} left as it was")
    known = list(REGISTRY)  # as `make` orders them: the native one first, then the registry's order
    order = sorted({*old.meta["frameworks"], *frameworks},
                   key=lambda f: (f != v.native, known.index(f) if f in known else len(known), f))
    taps = {fw: new[fw] if fw in new else old.taps[fw] for fw in order}
    meta = {**old.meta, "frameworks": order,
            "versions": {**{fw: old.meta["versions"][fw] for fw in order if fw not in new}, **versions(new)},
            "command": command or "equiv.golden.update",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta["versions"] = {fw: meta["versions"][fw] for fw in order}
    return meta, encode(meta, old.input, old.fingerprint, taps)


def _usable(frameworks: Sequence[str]) -> None:
    """Every framework of `frameworks` imports and runs on the engine golden files are made on."""
    for fw in frameworks:
        try:
            adapter(fw)
        except EquivError as e:
            raise EquivError(f"golden update needs {', '.join(frameworks)} (a golden file holds the taps of each): "
                             f"{e}") from None
    for fw in frameworks:  # e.g. Keras on its TensorFlow backend, not on KERAS_BACKEND=torch or jax
        engine, runtime = adapter(fw).engine(), REGISTRY[fw].runtime
        if engine != runtime:
            raise EquivError(f"golden files are made with {fw} on {runtime}, and {fw} runs on {engine} here; "
                             f"`equiv golden verify --frameworks {fw}` compares it with them")


def update(variants: Iterable[str | Variant] | None = None, directory: str | Path = DEFAULT_DIR,
           command: str | None = None, progress: Progress | None = None,
           frameworks: Sequence[str] | str | None = None) -> list[Change]:
    """Rewrite the golden files of `variants` (default: every registered one), each atomically;
    a file whose taps are unchanged bit for bit is left as it is unless its versions changed.

    `frameworks`: remake only these frameworks' taps in the existing files, keeping the others'
    bit for bit (how a newly registered backend joins the stored files: one run of that backend
    per file, no 152-layer rerun of the others). Default: every framework, the file made anew."""
    from equiv.report import write_atomic

    only = parse_frameworks(frameworks) if frameworks else None
    _usable(only or FRAMEWORKS)
    changes = []
    for v in _select(variants):
        path = path_for(directory, v)
        meta, data = merge(v, path, only, progress, command) if only else make(v, progress, command)
        change = _what_changed(v, path, meta, data)
        if change.status != "unchanged" or change.notes:
            write_atomic(path, data, force=True)  # rewriting is what update is for
        changes.append(change)
    return changes


def _what_changed(v: Variant, path: Path, meta: dict, data: bytes) -> Change:
    if not path.exists():
        return Change(v.name, "new", str(path))
    new = decode(data, path)
    try:
        old = read(path)
    except GoldenFileError as e:
        return Change(v.name, "changed", str(path), notes=[f"replaces an unreadable file ({e})"])
    other = describes_other(v, old)
    if other is not None:
        return Change(v.name, "changed", str(path), notes=[f"replaces a file of another description: {other}"])
    diffs = []
    for fw in new.taps:
        for t in new.taps[fw]:
            a, b = old.taps.get(fw, {}).get(t), new.taps[fw][t]
            if a is None or a.shape != b.shape:
                diffs.append((fw, t, math.inf))
            elif not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
                scale = float(np.abs(a).max()) or 1.0
                diffs.append((fw, t, float(np.abs(a.astype(np.float64) - b).max()) / scale))
    notes = _version_changes(old.meta["versions"], meta["versions"], meta["frameworks"])
    if old.meta["settings"] != meta["settings"]:
        notes.append(f"settings {old.meta['settings']} -> {meta['settings']}")
    if old.meta["weights"] != meta["weights"]:
        notes.append(f"seeded weights changed (generator {old.meta['weights']['generator']} -> "
                     f"{meta['weights']['generator']})")
    if not diffs:
        return Change(v.name, "unchanged", str(path), notes=[f"versions recorded: {n}" for n in notes])
    return Change(v.name, "changed", str(path), changed_taps=len(diffs), worst=max(diffs, key=lambda d: d[2]),
                  notes=notes)


# ---------------------------------------------------------------------------------------
# Text


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else "inf" if math.isinf(x) else "0" if x == 0 else f"{x:.1e}"


def _versions_line(today: dict) -> str:
    parts = [f"python {today.get('python')}", f"numpy {today.get('numpy')}"]
    for fw, found in today.get("backends", {}).items():
        parts.append(f"{fw}: " + " ".join(f"{k} {x}" for k, x in found.items()))
    return ", ".join(parts)


def _of_tol_text(r: TapResult) -> str:
    frac = _of_tol(r)
    return "0%" if frac == 0 else "<1%" if frac < 0.01 else f"{frac:.0%}" if math.isfinite(frac) else "inf"


def _made_on_lines(report: VerifyReport) -> list[str]:
    """Where the golden files were made, once: the machine line shared by most of them."""
    made = [machine_line(v.made_on) for v in report.verdicts if v.made_on]
    if not made:
        return []
    common = max(set(made), key=made.count)
    others = len(made) - made.count(common)
    elsewhere = f" ({others} file(s) on other machines, see --json)" if others else ""
    return [f"golden files made on: {common}{elsewhere}"]


def to_text(report: VerifyReport, max_moved: int = 8) -> str:
    """The versions and machine once, one line per variant (each framework's largest drift, and
    that drift as a fraction of its tap's tolerance), what moved, the largest drift, the time."""
    fws = report.frameworks
    lines = [f"equiv golden verify: {len(report.verdicts)} variant(s) against {report.directory}",
             f"today: {_versions_line(report.today)}",
             f"machine: {machine_line(report.today)}", *_made_on_lines(report)]
    changes = report.version_changes()
    for change, names in changes.items():
        which = "all" if len(names) == len(report.verdicts) else ", ".join(names)
        lines.append(f"versions since the golden files: {change} ({which})")
    lines += ["drift: relative error of each framework today against its own stored taps (max|a-b| / max|a|) "
              "at its worst tap, and that as a fraction of the tap's tolerance",
              f"{'variant':<28}{'status':<11}" + "".join(f"{fw + ' drift':>14}{'of tol':>7}" for fw in fws)
              + "  worst tap (against tolerance)"]
    for v in report.verdicts:
        cells = []
        for fw in fws:
            r = v.worst(fw)
            cells.append(f"{'' if r is None else _fmt(r.rel):>14}{'' if r is None else _of_tol_text(r):>7}")
        worst = max((v.worst(fw) for fw in fws if v.worst(fw) is not None), key=_of_tol, default=None)
        where = f"  {worst.pair[1]} {worst.name}" if worst is not None and worst.rel > 0 else ""
        lines.append(f"{v.variant:<28}{v.status.upper() if v.status != 'unchanged' else v.status:<11}"
                     + "".join(cells) + where)
        if v.message:
            lines.append(f"    {v.message}")
        for r in v.moved[:max_moved]:
            lines.append(f"    moved: {v.variant} {r.pair[1]} {r.name}: relative error {_fmt(r.rel)} > tolerance "
                         f"{_fmt(r.tol)} (max abs {_fmt(r.max_abs)}, cosine {r.cosine:.8f})")
        if len(v.moved) > max_moved:
            lines.append(f"    ... and {len(v.moved) - max_moved} more moved tap(s)")
    counts = {s: sum(v.status == s for v in report.verdicts) for s in ("unchanged", "moved", *PROBLEMS)}
    lines.append("summary: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    drift = report.largest_drift()
    if drift and all(rel == 0 for rel, _, _ in drift.values()):
        lines.append("largest drift: 0 (every tap of every framework bit for bit as stored)")
    elif drift:
        lines.append("largest drift: " + "; ".join(f"{fw} {_fmt(rel)}" + (f" ({var} {tap})" if rel != 0 else "")
                                                     for fw, (rel, var, tap) in drift.items()))
    lines.append(f"time: {report.seconds:.0f} s for {len(report.verdicts)} variant(s)")
    return "\n".join(lines) + "\n"


def plot_report(report: VerifyReport) -> compare.Report | None:
    """The variant to plot (`--plot`): the one whose drift is largest against its tolerance, as a
    check report of each framework today against its stored taps; None when nothing ran."""
    ran = [v for v in report.verdicts if v.taps]
    if not ran:
        return None
    v = max(ran, key=lambda v: max(_of_tol(r) for r in v.taps))
    return compare.Report("golden verify", v.variant, v.frameworks, settings_for(get(v.variant)),
                          compare.TOLERANCES["float32"], v.taps)


def command_line(argv: Sequence[str] | None = None) -> str:
    return "equiv " + " ".join(sys.argv[1:] if argv is None else argv)
