"""jaxcert report: tables that match a hand count, and the plot."""

import json

import pytest

from jaxcert.cli import main
from jaxcert.results import CERTIFY_COLUMNS, VERIFY_COLUMNS


def _write(path, columns, rows, settings):
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, 0)) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    path.with_name(path.name + ".json").write_text(json.dumps(settings))


def test_report_counts_and_plot(tmp_path, capsys):
    # (radius, correct): certified correct at r=0: 3 of 5; at r=0.5: 2 (0.5 counts: radius >= r).
    cert = [(0.2, 1), (0.5, 1), (0.9, 1), (0.0, 0), (0.7, 0)]
    _write(
        tmp_path / "a.tsv",
        CERTIFY_COLUMNS,
        [{"idx": i, "radius": r, "correct": c} for i, (r, c) in enumerate(cert)],
        {"sigma": 0.25},
    )
    statuses = [("verified", 1, 1), ("verified", 2, 3), ("falsified", 0, 0), ("unknown", 4, 4)]
    _write(
        tmp_path / "v.tsv",
        VERIFY_COLUMNS,
        [
            {"idx": i, "status": s, "label": lab, "predict": pred}
            for i, (s, lab, pred) in enumerate(statuses)
        ],
        {"method": "milp", "eps": 0.02},
    )
    png = tmp_path / "curve.png"
    args = ["report", str(tmp_path / "a.tsv"), str(tmp_path / "v.tsv"), "--radii", "0,0.5,1"]
    assert main([*args, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| a (sigma=0.25) | 5 | 0.600 | 0.400 | 0.000 |" in out
    # verified and predict == label: only the first row; statuses 2 verified, 1 falsified.
    assert "| v (milp 0.02) | 4 | 0.250 | 2 | 1 | 1 |" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_refuses_other_files_in_one_line(tmp_path, capsys):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    assert main(["report", str(tmp_path / "x.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a jaxcert certify, verify or predict file" in err[0]
    assert main(["report", str(tmp_path / "missing.tsv")]) == 2
    assert main(["report", str(tmp_path / "x.tsv"), "--radii", "-1"]) == 2


@pytest.mark.parametrize("plot", [True, False])
def test_report_plot_needs_certify_files(tmp_path, capsys, plot):
    _write(tmp_path / "v.tsv", VERIFY_COLUMNS, [{"idx": 0, "status": "verified"}], {})
    args = ["report", str(tmp_path / "v.tsv")]
    args += ["--plot", str(tmp_path / "p.png")] if plot else []
    assert main(args) == (2 if plot else 0)


def test_json_output_of_report_and_logs(tmp_path, capsys):
    _write(tmp_path / "a.tsv", CERTIFY_COLUMNS,
           [{"idx": 0, "radius": 0.3, "correct": 1}, {"idx": 1, "radius": 0.0, "correct": 0}],
           {"sigma": 0.5})  # fmt: skip
    assert main(["report", str(tmp_path / "a.tsv"), "--radii", "0,0.25,0.5", "--json"]) == 0
    [figures] = json.loads(capsys.readouterr().out)
    assert figures["certified_accuracy"] == {"0": 0.5, "0.25": 0.5, "0.5": 0.0}
    assert figures["kind"] == "certify" and figures["images"] == 2


def test_report_checks_every_file_before_printing(tmp_path, capsys):
    """A log without rows (was an error about `radius`, naming no file), a file that does not
    parse, or --plot without certify files: one line naming the file, nothing printed."""
    _write(tmp_path / "a.tsv", CERTIFY_COLUMNS, [{"idx": 0, "radius": 0.3, "correct": 1}], {})
    _write(tmp_path / "empty.tsv", CERTIFY_COLUMNS, [], {})
    _write(tmp_path / "v.tsv", VERIFY_COLUMNS, [{"idx": 0, "status": "verified"}], {})
    (tmp_path / "bad.tsv.json").write_text("{")
    (tmp_path / "bad.tsv").write_text((tmp_path / "a.tsv").read_text())
    cases = [
        ([tmp_path / "a.tsv", tmp_path / "empty.tsv"], f"{tmp_path / 'empty.tsv'} holds no result"),
        ([tmp_path / "a.tsv", tmp_path / "bad.tsv"], f"{tmp_path / 'bad.tsv.json'} is not valid"),
        ([tmp_path / "a.tsv", tmp_path], f"{tmp_path} is a directory"),
        ([tmp_path / "v.tsv", "--plot", tmp_path / "p.png"], "--plot draws certify files"),
    ]
    for files, message in cases:
        assert main(["report", *map(str, files)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err
        assert len(captured.err.strip().splitlines()) == 1


def test_radii_are_labelled_with_the_norm_of_their_noise(tmp_path, capsys, monkeypatch):
    """l2 for gaussian noise and for logs without a recorded noise (older jaxcert), l1 for
    laplace and uniform; files of two norms never share a column or an axis."""
    rows = [{"idx": 0, "radius": 0.3, "correct": 1}, {"idx": 1, "radius": 0.0, "correct": 0}]
    files = {
        "old": {"sigma": 0.25},
        "g": {"sigma": 0.25, "noise": "gaussian"},
        "lap": {"sigma": 0.5, "noise": "laplace"},
        "uni": {"sigma": 0.5, "noise": "uniform"},
    }
    for name, settings in files.items():
        _write(tmp_path / f"{name}.tsv", CERTIFY_COLUMNS, rows, settings)
    paths = [str(tmp_path / f"{name}.tsv") for name in ("lap", "old", "g", "uni")]
    import matplotlib.axes

    labels = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda self, text: labels.append(text))
    png = tmp_path / "p.png"
    assert main(["report", *paths, "--radii", "0,0.5", "--plot", str(png)]) == 0
    assert labels == ["radius (l1)", "radius (l2)"]  # one panel per norm, in file order
    assert capsys.readouterr().out.split("\n\nplot written")[0] == (
        "| file | images | l1 r=0 | l1 r=0.5 |\n|---|---|---|---|\n"
        "| lap (laplace, sigma=0.5) | 2 | 0.500 | 0.000 |\n"
        "| uni (uniform, sigma=0.5) | 2 | 0.500 | 0.000 |\n\n"
        "| file | images | l2 r=0 | l2 r=0.5 |\n|---|---|---|---|\n"
        "| old (sigma=0.25) | 2 | 0.500 | 0.000 |\n"
        "| g (sigma=0.25) | 2 | 0.500 | 0.000 |"
    )
    assert main(["report", *paths, "--json"]) == 0
    assert [s["norm"] for s in json.loads(capsys.readouterr().out)] == ["l1", "l2", "l2", "l1"]
    _write(tmp_path / "bad.tsv", CERTIFY_COLUMNS, rows, {"noise": "cauchy"})
    assert main(["report", paths[0], str(tmp_path / "bad.tsv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"{tmp_path / 'bad.tsv'}: its settings record an unknown noise" in captured.err


def test_plot_without_matplotlib_is_one_line_before_anything_is_printed(
    tmp_path, capsys, monkeypatch
):
    """The error names the install extra as the README does, and comes before any table (it
    came after the tables, with exit status 2)."""
    import re
    import sys
    from pathlib import Path

    _write(tmp_path / "a.tsv", CERTIFY_COLUMNS, [{"idx": 0, "radius": 0.3, "correct": 1}], {})
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    assert main(["report", str(tmp_path / "a.tsv"), "--plot", str(tmp_path / "p.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [extra] = set(re.findall(r'needs matplotlib: `(pip install "[^"]+")`', readme))
    assert extra in captured.err
    assert not (tmp_path / "p.png").exists()
    assert main(["report", str(tmp_path / "a.tsv")]) == 0  # without --plot: no matplotlib needed


def test_a_plot_that_cannot_be_written_prints_no_table(tmp_path, capsys):
    _write(tmp_path / "a.tsv", CERTIFY_COLUMNS, [{"idx": 0, "radius": 0.3, "correct": 1}], {})
    png = tmp_path / "p.nosuchformat"  # matplotlib refuses the format when it saves
    assert main(["report", str(tmp_path / "a.tsv"), "--plot", str(png)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
