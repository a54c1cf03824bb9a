"""Training: Gaussian augmentation for randomized smoothing, IBP losses for certified training."""

from ._certified import ibp_loss as ibp_loss
from ._certified import ramp_schedule as ramp_schedule
from ._certified import worst_case_logits as worst_case_logits
from ._gaussian import cross_entropy_loss as cross_entropy_loss
from ._gaussian import gaussian_augmentation_loss as gaussian_augmentation_loss
from ._loop import accuracy as accuracy
from ._loop import fit as fit
from ._loop import make_train_step as make_train_step
