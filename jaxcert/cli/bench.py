"""`jaxcert bench`: run the benchmark scripts of a clone and tabulate their JSON
(`jaxcert.bench`)."""

import json
import sys
from pathlib import Path

from .. import bench
from .._progress import Progress
from ._options import Help, UserError


def add_parser(subparsers):
    be = subparsers.add_parser(
        "bench",
        formatter_class=Help,
        help="run the benchmark scripts, keep their JSON and (--update-readme) update the table "
        "in their README",
    )
    be.add_argument(
        "--dir", type=Path, default=Path("benchmarks"), help="the benchmarks folder of a clone"
    )
    be.add_argument(
        "--only", default=",".join(bench.SCRIPTS), help="comma-separated benchmarks to run"
    )
    be.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, the scripts at once (a smoke test, under a minute): never updates the "
        "README",
    )
    be.add_argument(
        "--update-readme",
        action="store_true",
        help="replace the table in DIR/README.md with this run's figures (not with --quick)",
    )
    be.add_argument("--json", action="store_true", help="print the JSON documents")
    be.set_defaults(run=run)


def run(args):
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(bench.SCRIPTS))
    if not names or unknown:
        raise UserError(
            f"--only must name benchmarks among {','.join(bench.SCRIPTS)}, got {args.only!r}"
        )
    if args.quick and args.update_readme:
        raise UserError("--quick figures measure nothing: --update-readme needs a full run")
    for name in names:
        script = args.dir / bench.SCRIPTS[name][0]
        if not script.is_file():
            raise UserError(f"--dir {args.dir}: {script} not found (run from a clone of jaxcert)")
    with Progress(len(names), "bench", unit="script") as bar:
        documents, paths = bench.run(args.dir, names, args.quick, progress=lambda n: bar.update(),
                                     update_readme=args.update_readme)  # fmt: skip
    if args.json:
        print(json.dumps(documents, indent=2))
    else:
        print(bench.markdown(documents, bench.versions()))
    readme = f" and {args.dir / 'README.md'}" if args.update_readme else ""
    print("wrote " + ", ".join(str(p) for p in paths) + readme, file=sys.stderr)
