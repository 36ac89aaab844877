"""Probability density distillation: fast sampling from a model trained for fast density.

A MAF (Papamakarios et al. 2017) evaluates ``log p(x)`` in one parallel pass
per layer, which makes maximum-likelihood training cheap, but samples in
``dim`` sequential steps per layer.  An IAF (Kingma et al. 2016) is the
reverse: one parallel pass per layer draws ``x`` *and* its own ``log q(x)``,
while the density of an arbitrary ``x`` is sequential.  Distillation (van den
Oord et al. 2018, "Parallel WaveNet") gets both: train the MAF *teacher* on
data, then fit an IAF *student* to it by minimising

    KL(q_student || p_teacher) = E_{x ~ q}[ log q(x) - log p_teacher(x) ]

with reparameterised samples ``x = f_student(z)``, ``z ~ N(0, I)``.  Every
term is parallel: the student's sample and ``log q`` come from its forward
pass, the teacher's density is its parallel direction.  This is variational
inference (:mod:`jaxflows.vi`) with the teacher as the (normalised) target,
so ``ELBO = -KL`` and the KL estimate is exact up to Monte-Carlo noise.

KL(q || p) is *mode-seeking*: the student is penalised for putting mass where
the teacher has little, but not for missing some of the teacher's mass, so on
data its log-likelihood is typically below the teacher's (check it on
held-out rows, scored with ``student.log_prob``).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from .flows import Flow
from .vi import fit_vi, log_weights

__all__ = ["distill", "distillation_kl"]


def _check_pair(teacher: Flow, student: Flow) -> None:
    for name, f in (("teacher", teacher), ("student", student)):
        if not isinstance(f, Flow):
            raise TypeError(f"{name} must be a jaxflows.Flow, got {type(f).__name__}")
    if teacher.dim != student.dim:
        raise ValueError(f"teacher and student must model the same dimension: teacher.dim = "
                         f"{teacher.dim}, student.dim = {student.dim}")
    if teacher.context_dim != student.context_dim:
        raise ValueError(f"teacher and student must take the same context: teacher.context_dim = "
                         f"{teacher.context_dim}, student.context_dim = {student.context_dim}")


def _teacher_density(teacher: Flow, teacher_params, conditional: bool):
    # teacher_params are constants of the objective: gradients flow to the student only
    tp = jax.lax.stop_gradient(teacher_params)
    if conditional:
        return lambda x, c: teacher.log_prob(tp, x, c)
    return lambda x: teacher.log_prob(tp, x)


def distillation_kl(teacher: Flow, teacher_params, student: Flow, student_params, key, *,
                    num_samples: int = 4096, context=None) -> Dict[str, Any]:
    """Monte-Carlo ``KL(student || teacher)`` from ``num_samples`` student samples.

    Returns ``{"kl": mean_s [log q(x_s) - log p(x_s)], "kl_se": its standard
    error}`` (JAX scalars, nats).  Both densities are normalised, so the
    estimate is unbiased and ``>= 0`` in expectation.
    """
    _check_pair(teacher, student)
    _, lw = log_weights(student, student_params,
                        _teacher_density(teacher, teacher_params, context is not None),
                        key, num_samples, context=context)
    lw = lw.reshape(-1)
    return {"kl": -jnp.mean(lw), "kl_se": jnp.std(lw, ddof=1) / math.sqrt(lw.shape[0])}


def distill(teacher: Flow, teacher_params, student: Flow, student_params, *, key, num_steps: int,
            num_samples: int = 64, optimizer: Optional[optax.GradientTransformation] = None,
            estimator: str = "reparam", context=None, steps_per_sync: int = 250,
            max_bad_steps: int = 50) -> Tuple[Any, Dict[str, Any]]:
    """Fit ``student`` to ``teacher`` by minimising ``KL(student || teacher)`` (module docstring).

    Typically ``teacher = jaxflows.maf(dim, ...)`` trained with
    :func:`jaxflows.fit`, and ``student = jaxflows.iaf(dim, ...)`` with
    ``student_params = student.init(key)``; any pair of flows with the same
    ``dim`` (and ``context_dim``) works.  This is :func:`jaxflows.fit_vi`
    with ``log_density = teacher.log_prob(teacher_params, .)``.

    Args:
      teacher, teacher_params: the trained model (held fixed).
      student, student_params: the model to fit and its starting parameters.
      key: PRNG key of the student samples.
      num_steps: optimisation steps; num_samples: student samples per step.
      optimizer: an optax transformation, default ``optax.adam(1e-3)``.
      estimator: ``"reparam"`` (default) or ``"stl"`` (sticking the landing;
        needs ``student.log_prob`` of its own samples, sequential for an IAF).
      context: ``None``, or ``(B, context_dim)`` / ``(context_dim,)`` for
        conditional flows (the KL is averaged over the rows).
      steps_per_sync: steps per jitted loop between host synchronisations.
      max_bad_steps: a step with a NaN/Inf KL estimate or gradient is skipped;
        this many in a row raise.

    Returns ``(student_params, history)`` with ``history["kl"]`` the per-step
    KL estimates (floats, nats; noisy, from ``num_samples`` samples each),
    ``history["elbo"]`` (``= -kl``), ``history["skipped_steps"]`` and
    ``history["seconds"]``.  Raises :class:`jaxflows.TrainingDiverged` naming the
    step once ``max_bad_steps`` consecutive KL estimates were not finite.
    """
    _check_pair(teacher, student)
    log_density = _teacher_density(teacher, teacher_params, context is not None)
    params, history = fit_vi(student, student_params, log_density, key=key, num_steps=num_steps,
                             num_samples=num_samples, optimizer=optimizer, estimator=estimator,
                             context=context, steps_per_sync=steps_per_sync,
                             max_bad_steps=max_bad_steps)
    history["kl"] = [-float(v) for v in history["elbo"]]
    return params, history
