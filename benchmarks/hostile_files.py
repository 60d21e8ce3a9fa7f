"""Crafted weight files against the installed command line: exit status, time, peak memory.

Makes each hostile file of issue 12 (the readers' half) in a temporary folder, from valid
files of torchvision/resnet18, and runs `python -m equiv.cli port torchvision/resnet18 --from FILE --to
OUT -q` under `/usr/bin/time -v`. Target: exit 2 within 10 s and under 1 GB, one line on
stderr, no output written, no byte of the planted secret anywhere.

    python benchmarks/hostile_files.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from equiv import canonical as C  # noqa: E402
from equiv import files  # noqa: E402
from equiv import variants as V  # noqa: E402
from tests import fuzzing as F  # noqa: E402

R18 = V.get("torchvision/resnet18")


def make(folder: Path) -> dict[str, Path]:
    """name -> the crafted file (a TF checkpoint: its prefix)."""
    params = {k: np.full(s, 0.5, np.float32) for k, s in C.param_shapes(R18).items()}
    valid = folder / "valid"
    valid.mkdir()
    h5 = valid / "r18.h5"
    F.write_keras2_h5(h5, params, R18)
    weights_h5 = valid / "r18.weights.h5"
    files.write(params, weights_h5, R18)
    st = valid / "r18.safetensors"
    files.write(params, st, R18)
    pt = valid / "r18.pt"
    files.write(params, pt, R18)
    ckpt = valid / "r18.ckpt"
    files.write(params, ckpt, R18)
    secret = folder / "secret.env"
    secret.write_bytes(F.SECRET * 100_000)

    out: dict[str, Path] = {}

    def copy(src: Path, name: str) -> Path:
        (folder / name).mkdir()
        if src.name.endswith(".ckpt"):
            return F.copy_case("tf-checkpoint", src, folder / name)
        return Path(shutil.copy(src, folder / name / src.name))

    out["h5: external raw storage (a local secret)"] = p = copy(h5, "ext")
    F.h5_external_storage(p, secret, 3)
    out["h5: external link"] = p = copy(h5, "link")
    F.h5_external_link(p, folder / "link" / "other.h5", 3)
    out["h5: virtual dataset"] = p = copy(h5, "vds")
    F.h5_virtual(p, folder / "vds" / "other.h5", 3)
    out["h5: soft link out of model_weights"] = p = copy(h5, "soft")
    F.h5_soft_link_out(p, 3)
    out["h5: an int64 dataset"] = p = copy(h5, "h5int")
    F.h5_retype(p, "int64", 3)
    out[".weights.h5: unallocated 2**31-element dataset"] = p = copy(weights_h5, "unalloc")
    F.h5_huge(p, 3, 2**31)
    out["safetensors: sparse, 4 GB declared"] = p = folder / "sparse.safetensors"
    F.safetensors_declaring(p, "stage1/unit1/conv1/kernel", [2**30])
    out["safetensors: 99 MB header"] = p = folder / "header.safetensors"
    header = json.dumps({f"x{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                         for i in range(1_400_000)}).encode()
    p.write_bytes(len(header).to_bytes(8, "little") + header)
    out["safetensors: cut short"] = p = copy(st, "cut")
    os.truncate(p, p.stat().st_size // 2)
    out["safetensors: I32 tensor"] = p = copy(st, "stint")
    F.safetensors_retype(p, "I32", 3)
    for label, shape in (("[-1]", [-1]), ("[2**31]*3", [2**31] * 3)):
        out[f"TF index: shape {label}"] = p = copy(ckpt, f"tf{len(shape)}")
        F.rewrite_index(p, F._index_shape(shape))
    out["TF index: DT_INT32 over float bytes"] = p = copy(ckpt, "tfint")
    F.rewrite_index(p, F._index_dtype)
    out["torch: deflate bomb, 4 GB declared"] = p = copy(pt, "bomb")
    F.zip_bomb(p, 4)
    out["torch: int32 tensor"] = p = copy(pt, "ptint")
    F.torch_retype(p, 3)
    return out


def run(path: Path, target: Path) -> dict:
    # as a user runs it: without a TF_CPP_MIN_LOG_LEVEL of their own, equiv keeps TensorFlow quiet
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "equiv.cli", "port", R18.name, "--from",
                        str(path), "--to", str(target), "-q"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    status = re.search(r"Exit status: (\d+)", r.stderr)
    err = [line for line in r.stderr[: r.stderr.find("\tCommand being timed")].splitlines()
           if line.strip() and not line.startswith("Command exited with non-zero status")]  # /usr/bin/time's
    ours = [line for line in err if line.startswith("equiv: ")]
    return {"exit": int(status.group(1)) if status else r.returncode, "seconds": round(wall, 2),
            "peak_mb": round(peak / 2**20), "equiv_lines": ours, "other_stderr_lines": len(err) - len(ours),
            "output_written": target.exists(), "secret_shown": F.SECRET[:12].decode() in r.stdout + r.stderr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        crafted = make(Path(tmp))
        rows = {name: run(path, Path(tmp) / "out.safetensors") for name, path in crafted.items()}
    load = os.getloadavg()
    data = {"command": "python benchmarks/hostile_files.py", "machine": platform.platform(),
            "cpus": os.cpu_count(), "load_1min": round(load[0], 2), "cases": rows}
    out = Path(args.out)
    (out / "hostile_files.json").write_text(json.dumps(data, indent=2) + "\n")
    ok = sum(r["exit"] == 2 and r["seconds"] < 10 and r["peak_mb"] < 1024 and len(r["equiv_lines"]) == 1
             and not r["output_written"] and not r["secret_shown"] for r in rows.values())
    noisy = sum(r["other_stderr_lines"] > 0 for r in rows.values())
    lines = ["# Crafted weight files against `equiv port`", "",
             f"`{data['command']}` on {data['machine']}, {data['cpus']} CPUs, load {data['load_1min']} "
             f"(shared machine): {ok} of {len(rows)} within target (exit 2, < 10 s, < 1 GB, one `equiv:` line "
             f"on stderr, nothing written, no byte of the secret shown); other lines on stderr (a framework's "
             f"own logging) in {noisy}.", "",
             "Each: `python -m equiv.cli port torchvision/resnet18 --from FILE --to out.safetensors -q` under "
             "`/usr/bin/time -v` (time includes starting Python and importing what the format needs).", "",
             "| crafted file | exit | seconds | peak MB | other lines | written | equiv's error |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, r in rows.items():
        msg = " / ".join(r["equiv_lines"]) or "(none)"
        msg = re.sub(r"/tmp/\S+?/", "…/", msg).replace("|", "\\|")
        lines.append(f"| {name} | {r['exit']} | {r['seconds']} | {r['peak_mb']} | {r['other_stderr_lines']} | "
                     f"{'yes' if r['output_written'] else 'no'} | `{msg}` |")
    (out / "hostile_files.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
