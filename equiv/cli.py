"""The `equiv` command line. Exit 0: equivalent; 1: not equivalent; 2: usage or input error."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from equiv.frameworks import FRAMEWORKS

EXIT_OK, EXIT_DIFFERENT, EXIT_USAGE = 0, 1, 2
ALL = ",".join(FRAMEWORKS)
# Errors name the Python arguments of the API in backticks (`batch=0`, `force=True`); here they
# become the flags that set them.
FLAGS = {"batch": "--batch", "batches": "--batch", "input_size": "--input-size", "seed": "--seed", "force": "--force",
         "num_classes": "--num-classes", "drop_background_class": "--drop-background", "headless": "--headless",
         "source_headless": "--from-headless", "allow_pickle": "--allow-pickle",
         "device": "--device", "source": "--from", "target": "--to", "source_format": "--from-format",
         "target_format": "--to-format", "format": "--format", "frameworks": "--frameworks", "framework": "--framework",
         "dialect": "--dialect", "source_dialect": "--from-dialect", "target_dialect": "--to-dialect",
         "unfold_bn": "--unfold-bn"}
_ARGUMENT = re.compile(r"`(\w+)(?:=([^`]*))?`")


def as_flags(message: str) -> str:
    """An API error as the command line says it: `num_classes=10` -> --num-classes 10, `force=True`
    -> --force, `input_size=(5, 6)` -> --input-size 5 6; other backticked names stay as they are."""
    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in FLAGS:
            return m.group(0)
        if value is None or value == "True":
            return FLAGS[name]
        value = value.strip("'\"")
        if value.startswith("(") and value.endswith(")"):
            value = " ".join(part.strip() for part in value[1:-1].split(",") if part.strip())
        return f"{FLAGS[name]} {value}"
    return _ARGUMENT.sub(flag, message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other input error
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_ALLOW_PICKLE = ("read a torch file that loads only by unpickling (a whole pickled model): this runs code from "
                 "the file, so only for files you trust; a warning names the file")
_UNFOLD_BN = ("an ONNX graph exported by torch.onnx.export with BatchNorm folded into the convs (the TorchScript "
              "exporter in eval mode; the dynamo exporter with its optimizer, its default), refused without this: "
              "{verb} each folded conv as the conv and an identity BatchNorm holding the folded bias")


def _integer(least: int, says: str):
    """An argparse type: an integer of at least `least`, else an error that `says` what it must be."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be {says}: {n}")
        return n
    return parse


_size = _integer(1, "positive")
_seed = _integer(0, "a non-negative integer")


class _Version(argparse.Action):
    """`equiv --version`: equiv's version, then each registered backend's versions or why it is unusable."""

    def __call__(self, parser, namespace, values, option_string=None):
        from equiv import __version__
        from equiv.frameworks import module
        from equiv.quiet import quiet

        lines = [f"equiv {__version__}"]
        with quiet():  # importing each framework to ask its version logs nothing
            for name in FRAMEWORKS:
                mod = module(name)
                why = mod.available()
                found = (", ".join(f"{k} {v}" for k, v in mod.versions().items()) if why is None
                         else f"not usable: {why}")
                lines.append(f"  {name}: {found}")
        print("\n".join(lines))
        parser.exit(EXIT_OK)


def _progress(enabled: bool):
    if not enabled:
        return None
    return lambda msg: print(f"[equiv] {msg}", file=sys.stderr, flush=True)


def _emit(report, args) -> int:
    from equiv import report as R

    print(R.to_text(report, color=sys.stdout.isatty()), end="")
    if args.json:
        R.write_atomic(args.json, R.to_json_text(report, timings=args.timings), force=args.force)
    if getattr(args, "markdown", None):
        R.write_atomic(args.markdown, R.to_markdown(report), force=args.force)
    if getattr(args, "plot", None):
        from equiv.plot import write_plot

        write_plot(report, args.plot, force=args.force)
    if getattr(args, "strict", False) and report.equivalent and report.uninformative:
        print("equiv: error: --strict: uninformative taps prove nothing (above)", file=sys.stderr)
        return EXIT_DIFFERENT
    return EXIT_OK if report.equivalent else EXIT_DIFFERENT


def cmd_variants(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from equiv import canonical, variants
    from equiv import preprocessing as P
    from equiv import report as R

    table = Table(title="registered variants")
    for col in ("name", "native", "parameters", "input its weights expect", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for v in variants.all_variants():
        table.add_row(v.name, v.native, f"{canonical.param_count(v):,}", P.of_variant(v).describe(), v.description)
    Console(width=max(140, Console().width)).print(table)
    if args.json:
        listed = [{"name": v.name, "native": v.native, "parameters": canonical.param_count(v),
                   "reference": v.reference, "description": v.description,
                   "preprocessing": P.of_variant(v).to_json()} for v in variants.all_variants()]
        R.write_atomic(args.json, json.dumps(listed, indent=2) + "\n", force=args.force)
    return EXIT_OK


def _input_size(args, variant) -> tuple[int, int]:
    """--input-size, else the variant's only size (a flattened head fixes it), else the default."""
    if args.input_size:
        return tuple(args.input_size)
    from equiv.variants import get

    return tuple(get(variant).input_size or args.default_size)


def _plot_usable(args) -> None:
    """Refuse --plot before a long run, not after it, when matplotlib is missing."""
    if getattr(args, "plot", None):
        from equiv.errors import EquivError
        from equiv.plot import available

        why = available()
        if why:
            raise EquivError(f"--plot: {why}")


def _raw_images(args):
    """--raw-images: False, True (seeded images) or the uint8 batch of its .npy file, read from its
    header first (equiv.inputs); the file's shape then sets the batch and input size."""
    if args.raw_images in (None, True):
        return bool(args.raw_images)
    from equiv.errors import EquivError
    from equiv.frameworks import parse_frameworks
    from equiv.inputs import read_npy
    from equiv.variants import get

    v = get(args.variant)
    raw = read_npy(args.raw_images, v, parse_frameworks(args.frameworks)[0], dtype="uint8")
    if args.input_size and tuple(args.input_size) != raw.shape[1:3]:
        raise EquivError(f"--raw-images {args.raw_images} holds {raw.shape[1]}x{raw.shape[2]} images; "
                         f"--input-size {args.input_size[0]} {args.input_size[1]} differs (leave it out)")
    return raw


def cmd_check(args) -> int:
    from equiv.checking import check

    _plot_usable(args)
    raw = _raw_images(args)
    report = check(args.variant, args.frameworks, input_size=_input_size(args, args.variant), batch=args.batch,
                   seed=args.seed, isolated=args.isolated, raw_images=raw, dialect=args.dialect,
                   progress=_progress(not args.quiet))
    return _emit(report, args)


def cmd_diff(args) -> int:
    from equiv.checking import diff

    _plot_usable(args)
    report = diff(args.variant_a, args.variant_b, args.framework, input_size=_input_size(args, args.variant_a),
                  batch=args.batch, seed=args.seed)
    return _emit(report, args)


def cmd_port(args) -> int:
    import json

    from equiv import report as R
    from equiv.porting import port

    result = port(args.variant, args.source, args.target, source_format=args.from_format,
                  target_format=args.to_format, num_classes=args.num_classes,
                  drop_background_class=args.drop_background, verify=args.verify, force=args.force,
                  dialect=args.dialect, source_dialect=args.from_dialect, target_dialect=args.to_dialect,
                  seed=args.seed, input_size=tuple(args.input_size) if args.input_size else None, batch=args.batch,
                  allow_pickle=args.allow_pickle, unfold_bn=args.unfold_bn, headless=args.headless,
                  source_headless=args.from_headless,
                  progress=_progress(not args.quiet))
    print(f"wrote {', '.join(result.written)} ({result.target_format}) from {result.source} "
          f"({result.source_format}) in {sum(result.timings.values()):.1f}s")
    print(result.preprocessing["line"])
    if result.report is not None:
        print(R.to_text(result.report, color=sys.stdout.isatty()), end="")
    if args.json:
        R.write_atomic(args.json, json.dumps(result.to_json(timings=args.timings), indent=2) + "\n", force=args.force)
    return EXIT_OK if result.report is None or result.report.equivalent else EXIT_DIFFERENT


def cmd_run(args) -> int:
    from equiv import report as R
    from equiv.inputs import read_npy
    from equiv.porting import npz_bytes, run_file
    from equiv.variants import get

    x = read_npy(args.input, get(args.variant, args.num_classes, args.dialect), args.framework)
    taps_arg = args.taps if args.taps in ("logits", "all") else args.taps.split(",")
    taps = run_file(args.variant, args.weights, args.framework, x, taps_arg, format=args.format,
                    num_classes=args.num_classes, dialect=args.dialect, allow_pickle=args.allow_pickle,
                    unfold_bn=args.unfold_bn)
    R.write_atomic(args.output, npz_bytes(taps), force=args.force)
    print(f"wrote {len(taps)} tap(s) to {args.output}")
    return EXIT_OK


def cmd_bench(args) -> int:
    import json

    from equiv import report as R
    from equiv.bench import bench, to_markdown, to_text

    result = bench(args.variant, args.frameworks, batches=args.batch, input_size=tuple(args.input_size),
                   device=args.device, dtype=args.dtype, channels_last=args.channels_last,
                   paths=[p for p, on in (("compile", args.compile), ("xla", args.xla)) if on],
                   best=args.best, repeats=args.repeats, progress=_progress(not args.quiet))
    print(to_text(result), end="")
    command = "equiv " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    if args.json:
        R.write_atomic(args.json, json.dumps({"command": command, **result.to_json()}, indent=2) + "\n",
                       force=args.force)
    if args.markdown:
        R.write_atomic(args.markdown, to_markdown(result, command), force=args.force)
    return EXIT_OK


def cmd_golden_verify(args) -> int:
    import json

    from equiv import golden
    from equiv import report as R

    _plot_usable(args)
    result = golden.verify(args.variants, args.frameworks, args.fixtures or golden.DEFAULT_DIR,
                           progress=_progress(not args.quiet))
    print(golden.to_text(result), end="")
    if args.json:
        R.write_atomic(args.json, json.dumps(result.to_json(), indent=2) + "\n", force=args.force)
    if args.plot:
        chosen = golden.plot_report(result)
        if chosen is None:
            print(f"equiv: no plot written to {args.plot}: no variant could be compared", file=sys.stderr)
        else:
            from equiv.plot import write_plot

            write_plot(chosen, args.plot, force=args.force)
            print(f"plot: {args.plot} ({chosen.variant}, the largest drift against its tolerance)")
    problems = [v for v in result.verdicts if v.status in golden.PROBLEMS]
    if problems:
        print(f"equiv: error: {len(problems)} variant(s) without a usable golden file: "
              + ", ".join(v.variant for v in problems), file=sys.stderr)
    return result.exit_status


def cmd_golden_update(args) -> int:
    from equiv import golden

    changes = golden.update(args.variants, args.fixtures or golden.DEFAULT_DIR, command=golden.command_line(),
                            progress=_progress(not args.quiet), frameworks=args.frameworks)
    for c in changes:
        print(c.line())
    counts = {s: sum(c.status == s for c in changes) for s in ("new", "changed", "unchanged")}
    print("summary: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return EXIT_OK


# Options shared by several commands, each defined once.

_REPORTS = {"json": "also write the report as JSON", "markdown": "also write the report as Markdown",
            "plot": "also write a PNG plot of the relative error per tap, with the tolerance (needs matplotlib)"}


def _terminal(s, *, progress: bool = True) -> None:
    """-q (no progress lines) where a command has progress to report, and -v everywhere."""
    if progress:
        s.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="also show the frameworks' own log lines and warnings on stderr (hidden by default)")


def _outputs(s, *reports: str, main: str | None = None, plot_help: str = "") -> None:
    """--json/--markdown/--plot FILE as asked, and --force, which replaces what exists of them (and `main`)."""
    for name in reports:
        s.add_argument(f"--{name}", metavar="FILE", help=_REPORTS[name] + (plot_help if name == "plot" else ""))
    named = ([main] if main else []) + [f"--{r}" for r in reports]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    s.add_argument("--force", action="store_true", help=f"replace {listed} if it exists")


def _frameworks(s, default_help: str = f"default {ALL}", default: str | None = ALL) -> None:
    s.add_argument("--frameworks", default=default, help=f"comma-separated ({default_help})")


def _run_settings(s, size) -> None:
    """The input and seed of a run: check, diff and port --verify."""
    s.add_argument("--input-size", nargs=2, type=_size, default=None, metavar=("H", "W"),
                   help=f"input height and width (default: the variant's only size if it has one, "
                        f"else {size[0]} {size[1]})")
    s.set_defaults(default_size=size)
    s.add_argument("--batch", type=_size, default=2, help="batch size (default 2)")
    s.add_argument("--seed", type=_seed, default=0, help="seed of the weights and the input (default 0)")
    s.add_argument("--timings", action="store_true",
                   help="also put the time of each phase and the peak memory in the JSON (they vary from run to "
                        "run; without them the JSON is byte-identical for the same command and seed)")


def _dialect(s, flag: str = "--dialect", what: str = "the variant's") -> None:
    from equiv import dialects

    s.add_argument(flag, choices=dialects.names(), metavar="DIALECT",
                   help=f"read {what} names and library code as this library's: {', '.join(dialects.names())} "
                        "(default: the variant's own)")


def build_parser() -> argparse.ArgumentParser:
    from equiv.checking import CHECK_SIZE, DIFF_SIZE
    from equiv.formats import NAMES, WRITABLE, choices_help
    from equiv.porting import VERIFY_SIZE

    p = _Parser(prog="equiv", description="Prove that a ResNet is the same network in TF-slim, Keras and PyTorch.")
    p.add_argument("--version", action=_Version, nargs=0, help="print equiv's version and each backend's, then exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("variants", help="list the registered variants and the input each one's weights expect")
    _outputs(s, "json")
    s.set_defaults(func=cmd_variants)

    s = sub.add_parser("check", help="check one variant across frameworks, tap by tap")
    s.add_argument("variant", help="a registered variant, e.g. slim/resnet_v2_50 (see `equiv variants`)")
    _frameworks(s)
    _run_settings(s, CHECK_SIZE)
    s.add_argument("--isolated", action="store_true",
                   help="also split each unit's error into what it made and what it inherited")
    s.add_argument("--raw-images", nargs="?", const=True, default=None, metavar="IMAGES.npy",
                   help="start from raw RGB uint8 images (seeded, or a NHWC uint8 .npy, whose shape sets --batch "
                        "and --input-size): each framework gets its own library's preprocessing of them "
                        "(keras.applications' preprocess_input, torchvision's Normalize, slim's VGG or Inception "
                        "convention), compared first as the tap 'input'; where the conventions differ (BGR "
                        "against RGB) the check fails there and names both")
    s.add_argument("--strict", action="store_true",
                   help="also exit 1 when a tap is uninformative: all zero or constant per channel on the "
                        "reference side, so its match proves nothing (the table marks such taps)")
    _dialect(s)
    _outputs(s, "json", "markdown", "plot")
    _terminal(s)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("diff", help="do two variants compute the same function with one set of weights?")
    s.add_argument("variant_a")
    s.add_argument("variant_b")
    s.add_argument("--framework", help="framework to run both in (default: variant_a's native one)")
    _run_settings(s, DIFF_SIZE)
    _outputs(s, "json", "markdown", "plot")
    _terminal(s, progress=False)
    s.set_defaults(func=cmd_diff)

    s = sub.add_parser("bench", help="images per second of each framework's build, against measured ceilings")
    s.add_argument("variant")
    _frameworks(s)
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--batch", type=_size, nargs="+", default=[16], help="one or more batch sizes (default 16)")
    s.add_argument("--input-size", nargs=2, type=_size, default=[224, 224], metavar=("H", "W"))
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (half types: PyTorch autocast only)")
    s.add_argument("--channels-last", action="store_true", help="PyTorch: channels_last memory format")
    s.add_argument("--compile", action="store_true", help="PyTorch: also time torch.compile (checked against plain)")
    s.add_argument("--xla", action="store_true", help="TF-slim and Keras: also time XLA (checked against plain)")
    s.add_argument("--best", action="store_true",
                   help="try every fast path of each framework, check each against the plain path, mark the fastest")
    s.add_argument("--repeats", type=_size, default=5, help="timed runs per measurement (median; default 5)")
    _outputs(s, "json", "markdown")
    _terminal(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("port", help="port a weight file to another framework's format")
    s.add_argument("variant")
    s.add_argument("--from", dest="source", required=True, metavar="FILE", help="the weight file to read")
    s.add_argument("--to", dest="target", required=True, metavar="FILE", help="the weight file to write")
    s.add_argument("--from-format", choices=NAMES, metavar="FORMAT",
                   help=f"format of --from: {choices_help()}; default: from the name or content")
    s.add_argument("--to-format", choices=WRITABLE, metavar="FORMAT",
                   help=f"format of --to: {choices_help(writable=True)}; default: from the name")
    s.add_argument("--num-classes", type=_size, help="classes of the head in the files (default: the variant's)")
    s.add_argument("--drop-background", action="store_true",
                   help="drop class 0 (slim's background) so a 1001-class head becomes 1000")
    s.add_argument("--headless", action="store_true",
                   help="write the network without its head (no pool, no classifier), as a backbone's file holds "
                        "it: with --to-dialect keras-hub, what keras-hub's ResNetBackbone.load_weights reads")
    s.add_argument("--from-headless", action="store_true",
                   help="--from is such a file (keras-hub's ResNetBackbone.save_weights); --to is written so too")
    s.add_argument("--verify", action="store_true",
                   help="load both files and compare every tap (exit 1 if not equivalent)")
    s.add_argument("--allow-pickle", action="store_true", help=_ALLOW_PICKLE)
    s.add_argument("--unfold-bn", action="store_true", help=_UNFOLD_BN.format(verb="write"))
    _dialect(s, what="both files'")
    _dialect(s, "--from-dialect", "--from's")
    _dialect(s, "--to-dialect", "--to's")
    _run_settings(s, VERIFY_SIZE)
    _outputs(s, "json", main="--to")
    _terminal(s)
    s.set_defaults(func=cmd_port)

    s = sub.add_parser("run", help="run a weight file in one framework on an input, write its taps")
    s.add_argument("variant")
    s.add_argument("--weights", required=True, metavar="FILE")
    s.add_argument("--format", choices=NAMES, metavar="FORMAT",
                   help=f"format of --weights: {choices_help()}; default: from the name or content")
    s.add_argument("--framework", required=True, choices=FRAMEWORKS)
    s.add_argument("--input", required=True, metavar="IN.npy", help="NHWC float32 array")
    s.add_argument("--output", required=True, metavar="OUT.npz")
    s.add_argument("--taps", default="logits", help="logits (default), all, or comma-separated tap names")
    s.add_argument("--num-classes", type=_size)
    s.add_argument("--allow-pickle", action="store_true", help=_ALLOW_PICKLE)
    s.add_argument("--unfold-bn", action="store_true", help=_UNFOLD_BN.format(verb="run"))
    _dialect(s, what="the weights'")
    _outputs(s, main="--output")
    _terminal(s, progress=False)
    s.set_defaults(func=cmd_run)

    g = sub.add_parser("golden", help="golden outputs in fixtures/: check today's frameworks against them, or rewrite")
    gsub = g.add_subparsers(dest="golden_command", required=True, parser_class=_Parser)

    def golden_common(s):
        s.add_argument("variants", nargs="*", metavar="VARIANT", help="registered variants (default: all)")
        s.add_argument("--fixtures", metavar="DIR", help="golden folder (default: fixtures/golden)")
        _terminal(s)

    s = gsub.add_parser("verify", help="compare each framework's taps today with its own stored taps")
    golden_common(s)
    _frameworks(s, f"default: all registered, {ALL}")
    _outputs(s, "json", "plot", plot_help=", of the variant whose drift is largest against its tolerance")
    s.set_defaults(func=cmd_golden_verify)

    s = gsub.add_parser("update", help="rewrite the golden files (Keras on TensorFlow) and say what changed")
    golden_common(s)
    _frameworks(s, "default: every registered framework, each file made anew; a subset remakes only those "
                   "frameworks' taps in the existing files and keeps the others' bit for bit (a new backend)",
                default=None)
    s.set_defaults(func=cmd_golden_update)
    return p


def _check_paths(args) -> None:
    """Before any work (equiv.paths): inputs are regular files; outputs replace only regular files
    that exist with --force, in folders equiv can write; no output is an input or another output."""
    from equiv import files, paths

    inputs, outputs = [], []
    if args.command == "port":
        inputs.append(("--from", args.source, args.from_format))
        outputs.append(("--to", args.target, files.detect(args.target, args.to_format, reading=False)))
    elif args.command == "run":
        inputs += [("--weights", args.weights, args.format), ("--input", args.input, None)]
    elif args.command == "check" and isinstance(args.raw_images, str):
        inputs.append(("--raw-images", args.raw_images, None))
    for name in ("output", "json", "markdown", "plot"):
        if getattr(args, name, None):
            outputs.append((f"--{name}", getattr(args, name), None))
    paths.check_job(inputs, outputs, force=getattr(args, "force", False))


def _os_error(e: OSError) -> str:
    """`path: reason`, as every other error names its file."""
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{e.strerror or e}"


def main(argv: list[str] | None = None) -> int:
    from equiv.errors import EquivError
    from equiv.quiet import quiet

    args = build_parser().parse_args(argv)
    if args.command != "bench":  # each framework's memory goes back to the system after its run (README)
        os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    with quiet(getattr(args, "verbose", False)):
        try:
            _check_paths(args)
            return args.func(args)
        except EquivError as e:
            message = str(e)
        except OSError as e:  # a full disk, a permission, a folder where a file was expected
            message = _os_error(e)
    print("equiv: error: " + as_flags(" ".join(message.split("\n"))), file=sys.stderr)
    return EXIT_USAGE


def run() -> None:
    """The `equiv` command: main(), then out of the process at once.

    Everything equiv writes is published (atomically) before main() returns; what is left at exit is
    the frameworks' teardown (TensorFlow's and PyTorch's thread pools, a few thousand modules), which
    took 1-3.5 s of a 224x224 check's wall time and gives the user nothing. The frameworks' imports
    are frozen out of the garbage collector's scans (frameworks.FREEZE_IMPORTS, see adapter())."""
    from equiv import frameworks

    frameworks.FREEZE_IMPORTS = True
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
