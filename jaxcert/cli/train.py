"""`jaxcert train`: train a classifier (standard, Gaussian augmentation, adversarial or
certified), checkpointed every epoch so an interrupted run resumes."""

import json
from pathlib import Path

from .. import data, models
from .. import train as training
from ._options import (
    NOISE_METAVAR,
    Help,
    UserError,
    above_zero,
    add_data_options,
    check_data_options,
    check_noise,
    ints,
    nonnegative,
    positive,
    require,
)


def add_parser(subparsers):
    tr = subparsers.add_parser(
        "train",
        formatter_class=Help,
        help="train a classifier: standard, Gaussian augmentation, adversarial or certified",
    )
    add_data_options(tr, split=False)
    tr.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="architecture")
    tr.add_argument("--hidden", type=ints, default=(256, 256), help="MLP hidden widths")
    tr.add_argument(
        "--activation", choices=tuple(models.ACTIVATIONS), default="relu",
        help="hidden activation (the MILP of `verify` needs relu or leaky-relu)",
    )  # fmt: skip
    tr.add_argument(
        "--pool", choices=("stride", "max"), default="stride",
        help="CNN: halve each feature map by a stride of 2 or by 2x2 max pooling",
    )  # fmt: skip
    tr.add_argument(
        "--method",
        choices=training.METHODS,
        default="gaussian",
        help="training loss: gaussian (for randomized smoothing, default), standard, pgd "
        "(Madry et al.), ibp (Gowal et al.), crown-ibp (Zhang et al.), dual (Wong and Kolter)",
    )
    tr.add_argument("--sigma", type=float, default=0.25, help="noise level of --method gaussian")
    tr.add_argument(
        "--noise",
        default="gaussian",
        metavar=NOISE_METAVAR,
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
    tr.set_defaults(run=run)


def _check(args):
    positive("epochs", args.epochs)
    positive("batch-size", args.batch_size)
    positive("eval-images", args.eval_images)
    above_zero("lr", args.lr)
    for name in ("sigma", "eps", "relu_stability", "l1"):
        nonnegative(name.replace("_", "-"), getattr(args, name))
    require(0 <= args.kappa <= 1, "kappa", "in [0, 1]", args.kappa)
    check_noise(args.noise)
    if args.noise != "gaussian" and args.method != "gaussian":
        raise UserError(
            f"--noise {args.noise} is the noise of --method gaussian, not of --method {args.method}"
        )
    if args.pool != "stride" and args.model != "cnn":
        raise UserError("--pool applies to --model cnn")
    widths = ",".join(map(str, args.hidden))
    require(all(w >= 1 for w in args.hidden), "hidden", "widths >= 1", widths)
    check_data_options(args)
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a model directory")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite starts anew: pick one")
    if args.resume and not training.has_checkpoint(out):
        raise UserError(f"--resume: no checkpoint in {out} (a run saves one per epoch)")
    if not args.resume and not args.overwrite and out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out} exists and is not empty: pass --overwrite to replace the model in it, "
            "--resume to continue its interrupted run, or choose another --out"
        )


def run(args):
    _check(args)
    x, y = data.load_dataset(args.dataset, "train", args.data_dir)
    test_x, test_y = data.load_dataset(args.dataset, "test", args.data_dir)
    eval_x, eval_y = test_x[: args.eval_images], test_y[: args.eval_images]
    if args.model == "mlp":
        spec = {"kind": "mlp", "hidden": list(args.hidden), "num_classes": data.num_classes}
    else:
        spec = {"kind": "cnn", "num_classes": data.num_classes}
    if args.activation != "relu":  # the defaults stay out of model.json, as before
        spec["activation"] = args.activation
    if args.pool != "stride":
        spec["pool"] = args.pool
    loss_fn = training.training_loss(
        args.method, relu_stability_weight=args.relu_stability, l1_weight=args.l1
    )
    steps = args.epochs * -(-len(x) // args.batch_size)
    loss_kwargs = training.ramp_schedules(args.method, args.eps, steps, kappa=args.kappa)
    if args.method == "gaussian":
        loss_kwargs["sigma"], loss_kwargs["noise"] = args.sigma, args.noise

    def on_epoch(epoch, apply_fn, params, loss, aux):
        clean, pgd, ibp = training.robust_accuracies(apply_fn, params, eval_x, eval_y, args.eps)
        return (
            f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, clean {clean:.3f}, "
            f"PGD {pgd:.3f}, IBP-verified {ibp:.3f} (eps {args.eps}, {len(eval_x)} test images)"
        )

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("run", "resume", "overwrite", "out", "eval_images",
                              "json")}  # fmt: skip
    if args.noise == "gaussian":
        del settings["noise"]  # as before --noise: checkpoints of older runs resume
    apply_fn, params = training.train_model(x, y, spec=spec, epochs=args.epochs, seed=args.seed,
                                            batch_size=args.batch_size, lr=args.lr,
                                            label=f"train {args.method}", loss_fn=loss_fn,
                                            on_epoch=on_epoch, checkpoints=args.out,
                                            settings=settings, resume=args.resume,
                                            **loss_kwargs)  # fmt: skip
    acc = training.accuracy(apply_fn, params, test_x, test_y)
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
