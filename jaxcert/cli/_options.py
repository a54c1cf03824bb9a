"""What the commands share: the help format, the user-error type, option groups and checks."""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from .. import data, models, report, results
from ..smoothing import NOISES

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# Checked by `check_noise`, not argparse's choices: a bad value is then one line, not usage.
NOISE_METAVAR = "{" + ",".join(NOISES) + "}"  # gaussian (l2 radius), laplace, uniform (l1)
NOISE_HELP = (
    "smoothing noise: gaussian (certifies an l2 radius), laplace or uniform (an l1 radius); "
    "the noise level is its scale (the Laplace scale, the uniform half-width)"
)


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless the help already explains it or there is none."""

    def _get_help_string(self, action):
        if (
            action.required
            or action.default is None
            or action.default is False
            or "default" in action.help
        ):
            return action.help
        return super()._get_help_string(action)


class UserError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def _numbers(kind, text):
    try:
        return tuple(kind(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {kind.__name__} values, got {text!r}"
        ) from None


def floats(text):
    """argparse type: comma-separated floats."""
    return _numbers(float, text)


def ints(text):
    """argparse type: comma-separated integers."""
    return _numbers(int, text)


def require(ok, name, allowed, value):
    """Raise `UserError` "--NAME must be ALLOWED, got VALUE" unless `ok`."""
    if not ok:
        raise UserError(f"--{name} must be {allowed}, got {value}")


def positive(name, value):
    require(value is not None and value >= 1, name, ">= 1", value)


def above_zero(name, value):
    require(math.isfinite(value) and value > 0, name, "finite and > 0", value)


def nonnegative(name, value):
    require(math.isfinite(value) and value >= 0, name, "finite and >= 0", value)


def level(name, value):
    require(0 < value < 1, name, "in (0, 1)", value)


def check_noise(value):
    """--noise names one of the library's noises (`jaxcert.smoothing.NOISES`)."""
    require(value in NOISES, "noise", "one of " + ", ".join(NOISES), value)


def add_data_options(parser, split=True):
    """--dataset, --data-dir and (with `split`) --split."""
    parser.add_argument(
        "--dataset",
        choices=("digits", "mnist"),
        default="digits",
        help="data set (digits is bundled; mnist needs --data-dir)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="directory holding the MNIST IDX files"
    )
    if split:
        parser.add_argument(
            "--split", choices=("train", "test"), default="test", help="which split of the data set"
        )


def check_data_options(args):
    if args.dataset == "mnist" and args.data_dir is None:
        raise UserError("--data-dir is required with --dataset mnist (the folder of its IDX files)")


def add_log_options(parser, verb):
    """Which images to process, and the resumable TSV log they go to."""
    parser.add_argument("--skip", type=int, default=1, help=f"{verb} every SKIP-th image")
    parser.add_argument("--max", type=int, default=None, help=f"{verb} at most MAX images")
    parser.add_argument("--out", type=Path, required=True, help="TSV file to write")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same settings in --out",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (for scripts)"
    )


def add_solver_option(parser):
    """--strategy and --solver of the exact commands (verify, vnnlib, vnncomp): the same choices
    and defaults."""
    parser.add_argument(
        "--strategy",
        choices=("auto", "bab", "milp"),
        default="auto",
        help="how open cases are decided: bab (branch and bound: input splits for <= 16 inputs, "
        "else ReLU splits), milp, or auto (today bab, the faster in every measurement)",
    )
    parser.add_argument(
        "--solver",
        choices=("race", "scip", "highs"),
        default="race",
        help="MILP solver (race: SCIP and HiGHS at once, the first decisive answer wins)",
    )


def check_log_options(args):
    positive("skip", args.skip)
    if args.max is not None:
        positive("max", args.max)


def print_summary(path):
    """--json: the finished log's figures (`jaxcert.report.summary`) as one JSON line."""
    print(json.dumps(report.summary(results.read_results(path), RADII)))


def model_settings(path, info, params):
    """The model's entries of a log's settings: its path and a hash of its content."""
    digest = models.content_hash(info["spec"], info["input_shape"], params)
    return {"model": str(Path(path).resolve()), "model_sha256": digest}


def images_for(args, info):
    """The data set's images and labels, checked against the model, and the indices to do."""
    images, labels = data.load_dataset(args.dataset, args.split, args.data_dir)
    if tuple(images.shape[1:]) != tuple(info["input_shape"]):
        raise UserError(
            f"--model {args.model} takes inputs of shape {tuple(info['input_shape'])}, "
            f"the {args.dataset} images have shape {images.shape[1:]}"
        )
    indices = np.arange(0, len(images), args.skip)[: args.max]
    if len(indices) == 0:
        raise UserError(f"--dataset {args.dataset}: its {args.split} split holds no images")
    return images, labels, indices


def todo(log, indices, out):
    """The indices not yet in the resumed log (said on stderr when some are)."""
    left = [i for i in indices if str(i) not in log.done]
    if len(left) < len(indices):
        print(f"resuming: {len(indices) - len(left)} images already in {out}", file=sys.stderr)
    return np.asarray(left, int)
