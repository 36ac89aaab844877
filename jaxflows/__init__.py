"""jaxflows: normalizing flows as pure functions over explicit parameter pytrees.

A bijector is ``Bijector(init, forward, inverse)``; a flow is ``Flow(init,
log_prob, sample, sample_and_log_prob, to_latent, from_latent, ...)``; params
are plain pytrees.  See README.md for the tour.
"""

from . import bijectors, checkpoint, conditioners, data, distributions, interop, nn, testing, vi
from ._types import Bijector, Distribution, Transformer
from .bijectors import chain, invert, stack
from .state import merge_state, split_state
from .checkpoint import Checkpoint, CheckpointError, load, save
from .distributions import diag_normal, mixture_of_gaussians, standard_normal, uniform
from .flows import Flow, transformed
from . import models
from .models import FACTORIES, from_config, iaf, layer_orders, maf, nsf, realnvp
from .interop import distrax_base, to_distrax
from .train import FitWarning, TrainingDiverged, fit, init_optimizer, make_step, nll_loss
from .vi import elbo, fit_vi, importance_ess
from . import standardizing
from .scoring import score
from .standardizing import RawScaleWarning, split_standardization, standardize
from . import anomaly, comparison, distillation
from .comparison import compare
from .distillation import distill, distillation_kl

__version__ = "0.1.0"

__all__ = [
    "Bijector", "Checkpoint", "CheckpointError", "Distribution", "FACTORIES", "Flow", "Transformer",
    "anomaly", "bijectors", "chain", "checkpoint", "conditioners", "compare", "comparison", "data", "diag_normal",
    "distill", "distillation", "distillation_kl", "distrax_base", "distributions", "elbo",
    "fit", "fit_vi", "from_config", "iaf", "importance_ess", "interop", "invert", "layer_orders", "load",
    "maf", "make_step", "merge_state", "mixture_of_gaussians", "nll_loss", "nn", "nsf", "realnvp", "save",
    "split_state", "stack", "standard_normal", "testing", "to_distrax", "transformed", "uniform", "vi",
    "FitWarning", "TrainingDiverged", "init_optimizer",
    "RawScaleWarning", "score", "split_standardization", "standardize", "standardizing",
]
