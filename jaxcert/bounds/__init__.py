"""Relaxed certification: bounds on a traced network's outputs over an input set."""

from ._ibp import ibp as ibp
from ._interval import Interval as Interval
