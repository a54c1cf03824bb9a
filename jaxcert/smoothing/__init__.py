"""Randomized smoothing: Monte Carlo certification of the smoothed classifier.

References:
  J. Cohen, E. Rosenfeld, J. Z. Kolter, "Certified Adversarial Robustness via Randomized
  Smoothing", ICML 2019.
"""

from ._accuracy import AccuracyTable as AccuracyTable
from ._accuracy import certified_accuracy as certified_accuracy
from ._accuracy import certified_accuracy_lower_bound as certified_accuracy_lower_bound
from ._accuracy import certified_accuracy_table as certified_accuracy_table
from ._certify import ABSTAIN as ABSTAIN
from ._certify import Certificate as Certificate
from ._certify import certify as certify
from ._certify import predict as predict
from ._certify import radius_cap as radius_cap
from ._noise import NOISES as NOISES
from ._noise import Noise as Noise
from ._noise import get_noise as get_noise
from ._sampling import sample_counts as sample_counts
from ._stream import NOISE_STREAM_VERSION as NOISE_STREAM_VERSION
