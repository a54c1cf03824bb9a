"""Tracing a JAX classifier into a network of linear operations and activations.

`trace` reads the jaxpr of `apply_fn(params, x)`, inlines nested `jit` and `custom_jvp_call`
(that is how `jax.nn.relu` traces) and sorts every equation into one of three kinds:

* "const": depends only on the parameters (evaluated as is, so gradients reach the weights);
* "linear": affine in the input-dependent operands, e.g. a dense layer, a convolution, a bias
  add, a reshape, average pooling, batch norm in inference mode, a residual add;
* "activation": an elementwise function of one input-dependent operand that the activation
  registry (`jaxcert._activations`) matches, by primitive (`max(v, c)`, `min(v, c)`, `abs`,
  `logistic`, `tanh`) or by the name of a jitted library function (`jax.nn.leaky_relu`,
  `jax.nn.hard_tanh`), recorded as `f(v, *constants)` with its entry in `Equation.activation`.

Maxima of input-dependent values (max pooling, `jnp.max`, `jnp.maximum`/`jnp.minimum` of two
such values) are traced as trees of ReLUs, max(a, b) = b + relu(a - b), exact in real
arithmetic, so every method (the MILP included) reads them with no rule of its own.

Anything else that touches the input raises an error naming the primitive and the line of user
code it came from, as does any non-floating value on the input's path (a cast to an integer
type, a comparison). The bound methods in `jaxcert.bounds` interpret this list of equations, one
example at a time (the trace is taken with a batch of one), and vmap over images.
"""

import functools
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core
from jax.typing import ArrayLike

from .._activations import ACTIVATIONS, CALLS, PRIMITIVES

try:  # source lines for error messages; a private helper, so optional
    from jax._src import source_info_util as _source_info
except ImportError:  # pragma: no cover
    _source_info = None

_counter = itertools.count()


@dataclass(frozen=True, eq=False)
class Var:
    """A value in the network; `shape` includes the leading batch axis of one."""

    shape: tuple
    dtype: Any
    id: int = field(default_factory=lambda: next(_counter))


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True, eq=False)
class Equation:
    """One primitive application. `variable[i]` tells whether input i depends on the input x.

    An activation's input-dependent operand is `inputs[0]`, and `activation` its entry in the
    registry (`jaxcert._activations`); None for other kinds.
    """

    primitive: Any
    inputs: tuple
    outputs: tuple
    params: dict
    kind: str
    variable: tuple
    source: str
    activation: Any = None


# Linear in their input-dependent operands whatever the other operands are.
_STRUCTURAL = {
    "add", "sub", "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
    "reduce_sum", "reduce_window_sum", "slice", "concatenate", "stack", "pad",
    "convert_element_type", "copy", "copy_p", "rev", "cumsum",
}  # fmt: skip
# Linear when exactly one operand depends on the input.
_BILINEAR = {"mul", "dot_general", "conv_general_dilated"}
_INLINE = {"jit", "pjit", "custom_jvp_call", "closed_call", "core_call", "remat", "checkpoint"}


class UnsupportedOperation(ValueError):
    """A primitive on the input's path that the bound methods cannot handle."""


class Network:
    """A traced classifier: equations over variables, with the parameters as a pytree.

    Registered as a pytree whose leaves are the parameters, so a Network can be passed through
    jit and grad (for certified training) while its structure stays static.
    """

    def __init__(self, graph, params):
        self.graph = graph
        self.params = params

    # Structure, shared by every copy of the network with other parameter values.
    @property
    def equations(self):
        return self.graph.equations

    @property
    def input_shape(self):
        """Shape of one input, without the batch axis."""
        return self.graph.input_var.shape[1:]

    @property
    def output_shape(self):
        return self.graph.output_var.shape[1:]

    def activations(self):
        """The activation equations, in order; their input variables carry intermediate bounds."""
        return [e for e in self.equations if e.kind == "activation"]

    def interpret(self, x, rules):
        """Run the equations on one example `x` (shape (1, ...)).

        Constant equations are evaluated as they are; a linear or activation equation calls
        `rules[kind](equation, values)` with `values` holding arrays for constant inputs and
        whatever the rules produce (intervals, ...) for input-dependent ones.

        Returns:
          The dict from every variable to its value, and the value of the output.
        """
        env = dict(zip(self.graph.param_vars, jax.tree.leaves(self.params)))
        env[self.graph.input_var] = x
        run(self.equations, env, rules)
        return env, env[self.graph.output_var]

    def __call__(self, x):
        """Evaluate the network on a batch: equals `apply_fn(params, x)`."""
        rules = {"linear": evaluate, "activation": evaluate}

        def one(xi):
            return self.interpret(xi[None], rules)[1][0]

        return jax.vmap(one)(x)

    def tree_flatten(self):
        return jax.tree.flatten(self.params)[0], (self.graph, jax.tree.structure(self.params))

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        graph, treedef = aux
        return cls(graph, jax.tree.unflatten(treedef, leaves))


jax.tree_util.register_pytree_node_class(Network)


@dataclass(frozen=True, eq=False)
class Graph:
    equations: tuple
    param_vars: tuple
    input_var: Var
    output_var: Var


def read(env: Mapping[Var, Any], ref: Var | Literal) -> Any:
    """The value of an equation's operand: a literal's value, or a variable's value in `env`.

    Args:
      env: the values of the variables, e.g. as `Network.interpret` builds them.
      ref: an operand of an equation (`Equation.inputs`): a `Var` or a literal constant.

    Returns:
      The literal's value, or `env[ref]`.
    """
    return ref.value if isinstance(ref, Literal) else env[ref]


def run(equations: Sequence[Equation], env: dict, rules: Mapping[str, Callable]) -> dict:
    """Apply `equations` in order, reading their operands from `env` and adding their results.

    A constant equation is evaluated as it is (`bind`); a linear or activation equation calls
    `rules[kind](equation, values)` (`evaluate` for concrete values).

    Args:
      equations: equations of a `Network` (all of them, or a contiguous part).
      env: the values of the variables read before they are computed (parameters, input).
      rules: {"linear": rule, "activation": rule}.

    Returns:
      `env`, updated in place.
    """
    for eq in equations:
        values = [read(env, v) for v in eq.inputs]
        if eq.kind == "const":
            outs = bind(eq.primitive, values, eq.params)
        else:
            outs = rules[eq.kind](eq, values)
        single = eq.kind == "activation" or not eq.primitive.multiple_results
        env.update(zip(eq.outputs, [outs] if single else outs))
    return env


def evaluate(eq: Equation, values: Sequence[Any]) -> Any:
    """Apply an equation to concrete values: the rule `Network.__call__` gives `run`.

    Args:
      eq: a linear or activation equation of a `Network`.
      values: its operands (`Equation.inputs`), as arrays.

    Returns:
      Its result: an activation through its registry entry (`jaxcert._activations`), any other
      primitive through `bind`.
    """
    if eq.kind == "activation":
        return eq.activation.apply(*values)
    return bind(eq.primitive, values, eq.params)


def bind(primitive: Any, values: Sequence[Any], params: Mapping[str, Any]) -> Any:
    """`primitive.bind(*values, **params)`, except that `reduce_window_sum` (average pooling)
    is computed as a sum of strided slices of the explicitly padded operand, and that a product
    or convolution traced without a precision is computed at full precision where
    `jax.default_matmul_precision("highest")` is in force (every bound: `_rounding`); other
    settings leave it to XLA's default, as before.

    XLA:CPU (jaxlib 0.10) sums padded windows wrongly once a batch reaches about 512 (average
    pooling with SAME padding, window 2x2, stride 2, on a 2x1 image: errors of order 1), and
    the bound methods evaluate the network's equations batched over images and vmapped; the
    slices give the same sums in every batch (`tests/test_ibp.py` rebuilds the case).

    Args:
      primitive: a JAX primitive (`Equation.primitive`).
      values: its operands.
      params: its parameters (`Equation.params`).

    Returns:
      The primitive's result: an array, or a list of arrays for a primitive with
      `multiple_results`.
    """
    if primitive.name == "reduce_window_sum":
        return _window_sum(*values, **params)
    asked = jax.config.jax_default_matmul_precision  # "highest" in `_rounding.full_precision`
    if params.get("precision", "") is None and asked in ("highest", "float32"):
        params = {**params, "precision": (lax.Precision.HIGHEST,) * 2}
    return primitive.bind(*values, **params)


def _window_sum(operand, window_dimensions, window_strides, padding, base_dilation,
                window_dilation):  # fmt: skip
    config = [(lo, hi, d - 1) for (lo, hi), d in zip(padding, base_dilation)]
    operand = jax.lax.pad(operand, jnp.zeros((), operand.dtype), config)
    spans = [(w - 1) * d + 1 for w, d in zip(window_dimensions, window_dilation)]
    sizes = [(n - span) // s + 1 for n, span, s in zip(operand.shape, spans, window_strides)]
    total = None
    for offset in itertools.product(
        *(range(0, span, d) for span, d in zip(spans, window_dilation))
    ):
        limit = [o + (m - 1) * s + 1 for o, m, s in zip(offset, sizes, window_strides)]
        part = jax.lax.slice(operand, offset, limit, window_strides)
        total = part if total is None else total + part
    return total


def trace(apply_fn: Callable, params: Any, x_example: ArrayLike) -> Network:
    """Trace `apply_fn(params, x)` into a `Network` that the bound methods can read.

    Args:
      apply_fn: the classifier, `apply_fn(params, x) -> logits` on a batch (a Flax linen
        `model.apply`, an `apply_fn` from `jaxcert.from_nnx`, or any JAX function).
      params: its parameters (a pytree).
      x_example: one input or a batch of inputs; only its shape (without the batch axis) and
        dtype matter.

    Returns:
      A `Network`; `net(x)` equals `apply_fn(params, x)`.

    Raises:
      UnsupportedOperation: naming a primitive on the input's path that is neither linear nor a
        registered activation, and the line of code it came from.
    """
    x_example = jnp.asarray(x_example)
    if x_example.ndim < 1:
        raise ValueError("x_example must have at least one axis, got a scalar")
    if not jnp.issubdtype(x_example.dtype, jnp.floating):
        raise ValueError(f"x_example must hold floating-point inputs, got {x_example.dtype}")
    one = jax.ShapeDtypeStruct((1, *x_example.shape[1:]), x_example.dtype)
    leaves, treedef = jax.tree.flatten(params)
    closed = jax.make_jaxpr(lambda ls, x: apply_fn(jax.tree.unflatten(treedef, ls), x))(leaves, one)
    if len(closed.jaxpr.outvars) != 1:
        raise ValueError("apply_fn must return a single array of logits")
    builder = _Builder()
    env = {}
    param_vars = tuple(builder.new(v) for v in closed.jaxpr.invars[: len(leaves)])
    input_var = builder.new(closed.jaxpr.invars[-1])
    env.update(zip(closed.jaxpr.invars, (*param_vars, input_var)))
    builder.variable.add(input_var)
    for var, const in zip(closed.jaxpr.constvars, closed.consts):
        env[var] = Literal(const)
    builder.inline(closed.jaxpr, env)
    output = (
        env[closed.jaxpr.outvars[0]]
        if not isinstance(closed.jaxpr.outvars[0], core.Literal)
        else Literal(closed.jaxpr.outvars[0].val)
    )
    if not isinstance(output, Var) or output not in builder.variable:
        raise ValueError("apply_fn's output does not depend on x")
    graph = Graph(tuple(builder.equations), param_vars, input_var, output)
    return Network(graph, params)


class _Builder:
    def __init__(self):
        self.equations = []
        self.variable = set()  # Vars that depend on the input

    def new(self, jaxpr_var):
        return Var(tuple(jaxpr_var.aval.shape), jaxpr_var.aval.dtype)

    def ref(self, env, atom):
        return Literal(atom.val) if isinstance(atom, core.Literal) else env[atom]

    def inline(self, jaxpr, env):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            inputs = tuple(self.ref(env, a) for a in eqn.invars)
            variable = tuple(isinstance(r, Var) and r in self.variable for r in inputs)
            sub = _subjaxpr(eqn)
            pairwise = name in ("max", "min")  # with one constant operand: an activation
            if name in _BY_RELUS and any(variable) and (not pairwise or all(variable)):
                self.by_relus(eqn, inputs, env)
                continue
            if name in _INLINE and eqn.params.get("name") in CALLS and any(variable):
                self.call(eqn, inputs, variable, env)
                continue
            if name in _INLINE and sub is not None and any(variable):
                inner, consts = sub
                inner_env = dict(zip(inner.invars, inputs))
                inner_env.update({v: Literal(c) for v, c in zip(inner.constvars, consts)})
                self.inline(inner, inner_env)
                env.update(zip(eqn.outvars, (self.ref(inner_env, o) for o in inner.outvars)))
                continue
            outputs = tuple(self.new(v) for v in eqn.outvars)
            env.update(zip(eqn.outvars, outputs))
            kind = "const" if not any(variable) else _classify(eqn, inputs, variable)
            if kind != "const":
                self.variable.update(outputs)
            activation = None
            if kind == "activation":
                activation = ACTIVATIONS[PRIMITIVES[name]]
                if not variable[0]:  # max(c, v) = max(v, c): the variable first
                    inputs, variable = inputs[::-1], variable[::-1]
            self.equations.append(
                Equation(
                    eqn.primitive, inputs, outputs, dict(eqn.params), kind, variable,
                    _where(eqn), activation,
                )
            )  # fmt: skip

    def by_relus(self, eqn, inputs, env):
        """A maximum of input-dependent values, traced as ReLUs and linear maps (`_BY_RELUS`)."""
        _check_floating(eqn, inputs, [isinstance(r, Var) for r in inputs])
        rewrite = functools.partial(_BY_RELUS[eqn.primitive.name], **eqn.params)
        avals = [jax.ShapeDtypeStruct(a.aval.shape, a.aval.dtype) for a in eqn.invars]
        try:
            closed = jax.make_jaxpr(rewrite)(*avals)
        except _Refused as why:
            _unsupported(eqn, str(why))
        inner_env = dict(zip(closed.jaxpr.invars, inputs))
        inner_env.update({v: Literal(c) for v, c in zip(closed.jaxpr.constvars, closed.consts)})
        self.inline(closed.jaxpr, inner_env)
        env.update(zip(eqn.outvars, (self.ref(inner_env, o) for o in closed.jaxpr.outvars)))

    def call(self, eqn, inputs, variable, env):
        """A jitted library activation (`CALLS`): one equation per activation it applies."""
        if variable[0] is not True or any(variable[1:]):
            _unsupported(eqn, "an activation of more than one input-dependent value")
        constants = [r.value for r in inputs[1:] if isinstance(r, Literal)]
        if len(constants) != len(inputs) - 1:
            _unsupported(eqn, "an activation whose constants depend on the parameters")
        sub, consts = _subjaxpr(eqn)
        dtype = inputs[0].dtype

        def probe(value):
            point = jnp.full(inputs[0].shape, value, dtype)
            out = jax.core.eval_jaxpr(sub, consts, point, *constants)[0]
            return np.asarray(out, dtype).ravel()[0]

        v = inputs[0]
        for name, constant in CALLS[eqn.params["name"]](probe):
            out = Var(v.shape, v.dtype)
            self.equations.append(
                Equation(
                    eqn.primitive, (v, Literal(np.asarray(constant, dtype))), (out,), {},
                    "activation", (True, False), _where(eqn), ACTIVATIONS[name],
                )
            )  # fmt: skip
            self.variable.add(out)
            v = out
        env[eqn.outvars[0]] = v



# ---------------------------------------------------------------- maxima as trees of ReLUs
# max(a, b) = b + relu(a - b): a maximum between input-dependent values (max pooling, jnp.max,
# jnp.maximum of two variables) is traced as ReLUs and linear maps, exact in real arithmetic
# (so for the MILP), and every bound method reads it with no rule of its own.


def _max_pool_by_relus(x, *, window_dimensions, window_strides, padding, base_dilation,
                       window_dilation):  # fmt: skip
    """`reduce_window_max` as a tree of ReLUs over the window offsets (`_tree_max`).

    Each offset o gives the strided slice x_o of the zero-padded input; where it reads padding,
    which a maximum ignores, it is replaced (through constant 0/1 masks) by the window's first
    entry inside the input.
    """
    if any(d != 1 for d in base_dilation):
        raise _Refused("max pooling with base dilation")
    padded = jax.lax.pad(x, jnp.zeros((), x.dtype), [(lo, hi, 0) for lo, hi in padding])
    spans = [(w - 1) * d + 1 for w, d in zip(window_dimensions, window_dilation)]
    sizes = [(n - span) // s + 1 for n, span, s in zip(padded.shape, spans, window_strides)]
    slices, masks = [], []
    for offset in itertools.product(*(range(0, sp, d) for sp, d in zip(spans, window_dilation))):
        limit = [o + (m - 1) * s + 1 for o, m, s in zip(offset, sizes, window_strides)]
        slices.append(jax.lax.slice(padded, offset, limit, window_strides))
        inside = [
            (lo <= o + np.arange(m) * s) & (o + np.arange(m) * s < lo + n)
            for o, m, s, (lo, _), n in zip(offset, sizes, window_strides, padding, x.shape)
        ]
        masks.append(functools.reduce(np.multiply.outer, inside).astype(x.dtype))
    anchor, taken = None, np.zeros_like(masks[0])  # per position, its first offset inside
    for part, mask in zip(slices, masks):
        first = mask * (1 - taken)
        if first.any():
            term = part if first.all() else part * first
            anchor = term if anchor is None else anchor + term
        taken = np.maximum(taken, mask)
    if not taken.all():
        raise _Refused("max pooling with a window that lies in the padding only")
    values = [
        part if mask.all() else part * mask + anchor * (1 - mask)
        for part, mask in zip(slices, masks)
        if mask.any()
    ]
    return _tree_max(values)


def _tree_max(values):
    """The elementwise maximum of equally shaped arrays, by pairs in one ReLU per level: the
    pairs of a level are stacked, so k arrays take ceil(log2 k) ReLU equations."""
    while len(values) > 1:
        half = len(values) // 2
        # stacked on axis 1: axis 0 stays the batch axis of one that the bound methods expect
        a, b = jnp.stack(values[:half], axis=1), jnp.stack(values[half : 2 * half], axis=1)
        top = _max_by_relu(a, b)
        rest = values[2 * half :]  # an odd one out waits for the next level
        values = [jax.lax.index_in_dim(top, i, 1, keepdims=False) for i in range(half)] + rest
    return values[0]


def _reduce_max_by_relus(x, *, axes, **_):
    """`reduce_max` (`jnp.max`) as a tree of ReLUs over each reduced axis."""
    if 0 in axes:
        raise _Refused("a maximum over the batch axis")
    for axis in sorted(axes, reverse=True):
        x = _tree_max([jax.lax.index_in_dim(x, i, axis, False) for i in range(x.shape[axis])])
    return x


def _max_by_relu(a, b):
    return b + jax.nn.relu(a - b)


def _min_by_relu(a, b):
    return a - jax.nn.relu(a - b)


# Primitives rewritten into ReLUs when their operands (all of them, for max/min) depend on x.
_BY_RELUS = {
    "reduce_window_max": _max_pool_by_relus,
    "reduce_max": _reduce_max_by_relus,
    "max": _max_by_relu,
    "min": _min_by_relu,
}


class _Refused(Exception):
    """A rewrite that does not apply, with the reason for the error message."""


def _subjaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr"):
        sub = eqn.params.get(key)
        if sub is None:
            continue
        if hasattr(sub, "jaxpr"):  # a ClosedJaxpr
            return sub.jaxpr, sub.consts
        return sub, ()
    return None


def _classify(eqn, inputs, variable):
    name = eqn.primitive.name
    _check_floating(eqn, inputs, variable)
    if name in PRIMITIVES:
        if sum(variable) == 1:
            return "activation"
        _unsupported(eqn, "an activation of more than one input-dependent value")
    if name in _STRUCTURAL:
        if name == "pad" and variable[1]:
            _unsupported(eqn, "a padding value that depends on the input")
        return "linear"
    if name in _BILINEAR:
        if sum(variable) == 1:
            return "linear"
        _unsupported(eqn, "a product of two input-dependent values")
    if name == "div" and variable == (True, False):
        return "linear"
    _unsupported(eqn, "an operation that is neither linear nor a registered activation")


def _check_floating(eqn, inputs, variable):
    """Refuse non-floating values on the input's path: bounds of real values cannot follow them.

    A cast to an integer or boolean type rounds or thresholds its operand, and a comparison
    yields a step function: neither is linear, and each is refused by name. So is a cast to a
    narrower floating type (float32 to bfloat16, say, in a mixed-precision model): it rounds by
    far more than the rounding allowance, and a linear bound through it would not hold.
    """
    name = eqn.primitive.name
    out = eqn.outvars[0].aval.dtype
    if name == "convert_element_type" and not jnp.issubdtype(out, jnp.floating):
        _unsupported(eqn, f"a conversion to {np.dtype(out).name}, not a linear map")
    if name == "convert_element_type" and variable[0]:
        source = inputs[0].dtype
        if jnp.finfo(out).nmant < jnp.finfo(source).nmant:
            _unsupported(
                eqn,
                f"a conversion from {np.dtype(source).name} to {np.dtype(out).name}, which "
                f"rounds (trace the model computing in {np.dtype(source).name})",
            )
    dtypes = [v.aval.dtype for v in eqn.outvars]
    dtypes += [r.dtype for r, var in zip(inputs, variable) if var]
    for dtype in dtypes:
        if not jnp.issubdtype(dtype, jnp.floating):
            _unsupported(eqn, f"a value of type {np.dtype(dtype).name} on the input's path")


# Frames inside these packages are not the user's line (Flax's layers call the primitives).
_LIBRARY_DIRS = tuple(
    os.path.dirname(path) + os.sep
    for path in (flax.__file__, jax.__file__, os.path.dirname(__file__))
)


def _where(eqn):
    """The innermost line of user code that produced an equation."""
    if _source_info is None:
        return "unknown location"
    try:
        for frame in _source_info.user_frames(eqn.source_info.traceback):
            if not frame.file_name.startswith(_LIBRARY_DIRS):
                return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"
        return _source_info.summarize(eqn.source_info) or "unknown location"
    except Exception:  # noqa: BLE001 - only for messages
        return "unknown location"


def _unsupported(eqn, why):
    raise UnsupportedOperation(
        f"cannot bound primitive '{eqn.primitive.name}' ({why}) at {_where(eqn)}; supported "
        "on the input's path: dense layers, convolutions, additions, reshapes, average and max "
        "pooling, maxima, inference-mode batch norm and the activations "
        f"{', '.join(sorted(ACTIVATIONS))} (as max(x, c), min(x, c), abs, jax.nn.sigmoid, tanh, "
        "jax.nn.leaky_relu, hard_tanh)"
    )
