"""Relaxed certification: bounds on a traced network's outputs over an input set."""

from ._crown import alpha_crown as alpha_crown
from ._crown import certify as certify
from ._crown import crown as crown
from ._crown import intermediate_bounds as intermediate_bounds
from ._crown import margins as margins
from ._ibp import ibp as ibp
from ._interval import Interval as Interval
from ._lp import lp as lp
from ._stability import relu_counts as relu_counts
