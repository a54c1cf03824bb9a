"""Relaxed certification: bounds on a traced network's outputs over an input set."""

from ._branching import DomainBounds as DomainBounds
from ._branching import FirstLayer as FirstLayer
from ._branching import adaptive_slopes as adaptive_slopes
from ._branching import bound_input_domains as bound_input_domains
from ._branching import bound_relu_domains as bound_relu_domains
from ._branching import first_layer as first_layer
from ._branching import neuron_layout as neuron_layout
from ._branching import split_estimates as split_estimates
from ._crown import alpha_crown as alpha_crown
from ._crown import crown as crown
from ._crown import intermediate_bounds as intermediate_bounds
from ._ibp import ibp as ibp
from ._interval import Interval as Interval
from ._lp import lp as lp
from ._lp import lp_model as lp_model
from ._lp import solve_rows as solve_rows
from ._methods import METHODS as METHODS
from ._methods import certify as certify
from ._methods import margins as margins
from ._spec import check_inputs as check_inputs
from ._spec import margin_matrix as margin_matrix
from ._stability import breakpoints as breakpoints
from ._stability import relu_counts as relu_counts
