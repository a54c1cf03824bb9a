"""`jaxcert report`: markdown tables (or JSON) of result files, and certified-accuracy plots."""

import json
import math
from pathlib import Path

from .. import report, results
from ._options import RADII, Help, UserError, above_zero, floats, require


def add_parser(subparsers):
    rp = subparsers.add_parser(
        "report",
        formatter_class=Help,
        help="tabulate certify/predict/verify result files (markdown), plot certified accuracy",
    )
    rp.add_argument("files", type=Path, nargs="+", help="TSV files of jaxcert certify or verify")
    rp.add_argument(
        "--radii", type=floats, default=RADII, help="radii of the certified-accuracy table"
    )
    rp.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="draw certified accuracy against radius for the certify files to this PNG "
        "(needs matplotlib)",
    )
    rp.add_argument(
        "--max-radius", type=float, default=None, help="right end of the plot (default: largest)"
    )
    rp.add_argument("--json", action="store_true", help="print the figures as JSON")
    rp.set_defaults(run=run)


def run(args):
    radii = ",".join(map(str, args.radii))
    require(args.radii and all(map(math.isfinite, args.radii)) and min(args.radii) >= 0,
            "radii", "finite and >= 0", radii)  # fmt: skip
    if args.max_radius is not None:
        above_zero("max-radius", args.max_radius)
    if args.plot is not None and not args.plot.parent.is_dir():
        raise UserError(f"--plot {args.plot}: the folder {args.plot.parent} does not exist")
    if args.plot is not None:
        report.pyplot()  # matplotlib is there, checked before any file is read or printed
    all_results = [results.read_results(path) for path in args.files]
    if args.json:
        figures = json.dumps([report.summary(r, args.radii) for r in all_results], indent=2)
    else:
        figures = report.markdown_table(all_results, args.radii)
    if args.plot is not None:  # drawn before the tables: an error prints nothing else
        report.plot_certified_accuracy(all_results, args.plot, args.max_radius)
    print(figures)
    if args.plot is not None:
        print(f"\nplot written to {args.plot}")
