"""The command line end to end on digits, at tiny sizes."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jaxcert as jc
from jaxcert._table import ResumableTable
from jaxcert.cli import main
from jaxcert.results import CERTIFY_COLUMNS


def read_tsv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "mlp"
    assert (
        main(["train", "--epochs", "3", "--hidden", "32", "--sigma", "0.25", "--out", str(out)])
        == 0
    )
    return out


@pytest.mark.slow
def test_train_saves_a_loadable_model(model_dir):
    apply_fn, params, info = jc.models.load_model(model_dir)
    assert info["metadata"]["sigma"] == 0.25
    x, y = jc.data.load_digits("test")
    assert jc.train.accuracy(apply_fn, params, x, y) == pytest.approx(
        info["metadata"]["test_accuracy"]
    )


@pytest.mark.slow
def test_certified_training_reports_each_epoch(tmp_path, capsys):
    out = tmp_path / "ibp"
    args = ["train", "--method", "crown-ibp", "--eps", "0.05", "--epochs", "2", "--hidden", "16",
            "--relu-stability", "0.01", "--eval-images", "50", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "epoch 2/2: loss" in lines[1]
    for line in lines:
        clean, pgd, ibp = (float(line.split(f"{k} ")[1].split()[0].rstrip(",")) for k in
                           ("clean", "PGD", "IBP-verified"))  # fmt: skip
        assert clean >= pgd >= ibp  # the attack and the proof are both sound
    apply_fn, params, info = jc.models.load_model(out)
    assert info["metadata"]["method"] == "crown-ibp" and info["metadata"]["eps"] == 0.05
    x, y = jc.data.load_digits("test")
    assert jc.train.accuracy(apply_fn, params, x, y) == pytest.approx(
        info["metadata"]["test_accuracy"]
    )


@pytest.mark.slow
def test_certify_writes_cohen_rows(model_dir, tmp_path, capsys):
    out = tmp_path / "cert.tsv"
    args = [
        "certify",
        "--model",
        str(model_dir),
        "--n",
        "300",
        "--n0",
        "20",
        "--max",
        "10",
        "--images",
        "4",
        "--batch-size",
        "128",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    header, rows = read_tsv(out)
    assert header == list(CERTIFY_COLUMNS)
    assert [int(r["idx"]) for r in rows] == list(range(10))
    _, labels = jc.data.load_digits("test")
    for r in rows:
        assert int(r["label"]) == labels[int(r["idx"])]
        assert int(r["correct"]) == int(r["predict"] == r["label"])
        p_lower = float(jc.stats.lower_confidence_bound(int(r["nA"]), 300, 0.001))
        assert float(r["pA_lower"]) == pytest.approx(p_lower, rel=1e-5)
        certified = int(r["predict"]) != -1
        assert certified == (float(r["pA_lower"]) > 0.5)
        assert (float(r["radius"]) > 0) == certified
    assert "| sigma |" in capsys.readouterr().out
    # An existing file is not overwritten without --resume.
    assert main(args) == 2


@pytest.mark.slow
def test_certify_resume_after_sigkill(model_dir, tmp_path):
    common = [
        "certify",
        "--model",
        str(model_dir),
        "--n",
        "20000",
        "--n0",
        "50",
        "--max",
        "40",
        "--images",
        "1",
        "--batch-size",
        "500",
    ]
    reference = tmp_path / "reference.tsv"
    assert main(common + ["--out", str(reference)]) == 0
    out = tmp_path / "killed.tsv"
    cmd = [sys.executable, "-m", "jaxcert", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, partial = read_tsv(out)
    assert 3 <= len(partial) < 40
    assert main(common + ["--out", str(out), "--resume"]) == 0
    _, rows = read_tsv(out)
    _, want = read_tsv(reference)
    assert [r["idx"] for r in rows] == [str(i) for i in range(40)]  # none lost, none twice
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(want)
    assert rows[: len(partial)] == partial


@pytest.mark.slow
def test_resume_refuses_other_settings(model_dir, tmp_path, capsys):
    out = tmp_path / "cert.tsv"
    base = ["certify", "--model", str(model_dir), "--n", "100", "--max", "2", "--out", str(out)]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base[:-2], "--sigma", "0.5", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sigma" in err[0]
    assert main([*base[:-2], "--noise", "laplace", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings differ from the earlier run in ['noise']" in err[0]
    assert main([*base[:-2], "--noise", "gaussian", "--out", str(out), "--resume"]) == 0


@pytest.mark.slow
def test_an_old_log_with_timedelta_times_still_reads_and_resumes(model_dir, tmp_path, capsys):
    """certify and predict write float seconds in their time column, as verify does; their logs
    of before, with str(datetime.timedelta) times ("0:00:01.085999"), still read and resume."""
    assert jc._table.seconds("0:00:01.085999") == pytest.approx(1.085999)
    assert jc._table.seconds("1 day, 1:01:01.250000") == 90061.25
    for command in ("certify", "predict"):
        out = tmp_path / f"{command}.tsv"
        base = [command, "--model", str(model_dir), "--n", "100", "--out", str(out)]
        assert main([*base, "--max", "2"]) == 0
        header, rows = read_tsv(out)
        seconds = [float(r["time"]) for r in rows]
        assert [r["time"] for r in rows] == [repr(s) for s in seconds]  # as verify writes
        old = [{**r, "time": str(datetime.timedelta(seconds=s))} for r, s in zip(rows, seconds)]
        lines = ["\t".join(header)] + ["\t".join(r[c] for c in header) for r in old]
        out.write_text("\n".join(lines) + "\n")
        assert ":" in old[0]["time"]  # the old format
        assert main([*base, "--max", "4", "--resume"]) == 0
        _, resumed = read_tsv(out)
        assert resumed[:2] == old and [r["idx"] for r in resumed] == ["0", "1", "2", "3"]
        assert all(float(r["time"]) >= 0 for r in resumed[2:])
        times = [jc._table.seconds(r["time"]) for r in resumed[:2]]
        assert times == pytest.approx(seconds, abs=1e-6)
        capsys.readouterr()
        assert main(["report", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["images"] == 4


def test_partial_trailing_row_is_cut(tmp_path, capsys):
    path = tmp_path / "log.tsv"
    with ResumableTable(path, ["idx", "v"], {"a": 1}) as log:
        log.write({"idx": 0, "v": "x"})
    with open(path, "a") as f:
        f.write("1\tpart")  # a row cut short by a kill
    with ResumableTable(path, ["idx", "v"], {"a": 1}, resume=True) as log:
        assert list(log.done) == ["0"]
        log.write({"idx": 1, "v": "y"})
    assert path.read_text() == "idx\tv\n0\tx\n1\ty\n"
    assert f"{path}: dropped line 3, a row cut short" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lines, error",
    [
        (["0\tx", "1\ty", "0\tz"], "line 4: duplicate row, the key '0' is already on line 2"),
        (["0\tx", "1", "2\tz"], "line 3: malformed row, 1 fields instead of 2"),
        (["0\tx", "one\ty", "2\tz"], "line 3: malformed row, idx 'one'"),
        (["0\tx", "-1\ty"], "line 3: malformed row, idx '-1' must be >= 0"),
        (["0\tx", "00\ty"], "line 3: malformed row, idx '00' is not an integer in plain"),
        (["0\tx", "", "2\tz"], "line 3: malformed row"),
    ],
)
def test_resume_refuses_a_duplicate_or_malformed_row(tmp_path, lines, error):
    path = tmp_path / "log.tsv"
    ResumableTable(path, ["idx", "v"], {"a": 1}).close()
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n1\tcut")  # and a torn last line, dropped as usual
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"^{path}, {error}"):
        ResumableTable(path, ["idx", "v"], {"a": 1}, resume=True)
    assert path.read_bytes() == before  # nothing written or cut


def test_resume_of_a_comma_table_keyed_by_two_columns(tmp_path):
    path = tmp_path / "results.csv"
    columns = ["onnx", "vnnlib", "result", "seconds"]
    ResumableTable(path, columns, {}, delimiter=",", keys=2).close()
    with open(path, "a") as f:
        f.write("a.onnx,p.vnnlib,unsat,1.0\na.onnx,q.vnnlib,sat,2.0\n")
    with ResumableTable(path, columns, {}, resume=True, delimiter=",", keys=2) as table:
        assert set(table.done) == {("a.onnx", "p.vnnlib"), ("a.onnx", "q.vnnlib")}
    with open(path, "a") as f:
        f.write("a.onnx,p.vnnlib,sat,3.0\n")
    with pytest.raises(ValueError, match="line 4: duplicate row, the key 'a.onnx,p.vnnlib'"):
        ResumableTable(path, columns, {}, resume=True, delimiter=",", keys=2)
    path.write_text(",".join(columns) + "\na.onnx,p.vnnlib,unsat,soon\n")
    with pytest.raises(ValueError, match="line 2: malformed row, seconds 'soon'"):
        ResumableTable(path, columns, {}, resume=True, delimiter=",", keys=2)


def _with_time(line, time):
    """A certify log line with another time column (its sixth)."""
    fields = line.split("\t")
    return "\t".join(fields[:5] + [time] + fields[6:])


def test_certify_resume_and_report_refuse_a_log_they_cannot_trust(model_dir, tmp_path, capsys):
    """A duplicated row made `report` count 9 images for 8; a corrupt middle row was resumed
    past, and then broke every later resume and `report` with a message naming no file."""
    out = tmp_path / "cert.tsv"
    base = ["certify", "--model", str(model_dir), "--n", "100", "--n0", "10", "--out", str(out)]
    assert main([*base, "--max", "8"]) == 0
    good = out.read_text().splitlines(keepends=True)
    cases = [
        (good + [good[3]], "line 10: duplicate row, the key '2' is already on line 4"),
        (good[:4] + [_with_time(good[4], "noon")] + good[5:], "line 5: malformed"),
        (good[:4] + [good[4].replace("\t", "\t\t", 1)] + good[5:], "line 5: malformed"),
    ]
    for lines, error in cases:
        out.write_text("".join(lines))
        capsys.readouterr()
        for argv in ([*base, "--max", "12", "--resume"], ["report", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{out}, {error}" in err[0], err
        assert out.read_text() == "".join(lines)  # the resume wrote nothing
    # A torn last line is not an error: the resume redoes its image, `report` leaves it out.
    out.write_text("".join(good[:-1]) + good[-1][:7])
    assert main(["report", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["images"] == 7 and "left out line 9" in captured.err
    assert main([*base, "--max", "8", "--resume"]) == 0
    assert "dropped line 9" in capsys.readouterr().err
    untimed = [line.split("\t")[:5] + line.split("\t")[6:] for line in good]
    assert [line.split("\t")[:5] + line.split("\t")[6:] for line in out.read_text().splitlines(
        keepends=True)] == untimed  # fmt: skip


def test_resume_refuses_another_model_at_the_same_path(model_dir, tmp_path, capsys):
    """The log records the model's content hash: retraining into the same directory and
    resuming would mix the rows of two models."""
    model = tmp_path / "model"
    apply_fn, params, info = jc.models.load_model(model_dir)
    jc.models.save_model(model, info["spec"], params, input_shape=info["input_shape"],
                         metadata=info["metadata"])  # fmt: skip
    out = tmp_path / "cert.tsv"
    base = ["certify", "--model", str(model), "--n", "100", "--n0", "10", "--out", str(out)]
    assert main([*base, "--max", "2"]) == 0
    settings = json.loads(out.with_name("cert.tsv.json").read_text())
    assert settings["model_sha256"] == jc.models.content_hash(
        info["spec"], info["input_shape"], params
    )
    other = jax.tree.map(lambda p: p * 1.01, params)
    jc.models.save_model(model, info["spec"], other, input_shape=info["input_shape"],
                         metadata=info["metadata"])  # fmt: skip
    capsys.readouterr()
    assert main([*base, "--max", "4", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['model_sha256']" in err[0]
    assert f"the model at {model.resolve()} is not the one the earlier run used" in err[0]
    assert len(out.read_text().splitlines()) == 3
    # A log of an older jaxcert, without the hash, cannot be checked: refused as well.
    del settings["model_sha256"]
    out.with_name("cert.tsv.json").write_text(json.dumps(settings))
    assert main([*base, "--max", "4", "--resume"]) == 2
    assert "recorded no hash" in capsys.readouterr().err
    # Nor a log whose noise came from an older stream (one key per sample): its settings lack
    # the stream's version.
    settings["model_sha256"] = jc.models.content_hash(info["spec"], info["input_shape"], other)
    assert settings.pop("noise_stream") == 2
    out.with_name("cert.tsv.json").write_text(json.dumps(settings))
    assert main([*base, "--max", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "['noise_stream']" in err and "another noise stream" in err
    settings["noise_stream"] = 2
    out.with_name("cert.tsv.json").write_text(json.dumps(settings))
    assert main([*base, "--max", "4", "--resume"]) == 0
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--activation", "sigmoid"], marks=pytest.mark.slow),
        pytest.param(["--model", "cnn", "--pool", "max", "--activation", "tanh"],
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_train_offers_activations_and_max_pooling(tmp_path, extra):
    out = tmp_path / "model"
    args = ["train", "--epochs", "1", "--hidden", "8", "--eval-images", "10", "--out", str(out)]
    assert main([*args, *extra]) == 0
    apply_fn, params, info = jc.models.load_model(out)
    spec = json.loads((out / "model.json").read_text())["spec"]
    assert spec["activation"] == extra[extra.index("--activation") + 1]
    assert spec.get("pool", "stride") == ("max" if "--pool" in extra else "stride")
    net = jc.trace(apply_fn, params, jc.data.load_digits("test")[0][:1])
    names = {eq.activation.name for eq in net.activations()}
    assert names == ({"tanh", "relu"} if "--pool" in extra else {"sigmoid"})  # pools: ReLU trees


@pytest.mark.slow
def test_train_refuses_a_non_empty_out_unless_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    args = ["train", "--epochs", "1", "--hidden", "8", "--eval-images", "10", "--out", str(out)]
    assert main(args) == 0  # an empty folder is fine
    saved = (out / "params.msgpack").read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out} exists and is not empty: pass --overwrite" in err[0]
    assert (out / "params.msgpack").read_bytes() == saved
    assert main([*args, "--seed", "1", "--overwrite", "--resume"]) == 2
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert (out / "params.msgpack").read_bytes() != saved
    (tmp_path / "file").write_text("x")
    assert main([*args[:-1], str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_prints_the_table(capsys):
    assert main(["demo", "--n", "200", "--n0", "20", "--max", "12", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    assert [r.split("|")[1].strip() for r in rows] == ["0.12", "0.25", "0.5"]
    assert "r=1.0" in out and "radius cap" in out
    assert main(["demo", "--n", "100", "--n0", "10", "--max", "4", "--epochs", "1", "--sigmas",
                 "0.25", "--json"]) == 0  # fmt: skip
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"0.25"} and set(table["0.25"]["certified_accuracy"]) == {
        "0.0", "0.25", "0.5", "0.75", "1.0"}  # fmt: skip


@pytest.mark.parametrize(
    "args, match",
    [
        (["demo", "--n", "0"], "--n"),
        (["train", "--epochs", "0", "--out", "x"], "--epochs"),
        (["train", "--method", "ibp", "--kappa", "1.5", "--out", "x"], "--kappa"),
        (["train", "--method", "pgd", "--eps", "-0.1", "--out", "x"], "--eps"),
        (["train", "--relu-stability", "-1", "--out", "x"], "--relu-stability"),
        (["train", "--pool", "max", "--out", "x"], "--pool"),
        (["certify", "--model", "does-not-exist", "--out", "x.tsv"], "model.json"),
        (
            ["verify", "--model", "m", "--eps", "0.1", "--attack-steps", "-1", "--out", "x.tsv"],
            "--attack-steps",
        ),
    ],
)
def test_bad_options_give_one_line(args, match, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0]


TRAIN = ["train", "--out", "never-made"]
CERTIFY = ["certify", "--model", "no-model", "--out", "x.tsv"]  # options fail before the model
VERIFY = ["verify", "--model", "no-model", "--eps", "0.1", "--out", "x.tsv"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([*TRAIN, "--lr", "-1"], "train: error: --lr must be finite and > 0, got -1.0"),
        ([*TRAIN, "--lr", "inf"], "--lr must be finite and > 0, got inf"),
        ([*TRAIN, "--lr", "nan"], "--lr must be finite and > 0, got nan"),
        ([*TRAIN, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ([*TRAIN, "--eval-images", "0"], "--eval-images must be >= 1, got 0"),
        ([*TRAIN, "--eps", "nan"], "--eps must be finite and >= 0, got nan"),
        ([*TRAIN, "--sigma", "-0.5"], "--sigma must be finite and >= 0, got -0.5"),
        ([*TRAIN, "--l1", "inf"], "--l1 must be finite and >= 0, got inf"),
        ([*TRAIN, "--hidden", "32,0"], "--hidden must be widths >= 1, got 32,0"),
        ([*TRAIN, "--dataset", "mnist"], "--data-dir is required with --dataset mnist"),
        ([*TRAIN, "--resume"], "--resume: no checkpoint in never-made"),
        ([*TRAIN, "--noise", "gauss"], "train: error: --noise must be one of gaussian, laplace, "
                                       "uniform, got gauss"),
        ([*TRAIN, "--method", "pgd", "--noise", "laplace"],
         "--noise laplace is the noise of --method gaussian, not of --method pgd"),
        (["demo", "--sigmas", "0.25,-1"], "demo: error: --sigmas must be finite and > 0, got "
                                          "0.25,-1.0"),
        (["demo", "--alpha", "1"], "--alpha must be in (0, 1), got 1.0"),
        (["demo", "--max", "0"], "--max must be >= 1, got 0"),
        (["demo", "--noise", "Laplace"], "demo: error: --noise must be one of gaussian, laplace, "
                                         "uniform, got Laplace"),
        ([*CERTIFY, "--alpha", "0"], "certify: error: --alpha must be in (0, 1), got 0.0"),
        ([*CERTIFY, "--sigma", "-1"], "--sigma must be finite and > 0, got -1.0"),
        ([*CERTIFY, "--max", "0"], "--max must be >= 1, got 0"),
        ([*CERTIFY, "--n0", "0"], "--n0 must be >= 1, got 0"),
        ([*CERTIFY, "--target-radius", "0"], "--target-radius must be finite and > 0, got 0.0"),
        ([*CERTIFY, "--batch-size", "4"], "--batch-size must be >= --images (8)"),
        ([*CERTIFY, "--dataset", "mnist"], "--data-dir is required with --dataset mnist"),
        ([*CERTIFY, "--noise", "l1"], "certify: error: --noise must be one of gaussian, laplace, "
                                      "uniform, got l1"),
        (["predict", *CERTIFY[1:], "--noise", ""], "predict: error: --noise must be one of"),
        (["predict", *CERTIFY[1:], "--n", "0"], "predict: error: --n must be >= 1, got 0"),
        (["predict", *CERTIFY[1:], "--skip", "0"], "--skip must be >= 1, got 0"),
        ([*VERIFY, "--max", "0"], "verify: error: --max must be >= 1, got 0"),
        ([*VERIFY[:4], "inf", *VERIFY[5:]], "--eps must be finite and >= 0, got inf"),
        ([*VERIFY, "--time-limit", "0"], "--time-limit must be finite and > 0, got 0.0"),
        (["report", "x.tsv", "--max-radius", "inf"], "--max-radius must be finite and > 0"),
        (["report", "x.tsv", "--radii", "0,nan"], "--radii must be finite and >= 0, got 0.0,nan"),
        (["report", "x.tsv", "--plot", "no/such/dir/p.png"], "the folder no/such/dir does not"),
        (["bench", "--only", "smoothing,nope"], "--only must name benchmarks among"),
        (["bench", "--only", ","], "--only must name benchmarks among"),
        (["bench", "--dir", "no-such-dir"], "--dir no-such-dir: no-such-dir/smoothing"),
    ],
)
def test_every_option_is_checked_before_any_work(args, message, capsys, monkeypatch):
    """One line naming the option, exit 2, and nothing trained, loaded or run first (demo used
    to certify sigma 0.25 before refusing -1; train --lr -1 trained and exited 0)."""

    def never(*args, **kwargs):
        raise AssertionError("work began before every option was checked")

    for module, name in ((jc.train, "train_model"), (jc.results, "certify_rows"),
                         (jc.results, "predict_rows"), (jc.models, "load_model"),
                         (jc.data, "load_dataset"), (jc.bench, "run")):  # fmt: skip
        monkeypatch.setattr(module, name, never)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"jaxcert {args[0]}: error")


@pytest.mark.parametrize("args", [["demo", "--sigmas", "0.25,x"], [*TRAIN, "--hidden", "8,a"]])
def test_lists_that_are_not_numbers_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "expected comma-separated" in capsys.readouterr().err


def write_mnist(folder, split, count, side):
    """IDX files of `count` blank side x side images (a data set of another shape)."""
    names = {"test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    header = np.array([0x803, count, side, side], ">u4").tobytes()
    (folder / names[0]).write_bytes(header + bytes(count * side * side))
    (folder / names[1]).write_bytes(np.array([0x801, count], ">u4").tobytes() + bytes(count))


@pytest.mark.parametrize("command", ["certify", "predict", "verify"])
def test_images_of_another_shape_than_the_model(model_dir, tmp_path, capsys, command):
    """Was a Flax ScopeParamShapeError traceback (verify); now one line naming --model."""
    write_mnist(tmp_path, "test", 3, 28)
    args = [command, "--model", str(model_dir), "--dataset", "mnist", "--data-dir",
            str(tmp_path), "--out", str(tmp_path / "x.tsv")]  # fmt: skip
    assert main(args + (["--eps", "0.1"] if command == "verify" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"--model {model_dir} takes inputs of shape (8, 8, 1), the mnist images have shape " \
           "(28, 28, 1)" in err[0]  # fmt: skip
    write_mnist(tmp_path, "test", 0, 8)  # an empty data set: no ZeroDivisionError either
    assert main(args + (["--eps", "0.1"] if command == "verify" else [])) == 2
    assert "--dataset mnist: its test split holds no images" in capsys.readouterr().err


def test_certify_rows_equal_library_certify(model_dir):
    apply_fn, params, _ = jc.models.load_model(model_dir)
    x, y = jc.data.load_digits("test")
    rows = jc.results.certify_rows(
        apply_fn,
        params,
        x,
        y,
        np.array([5, 9]),
        sigma=0.25,
        n0=20,
        n=500,
        alpha=0.01,
        batch_size=100,
        seed=3,
    )
    import jax

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(3), np.array([5, 9]))
    cert = jc.smoothing.certify(
        apply_fn,
        params,
        x[[5, 9]],
        keys,
        sigma=0.25,
        num_classes=10,
        n0=20,
        n=500,
        alpha=0.01,
        batch_size=100,
    )
    assert [r["predict"] for r in rows] == cert.prediction.tolist()
    assert [float(r["radius"]) for r in rows] == cert.radius.tolist()


NORMS = {"gaussian": "l2", "laplace": "l1", "uniform": "l1"}


@pytest.mark.parametrize(  # Gaussian noise is the default every other CLI test runs
    "noise",
    ["laplace", *(pytest.param(n, marks=pytest.mark.slow) for n in ("gaussian", "uniform"))],
)
def test_each_noise_from_train_to_certify_and_report(noise, tmp_path, capsys, monkeypatch):
    """train --noise augments with that noise and records it; certify takes it from the model,
    and its radii equal the library's for that noise; report names the radii's norm."""
    asked, get_noise = [], jc.train._gaussian.get_noise

    def spy(name):  # the noises the training loss draws
        asked.append(name)
        return get_noise(name)

    monkeypatch.setattr(jc.train._gaussian, "get_noise", spy)
    # The per-epoch PGD and IBP evaluation has nothing to do with the noise: skipped (seconds).
    monkeypatch.setattr(jc.train, "robust_accuracies", lambda *a: (0.0, 0.0, 0.0))
    model = tmp_path / "model"
    assert main(["train", "--noise", noise, "--sigma", "0.25", "--epochs", "3", "--batch-size",
                 "479", "--lr", "0.03", "--hidden", "32", "--out", str(model)]) == 0  # fmt: skip
    assert set(asked) == {noise}
    load = jc.models.load_model
    apply_fn, params, info = load(model)
    assert info["metadata"]["noise"] == noise and info["metadata"]["sigma"] == 0.25
    # The CLI and the library below share one apply_fn, and so their compiled code.
    monkeypatch.setattr(jc.models, "load_model", lambda path: (apply_fn, params, info))
    out = tmp_path / f"{noise}.tsv"
    args = ["certify", "--model", str(model), "--n", "100", "--n0", "10", "--max", "8", "--seed",
            "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert json.loads(out.with_name(out.name + ".json").read_text())["noise"] == noise
    _, rows = read_tsv(out)
    x, _ = jc.data.load_digits("test")
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(2), np.arange(8))
    cert = jc.smoothing.certify(apply_fn, params, x[:8], keys, sigma=0.25, num_classes=10,
                                n0=10, n=100, alpha=0.001, noise=noise)  # fmt: skip
    assert [float(r["radius"]) for r in rows] == cert.radius.tolist()
    assert [int(r["predict"]) for r in rows] == cert.prediction.tolist()
    assert cert.radius.max() > 0  # some image is certified: the radii are compared for real
    # --target-radius: sampling stops per image; the n column gives the samples it used.
    sequential = tmp_path / f"{noise}-target.tsv"
    assert main([*args[:-1], str(sequential), "--n", "400", "--target-radius", "0.2"]) == 0
    _, rows = read_tsv(sequential)
    cert = jc.smoothing.certify(apply_fn, params, x[:8], keys, sigma=0.25, num_classes=10,
                                n0=10, n=400, alpha=0.001, noise=noise,
                                target_radius=0.2)  # fmt: skip
    assert [float(r["radius"]) for r in rows] == cert.radius.tolist()
    assert [int(r["n"]) for r in rows] == (cert.num_samples - 10).tolist()
    assert min(int(r["n"]) for r in rows) < 400  # some image stopped early
    capsys.readouterr()
    assert main(["report", str(out), "--radii", "0,0.25"]) == 0
    table = capsys.readouterr().out
    assert f"| file | images | {NORMS[noise]} r=0 | {NORMS[noise]} r=0.25 |" in table
    legend = "(sigma=0.25)" if noise == "gaussian" else f"({noise}, sigma=0.25)"
    assert f"| {noise} {legend} | 8 |" in table
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["norm"] == NORMS[noise]


@pytest.mark.slow
def test_predict_and_demo_take_the_noise(model_dir, tmp_path, capsys):
    """predict --noise overrides the model's (Gaussian) noise, as the library's predict; demo
    trains and certifies with its --noise and names its norm and radius cap."""
    out = tmp_path / "pred.tsv"
    args = ["predict", "--model", str(model_dir), "--noise", "uniform", "--n", "200", "--max", "5",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "sigma=0.25, uniform noise)" in capsys.readouterr().out
    assert json.loads(out.with_name("pred.tsv.json").read_text())["noise"] == "uniform"
    _, rows = read_tsv(out)
    apply_fn, params, _ = jc.models.load_model(model_dir)
    x, _ = jc.data.load_digits("test")
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), np.arange(5))
    prediction, counts = jc.smoothing.predict(apply_fn, params, x[:5], keys, sigma=0.25,
                                              num_classes=10, n=200, noise="uniform")  # fmt: skip
    assert [int(r["predict"]) for r in rows] == prediction.tolist()
    assert [int(r["nA"]) for r in rows] == np.sort(counts, axis=1)[:, -1].tolist()
    assert main(["demo", "--noise", "laplace", "--sigmas", "0.25", "--n", "100", "--n0", "10",
                 "--max", "4", "--epochs", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(laplace noise of scale sigma, l1 radius r; r=0:" in out
    cap = jc.smoothing.radius_cap(0.25, 100, 0.001, "laplace")
    assert f"| {cap:.3f} |" in out and "-sigma * log(2 (1 - alpha^(1/n)))" in out


@pytest.mark.slow
def test_verify_exact_rows_and_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "verify.tsv"
    base = ["verify", "--model", str(model_dir), "--eps", "0.02", "--out", str(out)]
    assert main([*base, "--max", "3"]) == 0
    assert main([*base, "--max", "6", "--resume"]) == 0
    header, rows = read_tsv(out)
    assert header == list(jc.results.VERIFY_COLUMNS)
    assert [int(r["idx"]) for r in rows] == list(range(6))
    assert {r["status"] for r in rows} <= {"verified", "falsified", "unknown", "unconfirmed"}
    for r in rows:
        assert (r["status"] == "verified") == (float(r["margin_lower"]) > 0)
    assert "verified accuracy" in capsys.readouterr().out
    # The bound methods never claim more than the exact answer.
    crown = tmp_path / "crown.tsv"
    assert main([*base[:-2], "--method", "crown", "--max", "6", "--out", str(crown)]) == 0
    _, by_crown = read_tsv(crown)
    for exact, relaxed in zip(rows, by_crown):
        if relaxed["status"] == "verified":
            assert exact["status"] == "verified"
    # Minimising the margins exactly, without an attack, gives the same answers.
    minimum = tmp_path / "minimum.tsv"
    args = ["--mode", "minimum", "--attack-steps", "0", "--max", "6", "--out", str(minimum)]
    assert main([*base[:-2], *args]) == 0
    _, by_minimum = read_tsv(minimum)
    assert [r["status"] for r in by_minimum] == [r["status"] for r in rows]
    # Branch and bound and the MILP agree where both decide.
    for strategy in ("bab", "milp"):
        other = tmp_path / f"{strategy}.tsv"
        args = ["--strategy", strategy, "--max", "6", "--out", str(other)]
        assert main([*base[:-2], *args]) == 0
        decided = ("verified", "falsified")
        for a, b in zip(rows, read_tsv(other)[1]):
            if a["status"] in decided and b["status"] in decided:
                assert a["status"] == b["status"]
    # --json: the same figures for scripts (a resume with nothing left to do).
    capsys.readouterr()
    assert main([*base, "--max", "6", "--resume", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 6 and figures["kind"] == "verify"
    assert figures["verified"] == sum(r["status"] == "verified" for r in rows)


@pytest.mark.slow
def test_predict_rows_equal_library_predict_and_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "pred.tsv"
    base = ["predict", "--model", str(model_dir), "--n", "200", "--images", "3", "--out", str(out)]
    assert main([*base, "--max", "4"]) == 0
    assert main([*base, "--max", "7", "--resume"]) == 0  # continues with images 4, 5, 6
    header, rows = read_tsv(out)
    assert header == list(jc.results.PREDICT_COLUMNS)
    assert [int(r["idx"]) for r in rows] == list(range(7))
    apply_fn, params, _ = jc.models.load_model(model_dir)
    x, y = jc.data.load_digits("test")
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), np.arange(7))
    prediction, counts = jc.smoothing.predict(
        apply_fn, params, x[:7], keys, sigma=0.25, num_classes=10, n=200, alpha=0.001
    )
    assert [int(r["predict"]) for r in rows] == prediction.tolist()
    assert [int(r["nA"]) for r in rows] == np.sort(counts, axis=1)[:, -1].tolist()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    accuracy = np.mean(prediction == y[:7])
    assert f"| pred (sigma=0.25) | 7 | {accuracy:.3f} |" in capsys.readouterr().out


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    args = ["train", "--method", "ibp", "--eps", "0.05", "--epochs", "3", "--hidden", "16",
            "--eval-images", "20"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    evaluate = jc.train.robust_accuracies
    calls = []

    def interrupt_in_epoch_two(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*a)

    monkeypatch.setattr(jc.train, "robust_accuracies", interrupt_in_epoch_two)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130  # stopped during epoch 2
    monkeypatch.setattr(jc.train, "robust_accuracies", evaluate)
    assert main([*args, "--out", str(tmp_path / "cut"), "--lr", "0.01", "--resume"]) == 2
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    _, whole, _ = jc.models.load_model(tmp_path / "whole")
    _, resumed, _ = jc.models.load_model(tmp_path / "cut")
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_the_command_line_keeps_its_compilations_where_the_environment_says(tmp_path,
                                                                           monkeypatch):
    """`jaxcert.cli._compile_cache`: the folder follows JAXCERT_COMPILE_CACHE, XDG_CACHE_HOME and
    JAX's own setting; a folder that cannot be made leaves it off; enabled in a fresh process,
    compiling a bound pass writes to it."""
    from jaxcert.cli._compile_cache import cache_folder, enable

    assert cache_folder({"XDG_CACHE_HOME": "/c"}) == os.path.join("/c", "jaxcert", "xla")
    assert cache_folder({"JAXCERT_COMPILE_CACHE": "/d", "XDG_CACHE_HOME": "/c"}) == "/d"
    assert cache_folder({"JAXCERT_COMPILE_CACHE": "Off", "XDG_CACHE_HOME": "/c"}) is None
    assert cache_folder({"JAX_COMPILATION_CACHE_DIR": "/j", "JAXCERT_COMPILE_CACHE": "/d"}) is None
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("JAXCERT_COMPILE_CACHE", str(blocked / "xla"))
    assert enable() is None  # a folder that cannot be made: no cache, and no error
    folder = tmp_path / "xla"
    code = (
        "from jaxcert.cli import _compile_cache; import jax, jaxcert as jc\n"
        "print(_compile_cache.enable())\n"
        "f, p = jc.models.init_model({'kind': 'mlp', 'hidden': [16]}, jax.random.key(0), (4,))\n"
        "x = jax.numpy.full((1, 4), 0.5)\n"
        "print(jc.bounds.crown(jc.trace(f, p, x), jc.LinfBall(x, 0.1)).lower.tolist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAXCERT_COMPILE_CACHE"] = str(folder)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert run.stdout.splitlines()[0] == str(folder)
    assert any(folder.iterdir())
