"""jaxcert: certified robustness of neural-network classifiers in JAX.

Three families of certificates under one functional API:

* probabilistic: randomized smoothing (`jaxcert.smoothing`, exact statistics in `jaxcert.stats`);
* relaxed: interval and linear bound propagation, alpha-CROWN and the LP relaxation
  (`jaxcert.bounds`);
* exact: MILP on OR-Tools for small networks (`jaxcert.exact`).

Also: certified and adversarial training (`jaxcert.train`), attacks (`jaxcert.attacks`), result
files and reports (`jaxcert.results`, `jaxcert.report`), VNN-LIB properties (`jaxcert.vnnlib`)
and ONNX networks (`jaxcert.from_onnx`).

A classifier is ``apply_fn(params, x) -> logits`` with a leading batch axis on ``x``, exactly a
Flax linen ``model.apply``; ``jaxcert.from_nnx`` adapts a flax.nnx module.
"""

from . import attacks as attacks
from . import bounds as bounds
from . import data as data
from . import exact as exact
from . import graph as graph
from . import models as models
from . import report as report
from . import results as results
from . import smoothing as smoothing
from . import stats as stats
from . import train as train
from . import vnnlib as vnnlib
from ._onnx import from_onnx as from_onnx
from ._sets import Box as Box
from ._sets import Case as Case
from ._sets import L1Ball as L1Ball
from ._sets import L2Ball as L2Ball
from ._sets import LinfBall as LinfBall
from ._sets import Property as Property
from .graph import trace as trace
from .models import from_nnx as from_nnx

__version__ = "0.1.0"
