"""The `jaxcert` command line: demo, train, certify, predict, verify, vnnlib, vnncomp, report
and bench.

Each module of this package is one family of commands: `add_parser(subparsers)` adds its
commands, each with `run(args)` as its default `run`. The work itself is the library's
(`jaxcert.train`, `jaxcert.results`, `jaxcert.report`, `jaxcert.vnncomp`, `jaxcert.bench`);
the commands check their options, call it, and print. Every command keeps JAX's compilation
cache on disk (`_compile_cache`).
"""

import argparse
import sys

from . import _compile_cache, bench, demo, smoothing, train, verify, vnn
from . import report as report_command
from ._options import Help, UserError

COMMANDS = (demo, train, smoothing, verify, vnn, report_command, bench)


def main(argv=None):
    """Entry point of the `jaxcert` console script. Compiled computations are kept on disk
    between runs (`_compile_cache`: JAXCERT_COMPILE_CACHE=off switches that off)."""
    args = parser().parse_args(argv)
    _compile_cache.enable()
    try:
        return args.run(args) or 0
    except (UserError, ValueError, TypeError, OSError, ImportError, RuntimeError) as err:
        print(f"jaxcert {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxcert {args.command}: interrupted", file=sys.stderr)
        return 130


def parser():
    """The `jaxcert` argument parser, one subcommand per command of `COMMANDS`."""
    top = argparse.ArgumentParser(
        prog="jaxcert",
        description="Certify the robustness of neural-network classifiers.",
        formatter_class=Help,
    )
    subparsers = top.add_subparsers(dest="command", required=True)
    for family in COMMANDS:
        family.add_parser(subparsers)
    return top
