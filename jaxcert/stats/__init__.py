"""Exact binomial statistics in pure JAX, computed in float64 and rounded outward (batched;
jit-able when x64 is enabled)."""

from ._binomial import binom_pvalue as binom_pvalue
from ._clopper_pearson import clopper_pearson as clopper_pearson
from ._clopper_pearson import lower_bound_pair as lower_bound_pair
from ._clopper_pearson import lower_confidence_bound as lower_confidence_bound
from ._clopper_pearson import upper_confidence_bound as upper_confidence_bound
