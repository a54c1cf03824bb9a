"""VNN-LIB properties parse to the right input boxes and unsafe output regions."""

import numpy as np
import pytest

from jaxcert.vnnlib import read_vnnlib

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
    prop = read_vnnlib(text)
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
    [case] = read_vnnlib(text).cases  # X_0 in [1, 0] is empty
    assert case.lower.tolist() == [0, 0] and case.upper.tolist() == [1, 1]
    empty = HEADER + "(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (>= X_1 0))"
    assert read_vnnlib(empty + "(assert (<= X_1 1)) (assert (<= Y_0 1))").cases == []


def test_boxes_paired_with_their_own_output_constraints():
    text = HEADER + """
    (assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 2))
                (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_1 -1))
                (and (>= X_0 5) (<= X_0 6) (>= X_1 5) (<= X_1 6) (>= Y_2 Y_0))))
    (assert (<= Y_2 7))
    """
    prop = read_vnnlib(text)
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
    prop = read_vnnlib(text)
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
        read_vnnlib(HEADER + body)


def _relu_net():
    import jax

    import jaxcert as jc

    # y0 = relu(x0 - x1), y1 = relu(x1 - x0), y2 = 0.5 (a constant output)
    w = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)

    def apply_fn(p, x):
        h = jax.nn.relu(x @ p[0])
        return jax.numpy.concatenate([h, jax.numpy.full((x.shape[0], 1), 0.5)], axis=1)

    return jc.trace(apply_fn, [w], np.zeros((1, 2), np.float32)), apply_fn, [w]


@pytest.mark.parametrize("solver", ["highs", "scip"])
def test_properties_with_a_known_answer(solver):
    import jaxcert as jc

    net, apply_fn, params = _relu_net()
    box = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 0.25))"
    # Unsafe: Y_0 >= 0.6. Reachable (x0 = 1, x1 = 0 gives y0 = 1): sat, with a real witness.
    sat = jc.exact.verify_property(net, read_vnnlib(HEADER + box + "(assert (>= Y_0 0.6))"),
                                   solver=solver)  # fmt: skip
    assert sat.result == "sat"
    x, y = sat.counterexample
    assert 0 <= x[0] <= 1 and 0 <= x[1] <= 0.25 and y[0] >= 0.6 - 1e-6
    np.testing.assert_allclose(apply_fn(params, x[None].astype(np.float32))[0], y, rtol=1e-6)
    # Unsafe: Y_1 >= 0.3 or Y_2 <= 0.4. y1 = relu(x1 - x0) <= 0.25 and y2 = 0.5: unsat.
    unsafe = "(assert (or (>= Y_1 0.3) (<= Y_2 0.4)))"
    assert jc.exact.verify_property(net, read_vnnlib(HEADER + box + unsafe),
                                    solver=solver).result == "unsat"  # fmt: skip
    # Needs the MILP (CROWN alone cannot rule it out): Y_0 >= 0.2 and Y_1 >= 0.2 is empty, since
    # one of relu(x0 - x1), relu(x1 - x0) is always 0.
    both = "(assert (>= Y_0 0.2)) (assert (>= Y_1 0.2))"
    net_bounds = jc.bounds.crown(net, jc.Box(np.zeros((1, 2)), np.array([[1.0, 0.25]])))
    assert float(net_bounds.upper[0, 0]) >= 0.2 and float(net_bounds.upper[0, 1]) >= 0.2
    assert jc.exact.verify_property(net, read_vnnlib(HEADER + box + both),
                                    solver=solver).result == "unsat"  # fmt: skip


def test_verify_property_refuses_bad_options():
    import jaxcert as jc

    net, _, _ = _relu_net()
    prop = read_vnnlib(HEADER + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0))"
                       "(assert (<= X_1 1)) (assert (>= Y_0 0.6))")  # fmt: skip
    with pytest.raises(ValueError, match="solver"):
        jc.exact.verify_property(net, prop, solver="cp-sat")
    with pytest.raises(ValueError, match="time_limit"):
        jc.exact.verify_property(net, prop, time_limit=0)
    with pytest.raises(TypeError, match="Property"):
        jc.exact.verify_property(net, "prop.vnnlib")
