"""Did the export change my network? The worst difference of each case that the tests check, by exporter
(tests/onnx_exports.py: torchscript-eval, torchscript-preserve, dynamo-optimize, dynamo-plain): the module's
own forward (PyTorch) against its `torch.onnx.export` (ONNX Runtime) at every tap, and the exported file
against the variant built natively in torch with the file's weights. Seeded weights, batch 2.

    PYTHONPATH=. python benchmarks/onnx_exports.py [--skip-slow] [--markdown FILE]    # .venv: equiv's modules
    PYTHONPATH=. .venv-torch214/bin/python benchmarks/onnx_exports.py --timm          # real timm resnet18/50

Prints one Markdown row per case and exporter: taps compared, the worst relative error and the worst as a
fraction of its tap's tolerance (and where), the folded layers, the parameters compared one by one.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from equiv import variants, weights  # noqa: E402
from equiv.frameworks import onnx_export  # noqa: E402
from equiv.frameworks import torch as T  # noqa: E402
from equiv.testing import assert_equivalent  # noqa: E402
from tests import onnx_exports as X  # noqa: E402


def worst(report) -> str:
    w = max(report.taps, key=lambda r: r.rel / r.tol)
    return f"{max(r.rel for r in report.taps):.2g} | {w.rel / w.tol:.2f} ({w.name})"


def held(report) -> str:
    return next((n.split("as held: ")[1].split(";")[0] for n in report.notes if "as held: " in n), "-")


def cases(a):
    """(label, variant, module, size, wrapped, compare the file against the variant too)."""
    if a.timm:
        import timm

        for name, slow in (("resnet18", False), ("resnet50", True)):
            if slow and a.skip_slow:
                continue
            v = variants.get(f"torchvision/{name}")
            ours = T.build(v)
            T.load_params(v, ours, weights.random_params(v, 0))
            real = timm.create_model(name, pretrained=False).eval()
            real.load_state_dict(ours.state_dict(), strict=True)
            yield f"timm.{name} (as {v.name})", v, real, (64, 64), False, True
        return
    from tests.test_onnx_export_families import CASES

    v = variants.get("torchvision/resnet18")
    m = T.build(v)
    T.load_params(v, m, weights.random_params(v, 0))
    yield "equiv torchvision/resnet18", v, m.eval(), (32, 32), True, True
    for case, (name, change, size, slow) in CASES.items():
        if slow and a.skip_slow:
            continue
        v = variants.get(name).replace(**change)
        m = T.build(v)
        T.load_params(v, m, weights.random_params(v, 0))
        yield f"{case} ({name}, as the tests change it)", v, m.eval(), (size, size), True, False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timm", action="store_true", help="real timm modules (needs timm: .venv-torch214)")
    ap.add_argument("--skip-slow", action="store_true", help="as the default test run: no Inception, no resnet50")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    lines = ["| module | exporter | taps | worst rel | worst of tol (tap) | file vs variant: worst of tol | folded "
             "| params as held |", "|---|---|---:|---:|---|---|---:|---|"]
    t0, load0 = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for label, v, module, size, wrapped, file_too in cases(a):
            for mode in X.EXPORTERS:
                proto = X.export(module, size, mode, wrapped=wrapped)
                reading = onnx_export.read(v, proto)
                r = assert_equivalent(module, proto, variant=v, input_size=size, batch=2)
                vs = "-"
                if file_too:
                    path = pathlib.Path(tmp) / "export.onnx"
                    import onnx

                    onnx.save_model(proto, str(path))
                    f = assert_equivalent(str(path), v.name, input_size=size, batch=2)
                    vs = worst(f).split(" | ")[1]
                lines.append(f"| {label} | {mode} | {len(r.taps)} | {worst(r)} | {vs} | {len(reading.folded)} "
                             f"| {held(r)} |")
                print(lines[-1], flush=True)
    tail = (f"\n{time.time() - t0:.0f} s, load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after "
            f"({os.cpu_count()} cores)\n")
    print(tail)
    if a.markdown:
        pathlib.Path(a.markdown).write_text("\n".join(lines) + "\n" + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
