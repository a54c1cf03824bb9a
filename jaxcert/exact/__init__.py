"""Exact certification: MILP on OR-Tools for small ReLU networks."""

from ._verify import Verification as Verification
from ._verify import verify as verify
