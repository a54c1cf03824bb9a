"""Tracing JAX classifiers into networks of linear operations and ReLUs."""

from ._trace import Equation as Equation
from ._trace import Network as Network
from ._trace import UnsupportedOperation as UnsupportedOperation
from ._trace import Var as Var
from ._trace import bind as bind
from ._trace import evaluate as evaluate
from ._trace import read as read
from ._trace import run as run
from ._trace import trace as trace
