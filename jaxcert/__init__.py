"""jaxcert: certified robustness of neural-network classifiers in JAX.

Three families of certificates under one functional API:

* probabilistic: randomized smoothing (`jaxcert.smoothing`, exact statistics in `jaxcert.stats`);
* relaxed: interval and linear bound propagation (planned: `jaxcert.bounds`);
* exact: MILP on OR-Tools (planned: `jaxcert.exact`).

A classifier is ``apply_fn(params, x) -> logits`` with a leading batch axis on ``x``, exactly a
Flax linen ``model.apply``; ``jaxcert.from_nnx`` adapts a flax.nnx module.
"""

from . import data as data
from . import models as models
from . import smoothing as smoothing
from . import stats as stats
from . import train as train
from .models import from_nnx as from_nnx

__version__ = "0.1.0"
