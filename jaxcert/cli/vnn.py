"""`jaxcert vnnlib` and `jaxcert vnncomp`: VNN-LIB properties on ONNX networks, one at a time or
a VNN-COMP benchmark folder (`jaxcert.vnncomp`)."""

import argparse
import json
import sys
from pathlib import Path

from .. import vnncomp
from .._progress import Progress
from ._options import Help, above_zero, add_solver_option, require


def add_parser(subparsers):
    vn = subparsers.add_parser(
        "vnnlib",
        formatter_class=Help,
        help="decide a VNN-LIB property on an ONNX network: unsat (holds), sat, timeout, unknown",
    )
    vn.add_argument("onnx", type=Path, help="the network (.onnx or .onnx.gz)")
    vn.add_argument("vnnlib", type=Path, help="the property (.vnnlib or .vnnlib.gz)")
    _add_property_options(vn)
    _add_time_limit(vn, 60.0, "seconds for the property")
    vn.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write the result file here (VNN-COMP format: the result, then X and Y "
        "of a counterexample)",
    )
    vn.set_defaults(run=run_vnnlib)

    vc = subparsers.add_parser(
        "vnncomp",
        formatter_class=Help,
        help="run a VNN-COMP benchmark folder (instances.csv) into a resumable results CSV",
    )
    vc.add_argument("instances", type=Path, help="the folder's instances.csv")
    _add_property_options(vc)
    _add_time_limit(
        vc, None, "seconds per instance (default: the timeout column of instances.csv)"
    )
    vc.add_argument(
        "--out", type=Path, default=Path("results.csv"), help="results CSV (onnx, vnnlib, ...)"
    )
    vc.add_argument(
        "--counterexamples",
        type=Path,
        default=None,
        help="folder for the result files of sat instances (default: OUT's name + "
        "'_counterexamples' beside it)",
    )
    vc.add_argument("--resume", action="store_true", help="continue an existing results CSV")
    vc.add_argument("--json", action="store_true", help="print the summary as JSON")
    vc.set_defaults(run=run_vnncomp)


def _add_time_limit(parser, default, text):
    """--time-limit, as in verify; --timeout, its name before, stays a hidden alias."""
    parser.add_argument("--time-limit", type=float, default=default, help=text)
    parser.add_argument(
        "--timeout", dest="time_limit", type=float, default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip


def _add_property_options(parser):
    add_solver_option(parser)
    parser.add_argument(
        "--attack-steps",
        type=int,
        default=50,
        help="PGD steps of the search for a counterexample before the MILPs (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's random starts")


def _property_options(args):
    """The checked --time-limit, --solver, --attack-steps and --seed as keyword arguments."""
    if args.time_limit is not None:
        above_zero("time-limit", args.time_limit)
    require(args.attack_steps >= 0, "attack-steps", ">= 0", args.attack_steps)
    return dict(
        timeout=args.time_limit, solver=args.solver, attack_steps=args.attack_steps, seed=args.seed,
        strategy=args.strategy,
    )  # fmt: skip


def run_vnnlib(args):
    options = _property_options(args)
    result = vnncomp.run_isolated(args.onnx, args.vnnlib, progress=True, **options)  # in time
    text = vnncomp.result_text(result)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text, end="")
    print(f"{result.result} in {result.seconds:.2f} s", file=sys.stderr)


def run_vnncomp(args):
    options = _property_options(args)
    instances = vnncomp.read_instances(args.instances)
    folder = args.counterexamples or args.out.with_name(args.out.stem + "_counterexamples")
    with Progress(len(instances), "vnncomp", unit="inst") as bar:

        def progress(instance, result, message):
            bar.write(f"{instance.onnx} {instance.vnnlib}: {result} {message}".rstrip())
            bar.update()

        rows = vnncomp.run_benchmark(args.instances, args.out, counterexamples=folder,
                                     resume=args.resume, progress=progress,
                                     **options)  # fmt: skip
    figures = vnncomp.summary(rows)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(vnncomp.summary_table(figures))
    print(f"results in {args.out}, counterexamples in {folder}")
