"""Training: Gaussian augmentation for randomized smoothing, adversarial and certified training."""

from ._certified import crown_ibp_loss as crown_ibp_loss
from ._certified import dual_loss as dual_loss
from ._certified import ibp_loss as ibp_loss
from ._certified import l1_penalty as l1_penalty
from ._certified import pgd_loss as pgd_loss
from ._certified import ramp_schedule as ramp_schedule
from ._certified import relu_stability as relu_stability
from ._certified import worst_case_logits as worst_case_logits
from ._gaussian import cross_entropy_loss as cross_entropy_loss
from ._gaussian import gaussian_augmentation_loss as gaussian_augmentation_loss
from ._loop import accuracy as accuracy
from ._loop import fit as fit
from ._loop import make_train_step as make_train_step
from ._objective import METHODS as METHODS
from ._objective import ramp_schedules as ramp_schedules
from ._objective import training_loss as training_loss
from ._run import has_checkpoint as has_checkpoint
from ._run import robust_accuracies as robust_accuracies
from ._run import train_model as train_model
