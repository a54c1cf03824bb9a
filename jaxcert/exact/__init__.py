"""Exact certification: branch and bound (beta-CROWN, input splits) and MILP on OR-Tools."""

from ._distortion import Distortion as Distortion
from ._distortion import minimal_distortion as minimal_distortion
from ._property import PropertyResult as PropertyResult
from ._property import check_property_options as check_property_options
from ._property import verify_property as verify_property
from ._verify import Verification as Verification
from ._verify import margin_optima as margin_optima
from ._verify import verify as verify
