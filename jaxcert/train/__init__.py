"""Training classifiers with Gaussian noise augmentation, as randomized smoothing requires."""

from ._gaussian import cross_entropy_loss as cross_entropy_loss
from ._gaussian import gaussian_augmentation_loss as gaussian_augmentation_loss
from ._loop import accuracy as accuracy
from ._loop import fit as fit
from ._loop import make_train_step as make_train_step
