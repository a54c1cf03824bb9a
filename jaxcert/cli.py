"""The `jaxcert` command line: demo, train, certify, predict, verify, vnnlib, vnncomp, report
and bench."""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import serialization

from . import (
    attacks,
    bench,
    bounds,
    data,
    exact,
    graph,
    models,
    report,
    smoothing,
    train,
    vnncomp,
)
from ._progress import Progress
from ._sets import LinfBall
from ._table import ResumableTable
from .smoothing._noise import NOISES, get_noise

CERTIFY_COLUMNS = (
    "idx",
    "label",
    "predict",
    "radius",
    "correct",
    "time",
    "nA",
    "n",
    "pA_lower",
    "seed",
)
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time", "nA", "nB", "n", "seed")
VERIFY_COLUMNS = (
    "idx",
    "label",
    "predict",
    "status",
    "margin_lower",
    "margin_upper",
    "target",
    "time",
    "binaries",
)
VERIFY_METHODS = ("milp", "ibp", "crown-ibp", "crown", "alpha-crown", "lp")
DEMO_SIGMAS = (0.12, 0.25, 0.5)
DEMO_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
# Checked by `_check_noise`, not argparse's choices: a bad value is then one line, not usage.
_NOISE_METAVAR = "{" + ",".join(NOISES) + "}"  # gaussian (l2 radius), laplace, uniform (l1)
_NOISE_HELP = (
    "smoothing noise: gaussian (certifies an l2 radius), laplace or uniform (an l1 radius); "
    "the noise level is its scale (the Laplace scale, the uniform half-width)"
)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
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


def main(argv=None):
    """Entry point of the `jaxcert` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (UserError, ValueError, TypeError, OSError, ImportError, RuntimeError) as err:
        print(f"jaxcert {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxcert {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser():
    parser = argparse.ArgumentParser(
        prog="jaxcert",
        description="Certify the robustness of neural-network classifiers.",
        formatter_class=_Help,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = _Help

    demo = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="train on digits and certify by "
        "randomized smoothing at three noise levels; print the table",
    )
    demo.add_argument("--sigmas", type=_floats, default=DEMO_SIGMAS, help="noise levels")
    demo.add_argument("--noise", default="gaussian", metavar=_NOISE_METAVAR, help=_NOISE_HELP)
    demo.add_argument("--n", type=int, default=10_000, help="estimation samples per image")
    demo.add_argument("--n0", type=int, default=100, help="selection samples per image")
    demo.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    demo.add_argument("--epochs", type=int, default=40, help="training epochs per model")
    demo.add_argument("--max", type=int, default=None, help="certify only the first MAX images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--json", action="store_true", help="print the table as JSON")
    demo.set_defaults(run=run_demo)

    tr = sub.add_parser(
        "train",
        formatter_class=fmt,
        help="train a classifier: standard, Gaussian augmentation, adversarial or certified",
    )
    _add_data_options(tr, split=False)
    tr.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="architecture")
    tr.add_argument("--hidden", type=_ints, default=(256, 256), help="MLP hidden widths")
    tr.add_argument(
        "--method",
        choices=train.METHODS,
        default="gaussian",
        help="training loss: gaussian (for randomized smoothing, default), standard, pgd "
        "(Madry et al.), ibp (Gowal et al.), crown-ibp (Zhang et al.), dual (Wong and Kolter)",
    )
    tr.add_argument("--sigma", type=float, default=0.25, help="noise level of --method gaussian")
    tr.add_argument(
        "--noise",
        default="gaussian",
        metavar=_NOISE_METAVAR,
        help="noise of --method gaussian, recorded with the model as the noise to certify with: "
        "gaussian (l2 radius), laplace or uniform (l1 radius) of scale --sigma",
    )
    tr.add_argument(
        "--eps",
        type=float,
        default=0.1,
        help="l_inf radius of pgd/ibp/crown-ibp/dual training (reached by a linear ramp) and of "
        "the per-epoch PGD and IBP-verified accuracy",
    )
    tr.add_argument("--kappa", type=float, default=0.5, help="final weight of the clean loss")
    tr.add_argument(
        "--relu-stability",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of the ReLU-stability loss (Xiao et al.) at --eps",
    )
    tr.add_argument("--l1", type=float, default=0.0, metavar="W", help="weight of an L1 penalty")
    tr.add_argument("--epochs", type=int, default=40, help="passes over the training set")
    tr.add_argument("--batch-size", type=int, default=128, help="examples per step")
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tr.add_argument(
        "--eval-images", type=int, default=1000, help="test images evaluated after each epoch"
    )
    tr.add_argument("--seed", type=int, default=0, help="random seed")
    tr.add_argument("--out", type=Path, required=True, help="directory to save the model in")
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoint it saved in --out after each epoch",
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="train even if --out is a non-empty directory, replacing the model in it",
    )
    tr.add_argument("--json", action="store_true", help="print the summary as JSON")
    tr.set_defaults(run=run_train)

    ce = sub.add_parser(
        "certify",
        formatter_class=fmt,
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
    _add_log_options(ce, "certify")
    ce.set_defaults(run=run_certify)

    pr = sub.add_parser(
        "predict",
        formatter_class=fmt,
        help="PREDICT with the smoothed classifier (abstains when the vote is close), one TSV "
        "row per image",
    )
    _add_smoothing_options(pr, "predicted")
    pr.add_argument("--n", type=int, default=1000, help="samples per image")
    pr.add_argument("--alpha", type=float, default=0.001, help="error level of the test")
    _add_log_options(pr, "predict")
    pr.set_defaults(run=run_predict)

    ve = sub.add_parser(
        "verify",
        formatter_class=fmt,
        help="verify l_inf robustness by bound methods or exactly (MILP), one TSV row per image",
    )
    _add_data_options(ve)
    ve.add_argument("--model", type=Path, required=True, help="directory of a saved model")
    ve.add_argument("--eps", type=float, required=True, help="l_inf radius (pixels in [0, 1])")
    ve.add_argument(
        "--method",
        choices=VERIFY_METHODS,
        default="milp",
        help="milp decides exactly; the others prove or answer 'unknown'",
    )
    ve.add_argument(
        "--solver",
        choices=("race", "scip", "highs"),
        default="race",
        help="MILP solver (race: SCIP and HiGHS at once, the first decisive answer wins)",
    )
    ve.add_argument("--time-limit", type=float, default=60.0, help="MILP seconds per image")
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
    _add_log_options(ve, "verify")
    ve.set_defaults(run=run_verify)

    vn = sub.add_parser(
        "vnnlib",
        formatter_class=fmt,
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

    vc = sub.add_parser(
        "vnncomp",
        formatter_class=fmt,
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

    rp = sub.add_parser(
        "report",
        formatter_class=fmt,
        help="tabulate certify/predict/verify result files (markdown), plot certified accuracy",
    )
    rp.add_argument("files", type=Path, nargs="+", help="TSV files of jaxcert certify or verify")
    rp.add_argument(
        "--radii", type=_floats, default=DEMO_RADII, help="radii of the certified-accuracy table"
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
    rp.set_defaults(run=run_report)

    be = sub.add_parser(
        "bench",
        formatter_class=fmt,
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
    be.set_defaults(run=run_bench)
    return parser


def _add_data_options(parser, split=True):
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


def _add_smoothing_options(parser, verb):
    """Data, model, noise level, batching and seed: shared by certify and predict."""
    _add_data_options(parser)
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
        metavar=_NOISE_METAVAR,
        help=_NOISE_HELP + " (default: the noise the model was trained with, else gaussian)",
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


def _add_time_limit(parser, default, text):
    """--time-limit, as in verify; --timeout, its name before, stays a hidden alias."""
    parser.add_argument("--time-limit", type=float, default=default, help=text)
    parser.add_argument(
        "--timeout", dest="time_limit", type=float, default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip


def _add_property_options(parser):
    # Not verify's default race: `jaxcert.exact.verify_property` takes one solver only.
    parser.add_argument(
        "--solver",
        choices=("scip", "highs"),
        default="highs",
        help="MILP solver (verify's race of both is not available for properties)",
    )
    parser.add_argument(
        "--attack-steps",
        type=int,
        default=50,
        help="PGD steps of the search for a counterexample before the MILPs (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the search's random starts")


def _add_log_options(parser, verb):
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


def _print_summary(path):
    """--json: the finished log's figures (`jaxcert.report.summary`) as one JSON line."""
    print(json.dumps(report.summary(report.read_results(path), DEMO_RADII)))


def _check_log_options(args):
    _positive("skip", args.skip)
    if args.max is not None:
        _positive("max", args.max)


def _check_data_options(args):
    if args.dataset == "mnist" and args.data_dir is None:
        raise UserError("--data-dir is required with --dataset mnist (the folder of its IDX files)")


def _numbers(kind, text):
    try:
        return tuple(kind(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {kind.__name__} values, got {text!r}"
        ) from None


def _floats(text):
    return _numbers(float, text)


def _ints(text):
    return _numbers(int, text)


def _require(ok, name, allowed, value):
    if not ok:
        raise UserError(f"--{name} must be {allowed}, got {value}")


def _positive(name, value):
    _require(value is not None and value >= 1, name, ">= 1", value)


def _above_zero(name, value):
    _require(math.isfinite(value) and value > 0, name, "finite and > 0", value)


def _nonnegative(name, value):
    _require(math.isfinite(value) and value >= 0, name, "finite and >= 0", value)


def _level(name, value):
    _require(0 < value < 1, name, "in (0, 1)", value)


def _check_noise(value):
    """--noise names one of the library's noises (`jaxcert.smoothing._noise.NOISES`)."""
    _require(value in NOISES, "noise", "one of " + ", ".join(NOISES), value)


def _model_settings(path, info, params):
    """The model's entries of a log's settings: its path and a hash of its content."""
    digest = models.content_hash(info["spec"], info["input_shape"], params)
    return {"model": str(Path(path).resolve()), "model_sha256": digest}


def _images_for(args, info):
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


# --- train -----------------------------------------------------------------------------------


_CHECKPOINT = "checkpoint.msgpack"
_CHECKPOINT_SETTINGS = "checkpoint.json"


def train_model(
    train_x,
    train_y,
    *,
    spec,
    epochs,
    seed,
    batch_size=128,
    lr=1e-3,
    label="train",
    loss_fn=train.gaussian_augmentation_loss,
    on_epoch=None,
    checkpoints=None,
    settings=None,
    resume=False,
    **loss_kwargs,
):
    """Initialise and train a model (Gaussian augmentation by default), with a progress bar.

    `on_epoch(epoch, apply_fn, params, loss, aux)` may return a line to print after each epoch.
    With `checkpoints` (a directory), the parameters and optimizer state are saved after every
    epoch; `resume` continues from them (the run's `settings` must match), so an interrupted
    run loses at most one epoch and ends with the same model as an uninterrupted one.
    """
    key = jax.random.key(seed)
    apply_fn, params = models.init_model(spec, jax.random.fold_in(key, 0), train_x.shape[1:])
    optimizer = optax.adam(lr)
    opt_state, first_epoch = None, 0
    if resume:
        params, opt_state, first_epoch = _load_checkpoint(checkpoints, settings, params, optimizer)
    with Progress(epochs, label, unit="epoch") as bar:
        bar.update(first_epoch)

        def progress(epoch, params, loss, aux):
            if on_epoch is not None:
                bar.write(on_epoch(epoch, apply_fn, params, loss, aux))
            bar.update()

        def checkpoint(epoch, params, opt_state):
            state = {"params": params, "opt_state": opt_state}
            Path(checkpoints).mkdir(parents=True, exist_ok=True)
            (Path(checkpoints) / _CHECKPOINT).write_bytes(serialization.to_bytes(state))
            record = {"epoch": epoch, "settings": settings}
            (Path(checkpoints) / _CHECKPOINT_SETTINGS).write_text(json.dumps(record))

        params = train.fit(
            apply_fn,
            params,
            train_x,
            train_y,
            jax.random.fold_in(key, 1),
            epochs=epochs,
            loss_fn=loss_fn,
            batch_size=batch_size,
            optimizer=optimizer,
            progress=progress,
            first_epoch=first_epoch,
            opt_state=opt_state,
            checkpoint=checkpoint if checkpoints is not None else None,
            **loss_kwargs,
        )
    return apply_fn, params


def _load_checkpoint(directory, settings, params, optimizer):
    """(params, optimizer state, next epoch) of the run saved in `directory`."""
    record_path, state_path = Path(directory) / _CHECKPOINT_SETTINGS, Path(directory) / _CHECKPOINT
    try:
        record = json.loads(record_path.read_text())
        before, epoch = record["settings"], int(record["epoch"])
        target = {"params": params, "opt_state": optimizer.init(params)}
        state = serialization.from_bytes(target, state_path.read_bytes())
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"--resume: {directory} holds no readable checkpoint ({err!r})") from None
    wanted = json.loads(json.dumps(settings))
    if before != wanted:
        changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
        raise UserError(f"--resume: {directory} holds a run with other settings, in {changed}")
    return state["params"], state["opt_state"], epoch + 1


def robust_accuracies(apply_fn, params, x, y, eps):
    """Clean, PGD (20 steps) and IBP-verified accuracy at l_inf radius eps."""
    net = graph.trace(apply_fn, params, x[:1])
    _, attack = attacks.pgd(apply_fn, params, x, y, jax.random.key(0), eps, steps=20)
    verified = bounds.certify(net, LinfBall(x, eps), y, method="ibp")
    clean = train.accuracy(apply_fn, params, x, y)
    return clean, float(np.mean(np.asarray(attack) < 0)), float(np.mean(np.asarray(verified)))


def _check_train_options(args):
    _positive("epochs", args.epochs)
    _positive("batch-size", args.batch_size)
    _positive("eval-images", args.eval_images)
    _above_zero("lr", args.lr)
    for name in ("sigma", "eps", "relu_stability", "l1"):
        _nonnegative(name.replace("_", "-"), getattr(args, name))
    _require(0 <= args.kappa <= 1, "kappa", "in [0, 1]", args.kappa)
    _check_noise(args.noise)
    if args.noise != "gaussian" and args.method != "gaussian":
        raise UserError(
            f"--noise {args.noise} is the noise of --method gaussian, not of --method {args.method}"
        )
    widths = ",".join(map(str, args.hidden))
    _require(all(w >= 1 for w in args.hidden), "hidden", "widths >= 1", widths)
    _check_data_options(args)
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a model directory")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite starts anew: pick one")
    if args.resume and not (out / _CHECKPOINT_SETTINGS).is_file():
        raise UserError(f"--resume: no checkpoint in {out} (a run saves one per epoch)")
    if not args.resume and not args.overwrite and out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out} exists and is not empty: pass --overwrite to replace the model in it, "
            "--resume to continue its interrupted run, or choose another --out"
        )


def run_train(args):
    _check_train_options(args)
    x, y = data.load_dataset(args.dataset, "train", args.data_dir)
    test_x, test_y = data.load_dataset(args.dataset, "test", args.data_dir)
    eval_x, eval_y = test_x[: args.eval_images], test_y[: args.eval_images]
    if args.model == "mlp":
        spec = {"kind": "mlp", "hidden": list(args.hidden), "num_classes": data.num_classes}
    else:
        spec = {"kind": "cnn", "num_classes": data.num_classes}
    loss_fn = train.training_loss(
        args.method, relu_stability_weight=args.relu_stability, l1_weight=args.l1
    )
    steps = args.epochs * -(-len(x) // args.batch_size)
    loss_kwargs = train.ramp_schedules(args.method, args.eps, steps, kappa=args.kappa)
    if args.method == "gaussian":
        loss_kwargs["sigma"], loss_kwargs["noise"] = args.sigma, args.noise

    def on_epoch(epoch, apply_fn, params, loss, aux):
        clean, pgd, ibp = robust_accuracies(apply_fn, params, eval_x, eval_y, args.eps)
        return (
            f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, clean {clean:.3f}, "
            f"PGD {pgd:.3f}, IBP-verified {ibp:.3f} (eps {args.eps}, {len(eval_x)} test images)"
        )

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("run", "resume", "overwrite", "out", "eval_images",
                              "json")}  # fmt: skip
    if args.noise == "gaussian":
        del settings["noise"]  # as before --noise: checkpoints of older runs resume
    apply_fn, params = train_model(
        x,
        y,
        spec=spec,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        label=f"train {args.method}",
        loss_fn=loss_fn,
        on_epoch=on_epoch,
        checkpoints=args.out,
        settings=settings,
        resume=args.resume,
        **loss_kwargs,
    )
    acc = train.accuracy(apply_fn, params, test_x, test_y)
    metadata = {
        "dataset": args.dataset,
        "method": args.method,
        "sigma": args.sigma if args.method == "gaussian" else 0.0,
        "noise": args.noise,
        "eps": args.eps,
        "kappa": args.kappa,
        "relu_stability": args.relu_stability,
        "l1": args.l1,
        "epochs": args.epochs,
        "seed": args.seed,
        "test_accuracy": acc,
    }
    models.save_model(args.out, spec, params, input_shape=x.shape[1:], metadata=metadata)
    if args.json:
        print(json.dumps({"model": str(args.out), **metadata}))
    else:
        noise = "" if args.noise == "gaussian" else f" with {args.noise} noise"
        print(f"saved {args.out} (clean test accuracy {acc:.4f}, {args.method} training{noise})")


# --- certify ---------------------------------------------------------------------------------


def _smoothing_rows(indices, seed, images_per_step, label, on_row, evaluate):
    """Run `evaluate(group, keys)` -> rows over groups of image indices, with a progress bar.

    Image `idx` draws its noise from `fold_in(key(seed), idx)`, so a row does not depend on
    which other images were processed with it, and a resumed run equals an uninterrupted one.
    """
    root = jax.random.key(seed)
    rows = []
    with Progress(len(indices), label) as bar:
        for start in range(0, len(indices), images_per_step):
            group = np.asarray(indices[start : start + images_per_step])
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, group)
            for row in evaluate(group, keys):
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            bar.update(len(group))
    return rows


def certify_rows(
    apply_fn,
    params,
    images,
    labels,
    indices,
    *,
    sigma,
    n0,
    n,
    alpha,
    batch_size,
    seed,
    noise="gaussian",
    target_radius=None,
    images_per_step=8,
    label="certify",
    on_row=None,
):
    """CERTIFY images one group at a time (Cohen et al.'s log columns; the radius is in the
    norm of `noise`: l2 for gaussian, l1 for laplace and uniform); `on_row(row)` as each group
    finishes. With `target_radius`, sampling stops once the certificate at that radius is
    decided and the n column gives the estimation samples each image used."""

    def evaluate(group, keys):
        began = time.perf_counter()
        cert = smoothing.certify(
            apply_fn,
            params,
            images[group],
            keys,
            sigma=sigma,
            num_classes=data.num_classes,
            n0=n0,
            n=n,
            alpha=alpha,
            batch_size=batch_size,
            noise=noise,
            target_radius=target_radius,
        )
        seconds = (time.perf_counter() - began) / len(group)
        return [
            {
                "idx": int(idx),
                "label": int(labels[idx]),
                "predict": int(cert.prediction[j]),
                "radius": repr(float(cert.radius[j])),
                "correct": int(cert.prediction[j] == labels[idx]),
                "time": repr(float(seconds)),
                "nA": int(cert.counts[j, cert.selected[j]]),
                "n": int(cert.num_samples[j]) - n0,
                "pA_lower": repr(float(cert.p_lower[j])),
                "seed": seed,
            }
            for j, idx in enumerate(group)
        ]

    return _smoothing_rows(indices, seed, images_per_step, label, on_row, evaluate)


def predict_rows(
    apply_fn,
    params,
    images,
    labels,
    indices,
    *,
    sigma,
    n,
    alpha,
    batch_size,
    seed,
    noise="gaussian",
    images_per_step=8,
    on_row=None,
):
    """PREDICT images one group at a time (Cohen et al.'s predict log columns plus the two top
    counts); `on_row(row)` as each group finishes."""

    def evaluate(group, keys):
        began = time.perf_counter()
        prediction, counts = smoothing.predict(
            apply_fn,
            params,
            images[group],
            keys,
            sigma=sigma,
            num_classes=data.num_classes,
            n=n,
            alpha=alpha,
            batch_size=batch_size,
            noise=noise,
        )
        seconds = (time.perf_counter() - began) / len(group)
        top = np.sort(counts, axis=1)[:, ::-1]
        return [
            {
                "idx": int(idx),
                "label": int(labels[idx]),
                "predict": int(prediction[j]),
                "correct": int(prediction[j] == labels[idx]),
                "time": repr(float(seconds)),
                "nA": int(top[j, 0]),
                "nB": int(top[j, 1]),
                "n": n,
                "seed": seed,
            }
            for j, idx in enumerate(group)
        ]

    return _smoothing_rows(indices, seed, images_per_step, "predict", on_row, evaluate)


def _check_smoothing_options(args, counts):
    """The options of certify or predict, before anything is loaded."""
    for name in (*counts, "images"):
        _positive(name, getattr(args, name))
    _check_log_options(args)
    _level("alpha", args.alpha)
    if args.sigma is not None:
        _above_zero("sigma", args.sigma)
    if args.noise is not None:
        _check_noise(args.noise)
    if getattr(args, "target_radius", None) is not None:
        _above_zero("target-radius", args.target_radius)
    if args.batch_size is not None:
        _require(args.batch_size >= args.images, "batch-size", f">= --images ({args.images}), "
                 "one noisy copy of each image a step", args.batch_size)  # fmt: skip
    _check_data_options(args)


def _smoothing_setup(args):
    """The model, its noise level and noise, the data and the indices of a certify or predict
    run."""
    apply_fn, params, info = models.load_model(args.model)
    sigma = args.sigma if args.sigma is not None else info["metadata"].get("sigma")
    if sigma is None or not sigma > 0:
        raise UserError(f"--sigma must be > 0 (the model records none), got {sigma}")
    noise = args.noise or info["metadata"].get("noise", "gaussian")  # older models: gaussian
    try:
        get_noise(noise)
    except (ValueError, TypeError) as err:
        raise UserError(f"--model {args.model} records an unknown training noise: {err}") from None
    images, labels, indices = _images_for(args, info)
    settings = {
        **_model_settings(args.model, info, params),
        "dataset": args.dataset,
        "split": args.split,
        "sigma": sigma,
        "n": args.n,
        "alpha": args.alpha,
        "seed": args.seed,
        "noise": noise,
    }
    return apply_fn, params, sigma, noise, images, labels, indices, settings


def _smoothing_log(args, columns, rows_fn, **options):
    """Run `certify_rows` or `predict_rows` (with `options`, also kept in the settings) into
    the resumable log `args.out`; returns (all rows, sigma, noise)."""
    apply_fn, params, sigma, noise, images, labels, indices, settings = _smoothing_setup(args)
    settings.update(options)
    with ResumableTable(args.out, columns, settings, resume=args.resume) as log:
        rows_fn(
            apply_fn,
            params,
            images,
            labels,
            _todo(log, indices, args.out),
            sigma=sigma,
            noise=noise,
            n=args.n,
            alpha=args.alpha,
            batch_size=args.batch_size,
            seed=args.seed,
            images_per_step=args.images,
            on_row=log.write,
            **options,
        )
        return log.rows(), sigma, noise


def _todo(log, indices, out):
    todo = [i for i in indices if str(i) not in log.done]
    if len(todo) < len(indices):
        print(f"resuming: {len(indices) - len(todo)} images already in {out}", file=sys.stderr)
    return np.asarray(todo, int)


def run_certify(args):
    _check_smoothing_options(args, ("n0", "n"))
    options = {"n0": args.n0}
    if args.target_radius is not None:  # absent from the settings otherwise: old logs resume
        options["target_radius"] = args.target_radius
    rows, sigma, noise = _smoothing_log(args, CERTIFY_COLUMNS, certify_rows, **options)
    radius = np.array([float(r["radius"]) for r in rows])
    correct = np.array([r["correct"] == "1" for r in rows])
    if args.json:
        return _print_summary(args.out)
    print(f"{len(rows)} images in {args.out}")
    print(_accuracy_table({sigma: (radius, correct)}, DEMO_RADII, args.n, args.alpha, noise=noise))


def run_predict(args):
    _check_smoothing_options(args, ("n",))
    rows, sigma, noise = _smoothing_log(args, PREDICT_COLUMNS, predict_rows)
    correct = sum(r["correct"] == "1" for r in rows)
    abstained = sum(r["predict"] == "-1" for r in rows)
    accuracy = correct / max(len(rows), 1)
    if args.json:
        return _print_summary(args.out)
    print(
        f"{len(rows)} images in {args.out}: accuracy {accuracy:.3f}, "
        f"{abstained} abstentions (n={args.n}, alpha={args.alpha}, sigma={sigma}"
        + ("" if noise == "gaussian" else f", {noise} noise")
        + ")"
    )


# --- verify --------------------------------------------------------------------------------


def run_verify(args):
    _check_log_options(args)
    _positive("images", args.images)
    _nonnegative("eps", args.eps)
    _above_zero("time-limit", args.time_limit)
    _require(args.attack_steps >= 0, "attack-steps", ">= 0", args.attack_steps)
    _check_data_options(args)
    apply_fn, params, info = models.load_model(args.model)
    images, labels, indices = _images_for(args, info)
    net = graph.trace(apply_fn, params, images[:1])
    settings = {
        **_model_settings(args.model, info, params),
        "dataset": args.dataset,
        "split": args.split,
        "eps": args.eps,
        "method": args.method,
        "solver": args.solver,
        "time_limit": args.time_limit,
        "mode": args.mode,
        "attack_steps": args.attack_steps,
        "tighten": args.tighten,
        "seed": args.seed,
    }
    with ResumableTable(args.out, VERIFY_COLUMNS, settings, resume=args.resume) as log:
        todo = _todo(log, indices, args.out)
        with Progress(len(todo), f"verify eps={args.eps} {args.method}") as bar:
            for start in range(0, len(todo), args.images):
                group = todo[start : start + args.images]
                for row in _verify_rows(net, images, labels, group, args):
                    log.write(row)
                bar.update(len(group))
        rows = log.rows()
    counts = {
        s: sum(r["status"] == s for r in rows)
        for s in ("verified", "falsified", "unknown", "unconfirmed")
    }
    verified = sum(r["status"] == "verified" and r["predict"] == r["label"] for r in rows)
    if args.json:
        return _print_summary(args.out)
    print(
        f"{len(rows)} images in {args.out}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"; verified accuracy {verified / max(len(rows), 1):.3f} at eps {args.eps}"
    )


def _verify_rows(net, images, labels, group, args):
    """The verify log rows of a group of images, verified together."""
    x, y = images[group], labels[group].astype(int)
    spec = LinfBall(x, args.eps)
    began = time.perf_counter()
    predict = np.argmax(np.asarray(net(x)), axis=1)
    if args.method == "milp":
        results = exact.verify(
            net,
            spec,
            y,
            solver=args.solver,
            time_limit=args.time_limit,
            mode=args.mode,
            attack_steps=args.attack_steps,
            tighten=args.tighten,
            seed=args.seed,
        )
        found = [
            (r.status, r.margin_lower, r.margin_upper, r.target, r.binaries, r.seconds)
            for r in results
        ]
    else:
        margins = np.asarray(bounds.margins(net, spec, y, method=args.method))
        seconds = (time.perf_counter() - began) / len(group)
        found = [
            ("verified" if m.min() > 0 else "unknown", m.min(), np.inf, int(np.argmin(m)), 0,
             seconds)
            for m in margins
        ]  # fmt: skip
    return [
        {
            "idx": int(idx),
            "label": int(label),
            "predict": int(p),
            "status": status,
            "margin_lower": repr(float(lower)),
            "margin_upper": repr(float(upper)),
            "target": target,
            "time": repr(float(seconds)),
            "binaries": binaries,
        }
        for idx, label, p, (status, lower, upper, target, binaries, seconds) in zip(
            group, y, predict, found
        )
    ]


# --- report ----------------------------------------------------------------------------------


def _property_options(args):
    """The checked --time-limit, --solver, --attack-steps and --seed as keyword arguments."""
    if args.time_limit is not None:
        _above_zero("time-limit", args.time_limit)
    if args.attack_steps < 0:
        raise UserError(f"--attack-steps must be >= 0, got {args.attack_steps}")
    return dict(
        timeout=args.time_limit, solver=args.solver, attack_steps=args.attack_steps, seed=args.seed
    )


def run_vnnlib(args):
    options = _property_options(args)
    result = vnncomp.run_isolated(args.onnx, args.vnnlib, **options)  # the limit holds
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

        rows = vnncomp.run_benchmark(
            args.instances,
            args.out,
            counterexamples=folder,
            resume=args.resume,
            progress=progress,
            **options,
        )
    figures = vnncomp.summary(rows)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(vnncomp.summary_table(figures))
    print(f"results in {args.out}, counterexamples in {folder}")


def run_report(args):
    radii = ",".join(map(str, args.radii))
    _require(args.radii and all(map(math.isfinite, args.radii)) and min(args.radii) >= 0,
             "radii", "finite and >= 0", radii)  # fmt: skip
    if args.max_radius is not None:
        _above_zero("max-radius", args.max_radius)
    if args.plot is not None and not args.plot.parent.is_dir():
        raise UserError(f"--plot {args.plot}: the folder {args.plot.parent} does not exist")
    if args.plot is not None:
        report.pyplot()  # matplotlib is there, checked before any file is read or printed
    all_results = [report.read_results(path) for path in args.files]
    if args.json:
        figures = json.dumps([report.summary(r, args.radii) for r in all_results], indent=2)
    else:
        figures = report.markdown_table(all_results, args.radii)
    if args.plot is not None:  # drawn before the tables: an error prints nothing else
        report.plot_certified_accuracy(all_results, args.plot, args.max_radius)
    print(figures)
    if args.plot is not None:
        print(f"\nplot written to {args.plot}")


# --- bench -----------------------------------------------------------------------------------


def run_bench(args):
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


# --- demo ------------------------------------------------------------------------------------


def run_demo(args):
    _positive("n", args.n)
    _positive("n0", args.n0)
    _positive("epochs", args.epochs)
    _level("alpha", args.alpha)
    _check_noise(args.noise)
    if args.max is not None:
        _positive("max", args.max)
    sigmas = ",".join(map(str, args.sigmas))
    _require(args.sigmas and all(math.isfinite(s) and s > 0 for s in args.sigmas), "sigmas",
             "finite and > 0", sigmas)  # fmt: skip
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    indices = np.arange(len(test_x))[: args.max]
    spec = {"kind": "mlp", "hidden": [256, 256], "num_classes": data.num_classes}
    print(
        f"jaxcert demo: digits ({len(train_x)} train / {len(indices)} test images), MLP "
        f"64-256-256-10, n0={args.n0}, n={args.n}, alpha={args.alpha}"
        + ("" if args.noise == "gaussian" else f", {args.noise} noise"),
        file=sys.stderr,
    )
    results, base_acc = {}, {}
    for sigma in args.sigmas:
        apply_fn, params = train_model(
            train_x,
            train_y,
            spec=spec,
            sigma=sigma,
            noise=args.noise,
            epochs=args.epochs,
            seed=args.seed,
            label=f"train  sigma={sigma}",
        )
        base_acc[sigma] = train.accuracy(apply_fn, params, test_x[indices], test_y[indices])
        rows = certify_rows(
            apply_fn,
            params,
            test_x,
            test_y,
            indices,
            sigma=sigma,
            n0=args.n0,
            n=args.n,
            alpha=args.alpha,
            batch_size=None,
            seed=args.seed,
            noise=args.noise,
            images_per_step=24,
            label=f"certify sigma={sigma}",
        )
        results[sigma] = (
            np.array([float(r["radius"]) for r in rows]),
            np.array([r["correct"] == 1 for r in rows]),
        )
    if args.json:
        table = {
            str(sigma): {
                "base_accuracy": base_acc[sigma],
                "certified_accuracy": dict(
                    zip(map(str, DEMO_RADII), smoothing.certified_accuracy(*r, DEMO_RADII).tolist())
                ),
            }
            for sigma, r in results.items()
        }
        print(json.dumps(table))
    else:
        print(_accuracy_table(results, DEMO_RADII, args.n, args.alpha, base_acc, args.noise))


_CAP_FORMULAS = {
    "gaussian": "sigma * Phi^-1(alpha^(1/n))",
    "laplace": "-sigma * log(2 (1 - alpha^(1/n)))",
    "uniform": "2 sigma (alpha^(1/n) - 1/2)",
}


def _accuracy_table(results, radii, n, alpha, base_accuracy=None, noise="gaussian"):
    """Markdown table: certified accuracy at each radius per sigma, with its lower bound."""
    head = ["sigma"] + (["base acc"] if base_accuracy else []) + [f"r={r}" for r in radii]
    head += ["radius cap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sigma, (radius, correct) in results.items():
        table = smoothing.certified_accuracy_table(radius, correct, radii, alpha=alpha)
        cells = [f"{sigma:g}"]
        if base_accuracy:
            cells.append(f"{base_accuracy[sigma]:.3f}")
        cells += [f"{a:.3f} ({lo:.3f})" for a, lo in zip(table.accuracy, table.lower_bound)]
        cells.append(f"{smoothing.radius_cap(sigma, n, alpha, noise):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    # The Gaussian table keeps the words it always had; the others name their noise and norm.
    kind = f"{noise} noise of scale sigma, {get_noise(noise).norm} radius r; "
    kind = "" if noise == "gaussian" else kind
    lines.append(
        f"\nCertified accuracy of the smoothed classifier over {len(radius)} test images "
        f"({kind}r=0: its clean accuracy; abstentions count as wrong); in brackets a lower bound "
        f"that holds with probability 0.999 over the noise (Bernstein, given alpha={alpha}). The "
        f"radius cap {_CAP_FORMULAS[noise]} is the largest radius {n} samples can certify."
    )
    return "\n".join(lines)
