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
    [(lower, upper)] = prop.boxes
    np.testing.assert_array_equal(lower, [-0.5, 0.25])
    np.testing.assert_array_equal(upper, [0.5, 1.0])
    assert len(prop.unsafe) == 2
    for (C, d), j in zip(prop.unsafe, (1, 2)):
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
    assert [b[0].tolist() for b in prop.boxes] == [[0.0, 0.1], [0.8, 0.7]]
    assert [b[1].tolist() for b in prop.boxes] == [[0.1, 0.2], [0.9, 1.0]]
    [(C, d)] = prop.unsafe
    np.testing.assert_array_equal(C, [[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(d, [-3.5])


def test_disjunctive_outputs_with_linear_terms_expand_to_dnf():
    text = HEADER + """
    (assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1))
    (assert (or (and (<= (+ Y_0 (* 2 Y_1)) 3) (>= Y_2 1.5)) (<= (- Y_2 Y_1) -1)))
    (assert (<= Y_0 10))
    """
    prop = read_vnnlib(text)
    assert len(prop.unsafe) == 2
    (C1, d1), (C2, d2) = prop.unsafe
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
        ("(assert (<= X_0 1)) (assert (<= Y_0 0))", "unbounded"),
        ("(assert (<= X_7 1))", "not declared"),
        ("(assert (<= X_0 1)", "unbalanced"),
        ("(check-sat)", "unsupported command"),
    ],
)
def test_bad_files_are_refused_with_a_reason(body, match):
    with pytest.raises(ValueError, match=match):
        read_vnnlib(HEADER + body)
