"""jaxflows: normalizing flows as pure functions over explicit parameter pytrees."""

from . import bijectors, distributions, nn
from ._types import Bijector, Distribution, Transformer
from .bijectors import chain, invert, stack
from .distributions import diag_normal, standard_normal, uniform
from .flows import Flow, from_config, iaf, maf, transformed
from .train import fit, make_step, nll_loss

__version__ = "0.1.0"

__all__ = [
    "Bijector", "Distribution", "Flow", "Transformer", "bijectors", "chain", "diag_normal",
    "distributions", "fit", "from_config", "iaf", "invert", "maf", "make_step", "nll_loss", "nn",
    "stack", "standard_normal", "transformed", "uniform",
]
