"""`jaxcert certify` and `jaxcert predict`: randomized smoothing over a test set, one resumable
TSV row per image (`jaxcert.results`)."""

from pathlib import Path

from .. import models, report, results
from .. import smoothing as smoothing_lib
from .._table import ResumableTable
from ._options import (
    NOISE_HELP,
    NOISE_METAVAR,
    RADII,
    Help,
    UserError,
    above_zero,
    add_data_options,
    add_log_options,
    check_data_options,
    check_log_options,
    check_noise,
    images_for,
    level,
    model_settings,
    positive,
    print_summary,
    require,
    todo,
)


def add_parser(subparsers):
    ce = subparsers.add_parser(
        "certify",
        formatter_class=Help,
        help="certify a test set by randomized smoothing, one TSV row per image",
    )
    _add_smoothing_options(ce, "certified")
    ce.add_argument("--n0", type=int, default=100, help="selection samples per image")
    ce.add_argument("--n", type=int, default=100_000, help="estimation samples per image")
    ce.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    ce.add_argument(
        "--target-radius",
        type=float,
        default=None,
        help="stop sampling an image once its certificate at this radius is decided (the same "
        "guarantee; --n is then the most samples): the n column gives the samples it used",
    )
    add_log_options(ce, "certify")
    ce.set_defaults(run=run_certify)

    pr = subparsers.add_parser(
        "predict",
        formatter_class=Help,
        help="PREDICT with the smoothed classifier (abstains when the vote is close), one TSV "
        "row per image",
    )
    _add_smoothing_options(pr, "predicted")
    pr.add_argument("--n", type=int, default=1000, help="samples per image")
    pr.add_argument("--alpha", type=float, default=0.001, help="error level of the test")
    add_log_options(pr, "predict")
    pr.set_defaults(run=run_predict)


def _add_smoothing_options(parser, verb):
    """Data, model, noise level, batching and seed: shared by certify and predict."""
    add_data_options(parser)
    parser.add_argument("--model", type=Path, required=True, help="directory of a saved model")
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="noise level (default: the one the model was trained with)",
    )
    parser.add_argument(
        "--noise",
        default=None,
        metavar=NOISE_METAVAR,
        help=NOISE_HELP + " (default: the noise the model was trained with, else gaussian)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"most noisy inputs in one forward pass, over the --images {verb} together "
        "(default: 1024 on CPU, 16384 on accelerators)",
    )
    parser.add_argument("--images", type=int, default=8, help=f"images {verb} together")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _check(args, counts):
    """The options of certify or predict, before anything is loaded."""
    for name in (*counts, "images"):
        positive(name, getattr(args, name))
    check_log_options(args)
    level("alpha", args.alpha)
    if args.sigma is not None:
        above_zero("sigma", args.sigma)
    if args.noise is not None:
        check_noise(args.noise)
    if getattr(args, "target_radius", None) is not None:
        above_zero("target-radius", args.target_radius)
    if args.batch_size is not None:
        require(args.batch_size >= args.images, "batch-size", f">= --images ({args.images}), "
                "one noisy copy of each image a step", args.batch_size)  # fmt: skip
    check_data_options(args)


def _log(args, columns, rows_fn, **options):
    """Run `rows_fn` (`results.certify_rows` or `predict_rows`, with `options`, also kept in the
    settings) into the resumable log `args.out`; returns (all rows, sigma, noise)."""
    apply_fn, params, info = models.load_model(args.model)
    sigma = args.sigma if args.sigma is not None else info["metadata"].get("sigma")
    if sigma is None or not sigma > 0:
        raise UserError(f"--sigma must be > 0 (the model records none), got {sigma}")
    noise = args.noise or info["metadata"].get("noise", "gaussian")  # older models: gaussian
    try:
        smoothing_lib.get_noise(noise)
    except (ValueError, TypeError) as err:
        raise UserError(f"--model {args.model} records an unknown training noise: {err}") from None
    images, labels, indices = images_for(args, info)
    settings = {
        **model_settings(args.model, info, params),
        "dataset": args.dataset,
        "split": args.split,
        "sigma": sigma,
        "n": args.n,
        "alpha": args.alpha,
        "seed": args.seed,
        "noise": noise,
        "noise_stream": smoothing_lib.NOISE_STREAM_VERSION,
        **options,
    }
    with ResumableTable(args.out, columns, settings, resume=args.resume) as log:
        rows_fn(apply_fn, params, images, labels, todo(log, indices, args.out), sigma=sigma,
                noise=noise, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                seed=args.seed, images_per_step=args.images, on_row=log.write,
                **options)  # fmt: skip
        return log.rows(), sigma, noise


def run_certify(args):
    _check(args, ("n0", "n"))
    options = {"n0": args.n0}
    if args.target_radius is not None:  # absent from the settings otherwise: old logs resume
        options["target_radius"] = args.target_radius
    rows, sigma, noise = _log(args, results.CERTIFY_COLUMNS, results.certify_rows, **options)
    if args.json:
        return print_summary(args.out)
    print(f"{len(rows)} images in {args.out}")
    found = {sigma: results.radius_and_correct(rows)}
    print(report.smoothing_table(found, RADII, args.n, args.alpha, noise=noise))


def run_predict(args):
    _check(args, ("n",))
    rows, sigma, noise = _log(args, results.PREDICT_COLUMNS, results.predict_rows)
    correct = sum(int(r["correct"]) == 1 for r in rows)
    abstained = sum(int(r["predict"]) == smoothing_lib.ABSTAIN for r in rows)
    accuracy = correct / max(len(rows), 1)
    if args.json:
        return print_summary(args.out)
    print(
        f"{len(rows)} images in {args.out}: accuracy {accuracy:.3f}, "
        f"{abstained} abstentions (n={args.n}, alpha={args.alpha}, sigma={sigma}"
        + ("" if noise == "gaussian" else f", {noise} noise")
        + ")"
    )
