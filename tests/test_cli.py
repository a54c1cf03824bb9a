"""The command line end to end on digits, at tiny sizes."""

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
from jaxcert.cli import CERTIFY_COLUMNS, main


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


def test_train_saves_a_loadable_model(model_dir):
    apply_fn, params, info = jc.models.load_model(model_dir)
    assert info["metadata"]["sigma"] == 0.25
    x, y = jc.data.load_digits("test")
    assert jc.train.accuracy(apply_fn, params, x, y) == pytest.approx(
        info["metadata"]["test_accuracy"]
    )


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


def test_resume_refuses_other_settings(model_dir, tmp_path, capsys):
    out = tmp_path / "cert.tsv"
    base = ["certify", "--model", str(model_dir), "--n", "100", "--max", "2", "--out", str(out)]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base[:-2], "--sigma", "0.5", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sigma" in err[0]


def test_partial_trailing_row_is_cut(tmp_path):
    path = tmp_path / "log.tsv"
    with ResumableTable(path, ["idx", "v"], {"a": 1}) as log:
        log.write({"idx": 0, "v": "x"})
    with open(path, "a") as f:
        f.write("1\tpart")  # a row cut short by a kill
    with ResumableTable(path, ["idx", "v"], {"a": 1}, resume=True) as log:
        assert list(log.done) == ["0"]
        log.write({"idx": 1, "v": "y"})
    assert path.read_text() == "idx\tv\n0\tx\n1\ty\n"


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


def test_certify_rows_equal_library_certify(model_dir):
    apply_fn, params, _ = jc.models.load_model(model_dir)
    x, y = jc.data.load_digits("test")
    rows = jc.cli.certify_rows(
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


def test_verify_milp_rows_and_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "verify.tsv"
    base = ["verify", "--model", str(model_dir), "--eps", "0.02", "--out", str(out)]
    assert main([*base, "--max", "3"]) == 0
    assert main([*base, "--max", "6", "--resume"]) == 0
    header, rows = read_tsv(out)
    assert header == list(jc.cli.VERIFY_COLUMNS)
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
    # --json: the same figures for scripts (a resume with nothing left to do).
    capsys.readouterr()
    assert main([*base, "--max", "6", "--resume", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == 6 and figures["kind"] == "verify"
    assert figures["verified"] == sum(r["status"] == "verified" for r in rows)


def test_predict_rows_equal_library_predict_and_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "pred.tsv"
    base = ["predict", "--model", str(model_dir), "--n", "200", "--images", "3", "--out", str(out)]
    assert main([*base, "--max", "4"]) == 0
    assert main([*base, "--max", "7", "--resume"]) == 0  # continues with images 4, 5, 6
    header, rows = read_tsv(out)
    assert header == list(jc.cli.PREDICT_COLUMNS)
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


def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch):
    args = ["train", "--method", "ibp", "--eps", "0.05", "--epochs", "3", "--hidden", "16",
            "--eval-images", "20"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    evaluate = jc.cli.robust_accuracies
    calls = []

    def interrupt_in_epoch_two(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*a)

    monkeypatch.setattr(jc.cli, "robust_accuracies", interrupt_in_epoch_two)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130  # stopped during epoch 2
    monkeypatch.setattr(jc.cli, "robust_accuracies", evaluate)
    assert main([*args, "--out", str(tmp_path / "cut"), "--lr", "0.01", "--resume"]) == 2
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    _, whole, _ = jc.models.load_model(tmp_path / "whole")
    _, resumed, _ = jc.models.load_model(tmp_path / "cut")
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
