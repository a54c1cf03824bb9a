"""Reading VNN-LIB property files (the SMT-LIB subset of VNN-COMP) into jaxcert specifications.

A property declares real inputs `X_i` and outputs `Y_j` and asserts constraints; every assert
holds at once, and together they describe the *counterexamples*. Their disjunctive normal form
is a union of conjunctions, each of bounds on single inputs (a box) and linear inequalities
`c . Y <= d` on the outputs. Usually the inputs and outputs are asserted apart (a box, or a
disjunction of boxes, and one unsafe output region); some benchmarks pair each box with its own
output constraints inside one `or`. Both read into cases (box, unsafe output region). The
property holds (`unsat` in VNN-COMP's words) when no input of any case's box drives the outputs
into that case's unsafe region.

References:
  VNN-COMP, "VNN-LIB: the neural network verification library", https://www.vnnlib.org/.
"""

import gzip
import itertools
import re
import zlib
from pathlib import Path

import numpy as np

from ._sets import Case, Property

_NAME = re.compile(r"^([XY])_(\d+)$")


def _tokens(text):
    text = re.sub(r";[^\n]*", " ", text)
    return re.findall(r"\(|\)|[^\s()]+", text)


def _parse(tokens):
    """S-expressions of the token list, as nested lists of strings."""
    stack, top = [], []
    for token in tokens:
        if token == "(":
            stack.append(top)
            top = []
        elif token == ")":
            if not stack:
                raise ValueError("unbalanced ')' in the VNN-LIB file")
            parent = stack.pop()
            parent.append(top)
            top = parent
        else:
            top.append(token)
    if stack:
        raise ValueError("unbalanced '(' in the VNN-LIB file")
    return top


def _linear(expr, sizes):
    """(coefficients by (kind, index), constant) of a linear term."""
    if isinstance(expr, str):
        match = _NAME.match(expr)
        if match:
            kind, index = match.group(1), int(match.group(2))
            if index >= sizes[kind]:
                raise ValueError(f"{expr} is used but not declared")
            return {(kind, index): 1.0}, 0.0
        try:
            value = float(expr)
        except ValueError:
            raise ValueError(f"unknown symbol {expr!r} in the VNN-LIB file") from None
        if not np.isfinite(value):
            raise ValueError(f"the number {expr!r} in the VNN-LIB file is not finite")
        return {}, value
    head, *args = expr
    parts = [_linear(a, sizes) for a in args]
    if head == "+" or (head == "-" and len(parts) > 1):
        sign = [1.0] + [1.0 if head == "+" else -1.0] * (len(parts) - 1)
        coeffs, const = {}, 0.0
        for s, (c, k) in zip(sign, parts):
            for var, value in c.items():
                coeffs[var] = coeffs.get(var, 0.0) + s * value
            const += s * k
        return coeffs, const
    if head == "-":
        c, k = parts[0]
        return {v: -x for v, x in c.items()}, -k
    if head == "*":
        coeffs, const = parts[0]
        for c, k in parts[1:]:
            if coeffs and c:
                raise ValueError("a product of two variables is not linear")
            if coeffs:
                coeffs, const = {v: x * k for v, x in coeffs.items()}, const * k
            else:
                coeffs, const = {v: x * const for v, x in c.items()}, const * k
        return coeffs, const
    raise ValueError(f"unsupported operator {head!r} in a linear term")


_COMPARE = {
    "<=": float.__le__,
    "<": float.__lt__,
    ">=": float.__ge__,
    ">": float.__gt__,
    "=": float.__eq__,
}


def _atoms(expr, sizes):
    """Disjunctive normal form: a list of conjunctions, each a list of (coeffs, bound) with
    coeffs . vars <= bound and no coefficient zero. An always-true comparison is the empty
    conjunction, an always-false one the empty disjunction."""
    head, *args = expr
    if head == "and":
        return [sum(c, []) for c in itertools.product(*(_atoms(a, sizes) for a in args))]
    if head == "or":
        return [c for a in args for c in _atoms(a, sizes)]
    if head in ("<=", ">=", "<", ">", "="):
        if len(args) != 2:
            raise ValueError(f"({head} ...) needs two terms, got {len(args)}")
        (left, lk), (right, rk) = (_linear(a, sizes) for a in args)
        diff = {v: left.get(v, 0.0) - right.get(v, 0.0) for v in {*left, *right}}
        diff = {v: a for v, a in diff.items() if a != 0.0}
        bound = rk - lk  # left - right <= rk - lk
        if not diff:  # no variable left (such as 0 * X_0 <= -1): a constant comparison
            holds = _COMPARE[head](0.0, bound)
            return [[]] if holds else []  # always true: no constraint; false: no conjunction
        less = [(diff, bound)]
        greater = [({v: -x for v, x in diff.items()}, -bound)]
        if head in ("<=", "<"):
            return [less]
        if head in (">=", ">"):
            return [greater]
        return [less + greater]
    raise ValueError(f"unsupported assertion {head!r}; VNN-LIB uses and, or, <=, >=")


def read_vnnlib(path: str | Path) -> Property:
    """Read a VNN-LIB property file (``.vnnlib``, or gzip-compressed ``.vnnlib.gz``).

    Args:
      path: the file (str or Path); always a path, never the property's text (see
        `parse_vnnlib`).

    Returns:
      A `Property`.

    Raises:
      TypeError: `path` is not a str or Path.
      ValueError: starting with the path: a file that cannot be read (missing, a directory, a
        corrupt gzip, not UTF-8 text), or text that `parse_vnnlib` refuses.
    """
    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str or Path to a .vnnlib file, got {type(path)}")
    text = _read_text(Path(path))
    try:
        return parse_vnnlib(text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _read_text(path):
    """The text of a property file, plain or gzip; ValueError naming the file if unreadable."""
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        if "declare-const" in str(path):
            raise ValueError(
                "read_vnnlib takes a file path and was given VNN-LIB text: use parse_vnnlib(text)"
            ) from None
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ValueError(f"{path}: cannot read the VNN-LIB file: {reason}") from None


def parse_vnnlib(text: str) -> Property:
    """Parse the text of a VNN-LIB property (see `read_vnnlib` for a file).

    An inequality whose variables all have coefficient zero is a constant comparison: always
    true, it constrains nothing; always false, it empties the conjunction it is in (a property
    with no case left holds).

    Args:
      text: the property, a str.

    Returns:
      A `Property`.

    Raises:
      TypeError: `text` is not a str.
      ValueError: malformed text, a nonlinear term, a constraint that mixes X and Y, an input
        that is not bounded on both sides, or an undeclared variable.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str holding a VNN-LIB property, got {type(text)}")
    sizes = {"X": 0, "Y": 0}
    asserts = []
    for expr in _parse(_tokens(text)):
        if not isinstance(expr, list) or not expr:
            raise ValueError(f"unexpected {expr!r} at the top level of the VNN-LIB file")
        if expr[0] == "declare-const":
            match = _NAME.match(expr[1]) if len(expr) == 3 else None
            if match is None or expr[2] != "Real":
                raise ValueError(f"unsupported declaration {expr}; use (declare-const X_i Real)")
            kind, index = match.group(1), int(match.group(2))
            if index != sizes[kind]:
                raise ValueError(f"{expr[1]} declared out of order")
            sizes[kind] += 1
        elif expr[0] == "assert":
            asserts.append(expr[1])
        else:
            raise ValueError(f"unsupported command {expr[0]!r} in the VNN-LIB file")
    if not sizes["X"] or not sizes["Y"]:
        raise ValueError("a VNN-LIB property declares inputs X_i and outputs Y_j")
    input_dnf, output_dnf, paired = [[]], [[]], [[]]
    for expr in asserts:
        dnf = _atoms(expr, sizes)
        kinds = [{v[0] for coeffs, _ in conj for v in coeffs} for conj in dnf]
        if any(len(coeffs) > 1 and len({v[0] for v in coeffs}) > 1 for conj in dnf
               for coeffs, _ in conj):  # fmt: skip
            raise ValueError("an inequality mixing inputs and outputs is not supported")
        if all(k <= {"X"} for k in kinds):
            input_dnf[:] = [a + b for a in input_dnf for b in dnf]
        elif all(k <= {"Y"} for k in kinds):
            output_dnf[:] = [a + b for a in output_dnf for b in dnf]
        else:  # each conjunction pairs input bounds with output constraints
            paired[:] = [a + b for a in paired for b in dnf]
    cases = {}
    for conj in (a + b for a in input_dnf for b in paired):
        box = _box([atom for atom in conj if _kind(atom) == "X"], sizes["X"])
        if np.any(box[0] > box[1]):
            continue  # an empty box holds no counterexample
        key = (box[0].tobytes(), box[1].tobytes())
        case = cases.setdefault(key, Case(*box, []))
        for out in output_dnf:
            rows = [atom for atom in conj if _kind(atom) == "Y"] + out
            if not rows:
                raise ValueError("the property constrains no output: every input would be unsafe")
            case.unsafe.append(_halfspaces(rows, sizes["Y"]))
    return Property(list(cases.values()))


def _kind(atom):
    coeffs, _ = atom
    return next(iter(coeffs))[0]


def _box(conjunction, size):
    lower, upper = np.full(size, -np.inf), np.full(size, np.inf)
    for coeffs, bound in conjunction:
        if len(coeffs) != 1:
            raise ValueError("input constraints must bound one X_i each (a box)")
        (((_, index), a),) = coeffs.items()
        if a > 0:
            upper[index] = min(upper[index], bound / a)
        else:  # a < 0 (zero coefficients are gone)
            lower[index] = max(lower[index], bound / a)
    if not np.all(np.isfinite(lower) & np.isfinite(upper)):
        missing = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
        raise ValueError(f"inputs X_{missing[0]} (and {len(missing) - 1} more) are unbounded")
    return lower, upper


def _halfspaces(conjunction, size):
    C = np.zeros((len(conjunction), size))
    d = np.zeros(len(conjunction))
    for k, (coeffs, bound) in enumerate(conjunction):
        for (_, index), a in coeffs.items():
            C[k, index] += a
        d[k] = bound
    return C, d
