"""`jaxcert verify`: l_inf robustness of a saved model's test images, by a bound method or
exactly (branch and bound or MILP), one resumable TSV row per image (`jaxcert.results`)."""

from pathlib import Path

from .. import graph, models, results
from .._progress import Progress
from .._table import STATUSES, ResumableTable
from ._options import (
    Help,
    above_zero,
    add_data_options,
    add_log_options,
    add_solver_option,
    check_data_options,
    check_log_options,
    images_for,
    model_settings,
    nonnegative,
    positive,
    print_summary,
    require,
    todo,
)

METHODS = ("exact", "ibp", "crown-ibp", "crown", "alpha-crown", "lp")


def add_parser(subparsers):
    ve = subparsers.add_parser(
        "verify",
        formatter_class=Help,
        help="verify l_inf robustness by bound methods or exactly, one TSV row per image",
    )
    add_data_options(ve)
    ve.add_argument("--model", type=Path, required=True, help="directory of a saved model")
    ve.add_argument("--eps", type=float, required=True, help="l_inf radius (pixels in [0, 1])")
    ve.add_argument(
        "--method",
        choices=METHODS,
        default="exact",
        help="exact decides (branch and bound or MILP, see --strategy); the others prove or "
        "answer 'unknown'",
    )
    add_solver_option(ve)
    ve.add_argument("--time-limit", type=float, default=60.0, help="exact: seconds per image")
    ve.add_argument(
        "--mode",
        choices=("decide", "minimum"),
        default="decide",
        help="decide stops each MILP at its first solution; minimum finds the exact margin",
    )
    ve.add_argument(
        "--attack-steps",
        type=int,
        default=50,
        help="PGD steps tried before the MILP (0: none); a confirmed attack falsifies",
    )
    ve.add_argument(
        "--tighten",
        action="store_true",
        help="tighten the ReLU bounds layer by layer by LP before the MILPs (Tjeng et al.)",
    )
    ve.add_argument(
        "--images", type=int, default=8, help="images verified together (bounds, attack)"
    )
    ve.add_argument("--seed", type=int, default=0, help="seed of the attack's restarts")
    add_log_options(ve, "verify")
    ve.set_defaults(run=run)


def _check(args):
    check_log_options(args)
    positive("images", args.images)
    nonnegative("eps", args.eps)
    above_zero("time-limit", args.time_limit)
    require(args.attack_steps >= 0, "attack-steps", ">= 0", args.attack_steps)
    check_data_options(args)


def run(args):
    _check(args)
    apply_fn, params, info = models.load_model(args.model)
    images, labels, indices = images_for(args, info)
    net = graph.trace(apply_fn, params, images[:1])
    options = {
        "strategy": args.strategy,
        "solver": args.solver,
        "time_limit": args.time_limit,
        "mode": args.mode,
        "attack_steps": args.attack_steps,
        "tighten": args.tighten,
        "seed": args.seed,
    }
    settings = {
        **model_settings(args.model, info, params),
        "dataset": args.dataset,
        "split": args.split,
        "eps": args.eps,
        "method": args.method,
        **options,
    }
    with ResumableTable(args.out, results.VERIFY_COLUMNS, settings, resume=args.resume) as log:
        left = todo(log, indices, args.out)
        with Progress(len(left), f"verify eps={args.eps} {args.method}") as bar:
            for start in range(0, len(left), args.images):
                group = left[start : start + args.images]
                exact = {**options, "progress": True} if args.method == "exact" else {}
                for row in results.verify_rows(net, images, labels, group, eps=args.eps,
                                               method=args.method, **exact):  # fmt: skip
                    log.write(row)
                bar.update(len(group))
        rows = log.rows()
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    verified = sum(r["status"] == "verified" and r["predict"] == r["label"] for r in rows)
    if args.json:
        return print_summary(args.out)
    print(
        f"{len(rows)} images in {args.out}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"; verified accuracy {verified / max(len(rows), 1):.3f} at eps {args.eps}"
    )
