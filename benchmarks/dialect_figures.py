"""Issue 17's figures: each library's 50-layer ResNet against equiv's builds, and ports between dialects.

1. Each library's own ResNet-50 (its random initialisation, BatchNorm statistics drawn too), 97x131,
   batch 2: its own forward, tapped through hooks on its own submodules, against equiv's builds of the
   same description in TF-slim, Keras and PyTorch with the library's parameters, at every mapped tap.
   torchvision, timm and transformers import only in the torchvision stage's venv, which has no
   TensorFlow, so that part runs in two steps:

       .venv-torch214/bin/python benchmarks/dialect_figures.py dump /tmp/libs.npz      # the libraries
       .venv/bin/python benchmarks/dialect_figures.py compare /tmp/libs.npz             # + keras-hub, equiv

2. `equiv port` of the 50-layer model between two dialects (Hugging Face's model.safetensors -> timm's
   state_dict, and back) against the bare read + write of the same tensors (safetensors.numpy.load_file
   + torch.save; torch.load + safetensors save_file), in fresh processes, alternating, medians, equiv's
   bytecode compiled (as installed; PYTHONDONTWRITEBYTECODE dropped for the workers):

       .venv/bin/python benchmarks/dialect_figures.py port [--rounds 5]

3. The same for ports to and from a Keras 3 `.weights.h5`, which equiv reads and writes with h5py
   (equiv.keras_h5): Hugging Face's model.safetensors -> keras-hub's ResNetImageClassifier file and
   back, and a torch `.pt` of keras.applications' ResNet50 (equiv's torch names) -> its `.weights.h5`.
   Bare: the same tensors read (safetensors.numpy.load_file, torch.load, h5py datasets) and written
   (h5py datasets one per tensor, safetensors.numpy.save_file); and that with the layout change such a
   port must make (torch's OIHW and (out, in) kernels to Keras' HWIO and (in, out), by numpy's
   transpose, or back) and an fsync of the file and its folder, as equiv's atomic publish makes:

       .venv/bin/python benchmarks/dialect_figures.py keras-port [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SIZE, BATCH = (97, 131), 2
LIBRARIES = ("torchvision", "timm", "hf")


def dump(out: str) -> None:
    import torch

    from equiv import variants, weights
    from equiv.frameworks import adapter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_torchvision import _dialect_module, _dialect_taps

    v = variants.get("torchvision/resnet50")
    x = weights.random_input(v, BATCH, *SIZE, 0)
    arrays = {"x": x}
    ad = adapter("torch")
    torch.manual_seed(0)
    for lib in LIBRARIES:
        model = _dialect_module(lib, v)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
        params = ad.state_dict_params(v.in_dialect(lib), model.state_dict())
        taps = _dialect_taps(lib, v, model, x)
        arrays.update({f"{lib}/param/{k}": a for k, a in params.items()})
        arrays.update({f"{lib}/tap/{k}": a for k, a in taps.items()})
        arrays[f"{lib}/built_by"] = np.array(f"{type(model).__module__}.{type(model).__qualname__}")
    np.savez(out, **arrays)
    print(f"wrote {out}")


def _keras_hub(v, x) -> tuple[dict, dict, str]:
    """keras-hub's own ResNet-50 classifier (random initialisation), its parameters and taps."""
    from equiv.frameworks import adapter

    vh = v.in_dialect("keras-hub")
    ad = adapter("keras")
    model = ad.build(vh)
    rng = np.random.default_rng(0)
    params = ad.export_params(vh, model)
    for k in params:  # BatchNorm statistics drawn, as the torch libraries'
        if k.endswith("moving_mean"):
            params[k] = rng.uniform(-0.5, 0.5, params[k].shape).astype(np.float32)
        elif k.endswith("moving_variance"):
            params[k] = rng.uniform(0.5, 2.0, params[k].shape).astype(np.float32)
    ad.load_params(vh, model, params)
    return params, ad.run(vh, model, x), f"{type(model).__module__}.{type(model).__qualname__}"


def compare(path: str) -> None:
    from equiv import canonical as C
    from equiv import compare as K
    from equiv import variants
    from equiv.frameworks import adapter, loaded

    data = np.load(path)
    v = variants.get("torchvision/resnet50")
    x = data["x"]
    tol = K.tap_tolerances(v)
    libs = {}
    for lib in LIBRARIES:
        params = {k.split("/param/", 1)[1]: data[k] for k in data.files if k.startswith(f"{lib}/param/")}
        taps = {k.split("/tap/", 1)[1]: data[k] for k in data.files if k.startswith(f"{lib}/tap/")}
        libs[lib] = (params, taps, str(data[f"{lib}/built_by"]))
    libs["keras-hub"] = _keras_hub(v, x)
    rows = []
    for lib, (params, taps, built_by) in libs.items():
        worst = {}
        for fw in ("slim", "keras", "torch"):
            with loaded(fw, v, params, reference=False) as model:
                ours = adapter(fw).run(v, model, x)
            rel, frac, where = 0.0, 0.0, ""
            for tap in C.tap_names(v):
                a, b = taps[tap], ours[tap]
                r = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
                if r / tol[tap] > frac:
                    rel, frac, where = r, r / tol[tap], tap
            worst[fw] = {"worst_rel": rel, "of_tolerance": frac, "at": where}
        rows.append({"library": lib, "built_by": built_by, "taps": len(C.tap_names(v)), "equiv": worst})
        w = max(worst.values(), key=lambda r: r["of_tolerance"])
        print(f"{lib:12s} {built_by:60s} worst {w['worst_rel']:.2e} ({w['of_tolerance']:.2f} of tolerance) at "
              f"{w['at']}; " + ", ".join(f"{fw} {r['worst_rel']:.1e}" for fw, r in worst.items()))
    print(json.dumps(rows))


PORT_WORKER = r"""
import json, sys, time, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, torch
from safetensors.numpy import load_file, save_file
mode, src, dst = sys.argv[1:4]
import equiv, equiv.porting, equiv.files, equiv.frameworks.torch  # imports are not the work
def durable(path):  # what equiv's atomic publish adds: the file's data and its folder's entry on disk
    for p, flags in ((path, os.O_RDONLY), (os.path.dirname(path), os.O_RDONLY)):
        fd = os.open(p, flags)
        os.fsync(fd)
        os.close(fd)
t0 = time.perf_counter()
if mode.startswith("bare-hf-to-timm"):
    state = load_file(src)
    torch.save({k: torch.from_numpy(a) for k, a in state.items()}, dst)
elif mode == "equiv-hf-to-timm":
    equiv.port("torchvision/resnet50", src, dst, source_dialect="hf", target_dialect="timm", force=True)
elif mode.startswith("bare-timm-to-hf"):
    state = torch.load(src, weights_only=True)
    save_file({k: t.numpy() for k, t in state.items()}, dst)
else:
    equiv.port("torchvision/resnet50", src, dst, source_dialect="timm", target_dialect="hf", force=True)
if mode.endswith("-fsync"):
    durable(dst)
print(json.dumps({"mode": mode, "seconds": time.perf_counter() - t0}))
"""


def port(rounds: int) -> None:
    from equiv import files, variants, weights

    v = variants.get("torchvision/resnet50")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "hf").mkdir()
        (tmp / "out").mkdir()
        hf, tm = tmp / "hf" / "model.safetensors", tmp / "timm.pt"
        params = weights.random_params(v, 0)
        files.write(params, hf, v.in_dialect("hf"))
        files.write(params, tm, v.in_dialect("timm"))
        rows = []
        # As an installed equiv runs: its bytecode compiled once, not in every process (a shell with
        # PYTHONDONTWRITEBYTECODE=1 made each port compile equiv's modules afresh: 0.15-0.3 s of a 0.6 s port).
        root = Path(__file__).resolve().parents[1]
        env = {k: a for k, a in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = str(root)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "equiv")], check=True, env=env)
        for _ in range(rounds):
            for mode, src, dst in (("bare-hf-to-timm", hf, tmp / "bare.pt"), ("equiv-hf-to-timm", hf, tmp / "e.pt"),
                                   ("bare-hf-to-timm-fsync", hf, tmp / "bare.pt"),
                                   ("bare-timm-to-hf", tm, tmp / "bare.safetensors"),
                                   ("equiv-timm-to-hf", tm, tmp / "out" / "model.safetensors"),
                                   ("bare-timm-to-hf-fsync", tm, tmp / "bare.safetensors")):
                r = subprocess.run([sys.executable, "-c", PORT_WORKER, mode, str(src), str(dst)], capture_output=True,
                                   text=True, env=env)
                if r.returncode:
                    raise SystemExit(r.stderr[-2000:])
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = {m: statistics.median(r["seconds"] for r in rows if r["mode"] == m) for m in {r["mode"] for r in rows}}
    for pair in ("hf-to-timm", "timm-to-hf"):
        e, b, bf = med["equiv-" + pair], med["bare-" + pair], med["bare-" + pair + "-fsync"]
        print(f"{pair}: equiv {e:.2f}s, bare {b:.2f}s, ratio {e / b:.2f}x; bare + fsync {bf:.2f}s, ratio "
              f"{e / bf:.2f}x (median of {rounds})")
    print(f"load: {os.getloadavg()}")


KERAS_PORT_WORKER = r"""
import json, sys, time, os
import numpy as np, h5py, torch
from safetensors.numpy import load_file, save_file
mode, src, dst = sys.argv[1:4]
import equiv, equiv.porting, equiv.files, equiv.keras_h5, equiv.frameworks.torch  # imports are not the work
import equiv.families.resnet.keras_layout, equiv.dialects


def h5_write(state, path):
    with h5py.File(path, "w") as f:
        for k, a in state.items():
            f.create_dataset(k.replace("/", "."), data=a)


def h5_read(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def to_keras(state):  # the layout change a port between torch's and Keras' names must make, by numpy
    return {k: np.ascontiguousarray(a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a)
            for k, a in state.items()}


def to_torch(state):
    return {k: np.ascontiguousarray(a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T if a.ndim == 2 else a)
            for k, a in state.items()}


def durable(path):  # what equiv's atomic publish adds: the file's data and its folder's entry on disk
    for p in (path, os.path.dirname(path)):
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


t0 = time.perf_counter()
if mode == "bare-hf-to-keras-hub-layout":
    h5_write(to_keras(load_file(src)), dst)
elif mode == "bare-keras-hub-to-hf-layout":
    save_file(to_torch(h5_read(src)), dst)
elif mode == "bare-pt-to-keras-layout":
    h5_write(to_keras({k: t.numpy() for k, t in torch.load(src, weights_only=True).items()}), dst)
elif mode == "bare-hf-to-keras-hub":
    h5_write(load_file(src), dst)
elif mode == "equiv-hf-to-keras-hub":
    equiv.port("torchvision/resnet50", src, dst, source_dialect="hf", target_dialect="keras-hub", force=True)
elif mode == "bare-keras-hub-to-hf":
    save_file(h5_read(src), dst)
elif mode == "equiv-keras-hub-to-hf":
    equiv.port("torchvision/resnet50", src, dst, source_dialect="keras-hub", target_dialect="hf", force=True)
elif mode == "bare-pt-to-keras":
    h5_write({k: t.numpy() for k, t in torch.load(src, weights_only=True).items()}, dst)
else:
    equiv.port("keras/ResNet50", src, dst, force=True)
if mode.endswith("-layout"):
    durable(dst)
print(json.dumps({"mode": mode, "seconds": time.perf_counter() - t0,
                  "keras_imported": "keras" in sys.modules or "tensorflow" in sys.modules}))
"""


def keras_port(rounds: int) -> None:
    from equiv import files, variants, weights

    v = variants.get("torchvision/resnet50")
    k = variants.get("keras/ResNet50")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for d in ("hf", "out"):
            (tmp / d).mkdir()
        hf, hub, pt = tmp / "hf" / "model.safetensors", tmp / "hub.weights.h5", tmp / "k.pt"
        params = weights.random_params(v, 0)
        files.write(params, hf, v.in_dialect("hf"))
        files.write(params, hub, v.in_dialect("keras-hub"))
        files.write(weights.random_params(k, 0), pt, k)
        root = Path(__file__).resolve().parents[1]
        env = {k: a for k, a in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = str(root)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "equiv")], check=True, env=env)
        rows = []
        for _ in range(rounds):
            for mode, src, dst in (("bare-hf-to-keras-hub", hf, tmp / "bare.h5"),
                                   ("equiv-hf-to-keras-hub", hf, tmp / "e.weights.h5"),
                                   ("bare-keras-hub-to-hf", hub, tmp / "bare.safetensors"),
                                   ("equiv-keras-hub-to-hf", hub, tmp / "out" / "model.safetensors"),
                                   ("bare-pt-to-keras", pt, tmp / "bare2.h5"),
                                   ("equiv-pt-to-keras", pt, tmp / "k.weights.h5"),
                                   ("bare-hf-to-keras-hub-layout", hf, tmp / "bare.h5"),
                                   ("bare-keras-hub-to-hf-layout", hub, tmp / "bare.safetensors"),
                                   ("bare-pt-to-keras-layout", pt, tmp / "bare2.h5")):
                r = subprocess.run([sys.executable, "-c", KERAS_PORT_WORKER, mode, str(src), str(dst)],
                                   capture_output=True, text=True, env=env)
                if r.returncode:
                    raise SystemExit(r.stderr[-2000:])
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = {m: statistics.median(r["seconds"] for r in rows if r["mode"] == m) for m in {r["mode"] for r in rows}}
    keras = sorted({r["mode"] for r in rows if r["keras_imported"]})
    for pair in ("hf-to-keras-hub", "keras-hub-to-hf", "pt-to-keras"):
        e, b, bl = med["equiv-" + pair], med["bare-" + pair], med["bare-" + pair + "-layout"]
        print(f"{pair}: equiv {e:.2f}s, bare {b:.2f}s, ratio {e / b:.2f}x; bare + the layout change + fsync "
              f"{bl:.2f}s, ratio {e / bl:.2f}x (median of {rounds})")
    print(f"Keras or TensorFlow imported by: {keras or 'none'}")
    print(f"load: {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("dump").add_argument("out")
    sub.add_parser("compare").add_argument("path")
    sub.add_parser("port").add_argument("--rounds", type=int, default=5)
    sub.add_parser("keras-port").add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "dump":
        dump(args.out)
    elif args.cmd == "compare":
        compare(args.path)
    elif args.cmd == "keras-port":
        keras_port(args.rounds)
    else:
        port(args.rounds)


if __name__ == "__main__":
    main()
