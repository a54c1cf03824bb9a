"""VNN-LIB properties parse to the right input boxes and unsafe output regions."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from jaxcert.vnnlib import parse_vnnlib, read_vnnlib

HEADER = """
; a comment
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
"""


def test_single_box_and_robustness_property(tmp_path):
    text = HEADER + """
    (assert (<= X_0 0.5)) (assert (>= X_0 -0.5))
    (assert (<= X_1 1.0)) (assert (>= X_1 0.25))
    ; Y_0 is not the maximum: Y_1 >= Y_0 or Y_2 >= Y_0
    (assert (or (and (>= Y_1 Y_0)) (and (>= Y_2 Y_0))))
    """
    path = tmp_path / "prop.vnnlib"
    path.write_text(text)
    prop = read_vnnlib(path)
    [(lower, upper, unsafe)] = prop.cases
    np.testing.assert_array_equal(lower, [-0.5, 0.25])
    np.testing.assert_array_equal(upper, [0.5, 1.0])
    assert len(unsafe) == 2
    for (C, d), j in zip(unsafe, (1, 2)):
        want = np.zeros((1, 3))
        want[0, 0], want[0, j] = 1.0, -1.0  # Y_0 - Y_j <= 0
        np.testing.assert_array_equal(C, want)
        np.testing.assert_array_equal(d, [0.0])


def test_several_input_boxes_and_acas_style_output():
    text = HEADER + """
    (assert (or (and (<= X_0 0.1) (>= X_0 0.0) (<= X_1 0.2) (>= X_1 0.1))
                (and (<= X_0 0.9) (>= X_0 0.8) (<= X_1 1.0) (>= X_1 0.7))))
    (assert (<= Y_0 -3.5))
    """
    prop = parse_vnnlib(text)
    assert [c.lower.tolist() for c in prop.cases] == [[0.0, 0.1], [0.8, 0.7]]
    assert [c.upper.tolist() for c in prop.cases] == [[0.1, 0.2], [0.9, 1.0]]
    for case in prop.cases:  # the output constraint holds for every box
        [(C, d)] = case.unsafe
        np.testing.assert_array_equal(C, [[1.0, 0.0, 0.0]])
        np.testing.assert_array_equal(d, [-3.5])


def test_empty_boxes_are_dropped():
    bounds = "(>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)"
    text = HEADER + f"""
    (assert (or (and {bounds} (>= Y_0 2)) (and (>= X_0 1) (<= X_0 0) (>= X_1 0) (<= X_1 1))))
    (assert (<= Y_2 7))
    """
    [case] = parse_vnnlib(text).cases  # X_0 in [1, 0] is empty
    assert case.lower.tolist() == [0, 0] and case.upper.tolist() == [1, 1]
    empty = HEADER + "(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (>= X_1 0))"
    assert parse_vnnlib(empty + "(assert (<= X_1 1)) (assert (<= Y_0 1))").cases == []


def test_boxes_paired_with_their_own_output_constraints():
    text = HEADER + """
    (assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 2))
                (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_1 -1))
                (and (>= X_0 5) (<= X_0 6) (>= X_1 5) (<= X_1 6) (>= Y_2 Y_0))))
    (assert (<= Y_2 7))
    """
    prop = parse_vnnlib(text)
    assert [c.lower.tolist() for c in prop.cases] == [[0, 0], [5, 5]]  # equal boxes merged
    (C1, d1), (C2, d2) = prop.cases[0].unsafe
    np.testing.assert_array_equal(C1, [[-1, 0, 0], [0, 0, 1]])  # -Y_0 <= -2 and Y_2 <= 7
    np.testing.assert_array_equal(d1, [-2, 7])
    np.testing.assert_array_equal(C2, [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(d2, [-1, 7])
    [(C3, d3)] = prop.cases[1].unsafe
    np.testing.assert_array_equal(C3, [[1, 0, -1], [0, 0, 1]])  # Y_0 - Y_2 <= 0
    np.testing.assert_array_equal(d3, [0, 7])


def test_disjunctive_outputs_with_linear_terms_expand_to_dnf():
    text = HEADER + """
    (assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1))
    (assert (or (and (<= (+ Y_0 (* 2 Y_1)) 3) (>= Y_2 1.5)) (<= (- Y_2 Y_1) -1)))
    (assert (<= Y_0 10))
    """
    prop = parse_vnnlib(text)
    [case] = prop.cases
    assert len(case.unsafe) == 2
    (C1, d1), (C2, d2) = case.unsafe
    np.testing.assert_array_equal(C1, [[1, 2, 0], [0, 0, -1], [1, 0, 0]])
    np.testing.assert_array_equal(d1, [3, -1.5, 10])
    np.testing.assert_array_equal(C2, [[0, -1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(d2, [-1, 10])
    # The region is read the right way round: a point satisfies it exactly when it should.
    y = np.array([1.0, 0.5, 2.0])  # Y_0 + 2 Y_1 = 2 <= 3 and Y_2 >= 1.5 and Y_0 <= 10
    assert np.all(C1 @ y <= d1) and not np.all(C2 @ y <= d2)


@pytest.mark.parametrize(
    "body, match",
    [
        ("(assert (<= (* X_0 Y_0) 1))", "not linear|mixing"),
        ("(assert (<= (+ X_0 Y_0) 1))", "mixing"),
        ("(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1))",
         "constrains no output"),
        ("(assert (<= X_0 1)) (assert (<= Y_0 0))", "unbounded"),
        ("(assert (<= X_7 1))", "not declared"),
        ("(assert (<= X_0 1)", "unbalanced"),
        ("(check-sat)", "unsupported command"),
        ("(assert (<= X_0 nan))", "not finite"),
    ],
)
def test_bad_files_are_refused_with_a_reason(body, match):
    with pytest.raises(ValueError, match=match):
        parse_vnnlib(HEADER + body)


BOX = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1))"


@pytest.mark.parametrize(
    "atom", ["(<= (* 0 X_0) -1)", "(>= (- X_1 X_1) 0.5)", "(< 0 0)", "(= 1 2)", "(> (* 0 Y_0) 0)"]
)
def test_an_always_false_atom_empties_its_conjunction(atom):
    """0 * X_0 <= -1 holds for no input: the property has no counterexample (it holds)."""
    assert parse_vnnlib(HEADER + BOX + f"(assert {atom}) (assert (>= Y_0 0.6))").cases == []


@pytest.mark.parametrize(
    "atom", ["(>= (* 0 X_0) -1)", "(<= (- X_1 X_1) 0)", "(<= 0 0)", "(= 2 2)", "(< (* 0 Y_2) 1)"]
)
def test_an_always_true_atom_constrains_nothing(atom):
    plain = parse_vnnlib(HEADER + BOX + "(assert (>= Y_0 0.6))")
    [case] = parse_vnnlib(HEADER + BOX + f"(assert {atom}) (assert (>= Y_0 0.6))").cases
    np.testing.assert_array_equal(case.lower, plain.cases[0].lower)
    np.testing.assert_array_equal(case.upper, plain.cases[0].upper)
    [(C, d)] = case.unsafe
    np.testing.assert_array_equal(C, [[-1, 0, 0]])
    np.testing.assert_array_equal(d, [-0.6])


def test_constant_atoms_in_a_disjunction_of_boxes():
    box_a = "(>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)"
    box_b = "(>= X_0 2) (<= X_0 3) (>= X_1 2) (<= X_1 3)"
    box_c = "(>= X_0 4) (<= X_0 5) (>= X_1 4) (<= X_1 5)"
    text = HEADER + f"""
    (assert (or (and {box_a} (<= (* 0 X_0) -1))
                (and {box_b} (>= (* 0 X_1) -1) (<= (+ Y_0 (* 0 X_0)) 1))
                (and {box_c} (>= Y_1 (+ Y_1 1)))))
    """
    [case] = parse_vnnlib(text).cases  # box_a: always false; box_c: Y_1 >= Y_1 + 1 is empty
    assert case.lower.tolist() == [2, 2] and case.upper.tolist() == [3, 3]
    [(C, d)] = case.unsafe  # the zero X coefficient does not make Y_0 <= 1 a mixed inequality
    np.testing.assert_array_equal(C, [[1, 0, 0]])
    np.testing.assert_array_equal(d, [1])


def test_a_vacuous_property_holds():
    """Before: the always-false input atom was dropped and Y_0 >= 0.6 was reachable (sat)."""
    import jaxcert as jc

    net, _, _ = _relu_net()
    box = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 0.25))"
    reachable = "(assert (>= Y_0 0.6))"
    assert jc.exact.verify_property(net, parse_vnnlib(HEADER + box + reachable)).result == "sat"
    vacuous = parse_vnnlib(HEADER + box + "(assert (<= (* 0 X_0) -1))" + reachable)
    assert jc.exact.verify_property(net, vacuous).result == "unsat"


def test_a_file_name_is_never_read_as_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prop(1).vnnlib").write_text(HEADER + BOX + "(assert (<= Y_0 1))")
    for path in ("prop(1).vnnlib", tmp_path / "prop(1).vnnlib"):
        [case] = read_vnnlib(path).cases
        assert case.upper.tolist() == [1, 1]


def _write(path, data):
    if data == "dir":
        path.mkdir()
    elif data is not None:
        path.write_bytes(data)


_PROPERTY = (HEADER + BOX + "(assert (<= Y_0 1))").encode()
_CUT_GZIP = gzip.compress(_PROPERTY, mtime=0)[:-12]


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("missing.vnnlib", None, "cannot read the VNN-LIB file: No such file"),
        ("a_directory.vnnlib", "dir", "cannot read the VNN-LIB file: Is a directory"),
        ("plain.vnnlib.gz", _PROPERTY, "cannot read the VNN-LIB file: Not a gzipped file"),
        ("cut.vnnlib.gz", _CUT_GZIP, "cannot read the VNN-LIB file: Compressed file ended"),
        ("latin1.vnnlib", b"; \xe9t\xe9\n" + _PROPERTY, "cannot read the VNN-LIB file: 'utf-8'"),
        ("unbalanced.vnnlib", _PROPERTY + b"(assert", "unbalanced '\\('"),
        ("unbalanced.vnnlib.gz", gzip.compress(b"(assert (<= X_0 1)", mtime=0), "unbalanced"),
    ],
    ids=["missing", "directory", "not_gzip", "cut_gzip", "latin1", "unbalanced", "unbalanced_gz"],
)
def test_bad_property_files_are_one_line_errors_naming_the_file(tmp_path, name, data, match):
    path = tmp_path / name
    _write(path, data)
    for source in (path, str(path)):
        with pytest.raises(ValueError, match=match) as info:
            read_vnnlib(source)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_text_and_paths_go_to_their_own_function():
    with pytest.raises(ValueError, match="use parse_vnnlib"):
        read_vnnlib(HEADER + BOX + "(assert (<= Y_0 1))")
    with pytest.raises(TypeError, match="path"):
        read_vnnlib(_PROPERTY)
    with pytest.raises(TypeError, match="text"):
        parse_vnnlib(Path("prop.vnnlib"))


def _relu_net():
    import jax

    import jaxcert as jc

    # y0 = relu(x0 - x1), y1 = relu(x1 - x0), y2 = 0.5 (a constant output)
    w = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)

    def apply_fn(p, x):
        h = jax.nn.relu(x @ p[0])
        return jax.numpy.concatenate([h, jax.numpy.full((x.shape[0], 1), 0.5)], axis=1)

    return jc.trace(apply_fn, [w], np.zeros((1, 2), np.float32)), apply_fn, [w]


@pytest.mark.parametrize(
    "solver", ["highs", *(pytest.param(s, marks=pytest.mark.slow) for s in ("race", "scip"))]
)
def test_properties_with_a_known_answer(solver):
    import jaxcert as jc

    net, apply_fn, params = _relu_net()
    box = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 0.25))"
    # Unsafe: Y_0 >= 0.6. Reachable (x0 = 1, x1 = 0 gives y0 = 1): sat, with a real witness.
    sat = jc.exact.verify_property(net, parse_vnnlib(HEADER + box + "(assert (>= Y_0 0.6))"),
                                   solver=solver)  # fmt: skip
    assert sat.result == "sat"
    x, y = sat.counterexample
    assert 0 <= x[0] <= 1 and 0 <= x[1] <= 0.25 and y[0] >= 0.6 - 1e-6
    np.testing.assert_allclose(apply_fn(params, x[None].astype(np.float32))[0], y, rtol=1e-6)
    # Unsafe: Y_1 >= 0.3 or Y_2 <= 0.4. y1 = relu(x1 - x0) <= 0.25 and y2 = 0.5: unsat.
    unsafe = "(assert (or (>= Y_1 0.3) (<= Y_2 0.4)))"
    assert jc.exact.verify_property(net, parse_vnnlib(HEADER + box + unsafe),
                                    solver=solver).result == "unsat"  # fmt: skip
    # Needs the MILP (CROWN alone cannot rule it out): Y_0 >= 0.2 and Y_1 >= 0.2 is empty, since
    # one of relu(x0 - x1), relu(x1 - x0) is always 0.
    both = "(assert (>= Y_0 0.2)) (assert (>= Y_1 0.2))"
    net_bounds = jc.bounds.crown(net, jc.Box(np.zeros((1, 2)), np.array([[1.0, 0.25]])))
    assert float(net_bounds.upper[0, 0]) >= 0.2 and float(net_bounds.upper[0, 1]) >= 0.2
    assert jc.exact.verify_property(net, parse_vnnlib(HEADER + box + both),
                                    solver=solver).result == "unsat"  # fmt: skip


def test_verify_property_refuses_bad_options():
    import jaxcert as jc

    net, _, _ = _relu_net()
    prop = parse_vnnlib(HEADER + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0))"
                       "(assert (<= X_1 1)) (assert (>= Y_0 0.6))")  # fmt: skip
    with pytest.raises(ValueError, match="solver"):
        jc.exact.verify_property(net, prop, solver="cp-sat")
    with pytest.raises(ValueError, match="time_limit"):
        jc.exact.verify_property(net, prop, time_limit=0)
    with pytest.raises(TypeError, match="Property"):
        jc.exact.verify_property(net, "prop.vnnlib")
