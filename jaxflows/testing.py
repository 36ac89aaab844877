"""The conformance suite every bijector passes: ``check_bijector``.

Use it on your own bijectors too: anything with ``init(key)``,
``forward(params, z, context=None) -> (x, log_det)`` and ``inverse(params, x,
context=None) -> (z, log_det)`` on ONE event ``(dim,)``::

    from jaxflows.testing import check_bijector
    check_bijector(my_bijector, dim=4)                      # float32
    with jax.enable_x64(True):
        check_bijector(my_bijector, dim=4, dtype=jnp.float64)

The checks, at random non-identity params and random inputs:

1. round trip both ways, ``log_det_fwd + log_det_inv = 0``;
2. ``log_det`` equals ``slogdet(jax.jacfwd(...))`` in both directions;
3. structure: with ``order`` the Jacobian of both directions is triangular
   in that order (output ``order[a]`` does not depend on input ``order[b]``
   for ``b > a``; diagonal non-zero); with ``unchanged`` (coupling) those
   coordinates pass through untouched;
4. shapes and dtypes preserved;
5. jit equals eager, vmap equals a loop, no recompilation on a second call,
   gradients w.r.t. params and inputs finite;
6. context: with ``context_dim`` the output depends on the context;
7. only with ``check_inputs=True`` (jaxflows' convention for bad input):
   wrong shape, batched input, integer dtype, missing or extra context raise
   ``ValueError``/``TypeError`` at trace time.

Each check raises ``AssertionError`` with the measured error on failure.
``check_inputs=True`` adds the input-validation checks that jaxflows' own
bijectors pass (bad shapes, integer dtypes and wrong contexts raise
``ValueError``/``TypeError``); they are off by default because they test a
convention, not the maths.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Bijector


def perturb_params(params, key, scale: float = 0.3, *, fan_in: bool = False):
    """Add ``scale * N(0, 1)`` to every float leaf: random, non-identity params.

    ``fan_in=True`` divides the noise of every leaf with two or more axes by
    ``sqrt(shape[-2])`` (the fan-in of a weight matrix ``(in, out)``, also
    when layers are stacked on a leading axis), so a layer's output changes by
    about ``scale`` whatever its width.  Without it, noise of 0.3 on a
    64-unit layer moves each output by about 0.3 * sqrt(64) = 2.4, and a stack
    of such layers multiplies scales of ``exp(+-2.4)``: a default-sized flow
    then inverts with round-off of many orders of magnitude, ill-conditioned,
    not wrong.  Integer leaves are left unchanged.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    floats = sorted({jnp.result_type(l) for l in leaves if jnp.issubdtype(jnp.result_type(l), jnp.floating)},
                    key=str)
    # One draw per dtype, cut into the leaves: op by op, a draw per leaf shape would compile
    # apart. Concrete params are cut and added in NumPy (no compiles); traced ones in jnp.
    concrete = not any(isinstance(l, jax.core.Tracer) for l in leaves)
    noise, start = {}, {}
    for dtype, k in zip(floats, jax.random.split(key, max(len(floats), 1))):
        draw = jax.random.normal(k, (sum(np.size(l) for l in leaves if jnp.result_type(l) == dtype),), dtype)
        noise[dtype], start[dtype] = (np.asarray(draw) if concrete else draw), 0

    def noisy(l):
        dtype = jnp.result_type(l)
        if dtype not in noise:
            return l
        shape, n = np.shape(l), np.size(l)
        s = scale / np.sqrt(shape[-2]) if (fan_in and len(shape) >= 2 and shape[-2] > 0) else scale
        cut = noise[dtype][start[dtype]:start[dtype] + n].reshape(shape)
        start[dtype] += n
        if concrete:
            return jnp.asarray(np.asarray(l) + np.asarray(s, dtype) * cut)
        return l + s * cut

    return jax.tree_util.tree_unflatten(treedef, [noisy(l) for l in leaves])


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def _close(name, got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.max(np.abs(got - want) / (1.0 + np.abs(want))) if got.size else 0.0
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values {got}"
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g}"


def check_bijector(bijector: Bijector, dim: int, *, context_dim: Optional[int] = None, key=None,
                   params=None, perturb: float = 0.3, dtype=jnp.float32,
                   order: Optional[Sequence[int]] = None, unchanged: Optional[Sequence[int]] = None,
                   input_scale: float = 1.0, data_domain=None, tol: Optional[float] = None,
                   check_inputs: bool = False, check_eager: bool = True,
                   check_transforms: bool = True, check_jacobians: bool = True) -> None:
    """Run the conformance suite (checks 1-7 of the module docstring) on ``bijector``
    over events ``(dim,)``.

    ``bijector`` is anything with ``init``, ``forward`` and ``inverse`` (a
    :class:`~jaxflows.Bijector`, a NamedTuple or object of your own).  The
    checks run at random non-identity params (unless ``params`` is given:
    ``init`` plus ``perturb`` noise scaled by each weight's fan-in, see
    :func:`perturb_params`, so that default-sized flows stay well
    conditioned) and random inputs ``input_scale * N(0, 1)``.  ``order`` and
    ``unchanged`` ask for the structure checks (3); ``data_domain`` maps a
    random normal vector into the domain of ``inverse`` (for bijectors whose
    data side is bounded, e.g. ``jax.nn.sigmoid`` for ``logit``; default: the
    identity); ``dtype=jnp.float64`` needs x64 enabled.  Three switches skip
    checks that a bijector checked in both dtypes needs only once: ``check_eager=False``
    check 5's op-by-op call per direction, ``check_transforms=False`` its vmap and
    gradients (half the compiled program), ``check_jacobians=False`` checks 2 and 3.

    The default tolerance ``tol`` is ``2e-3`` in float32 and ``1e-8`` in
    float64 (relative to ``1 + |expected|``).  A deep flow that fails only in
    float32 by round-off can be checked in float64 (``jax.enable_x64(True)``).
    """
    _check_callable(bijector, dtype)
    tol = tol if tol is not None else (2e-3 if dtype == jnp.float32 else 1e-8)
    key = key if key is not None else jax.random.PRNGKey(0)
    k_init, k_pert, k_x, k_c, k_c2 = jax.random.split(key, 5)
    if params is None:
        params = perturb_params(bijector.init(k_init), k_pert, perturb, fan_in=True)
    params = _cast(params, dtype)
    x = input_scale * jax.random.normal(k_x, (dim,), dtype)
    ctx = None if context_dim is None else jax.random.normal(k_c, (context_dim,), dtype)
    x_data = x if data_domain is None else data_domain(x)
    # Checks 1-6 evaluate one compiled program (both directions, their Jacobians, vmaps
    # and gradients: compiling one program costs less than compiling each part alone),
    # called once more per vmapped row and once with a second context.
    program = jax.jit(_all_checks_program(bijector, check_transforms, check_jacobians))
    r = jax.device_get(program(params, x, x_data, ctx))
    _check_round_trips(r, x, x_data, tol)  # 1.
    if check_jacobians:
        _check_jacobians(r, order, tol)  # 2., 3.
    if unchanged is not None:
        idx = np.asarray(unchanged)
        _close("coupling: conditioning part unchanged", r["y"][idx], x[idx], 0.0)
    _check_shapes(r, dim, dtype)  # 4.
    if check_transforms:
        _check_transforms(program, r, params, x, ctx, tol)  # 5. vmap, no recompilation, gradients
    if check_eager:  # 5. jit equals eager
        _check_eager(bijector, r, params, x, x_data, ctx, tol)
    if context_dim is not None:  # 6. context
        r2 = program(params, x, x_data, jax.random.normal(k_c2, (context_dim,), dtype))
        assert not np.allclose(r2["y"], r["y"]) and not np.allclose(r2["z"], r["z"]), (
            "output does not depend on the context")
    assert program._cache_size() == 1, "jit recompiled on a later call with the same shapes"
    if check_inputs:  # 7. bad input (jaxflows' convention, opt-in)
        _check_bad_inputs(bijector, params, x, ctx, dim, context_dim, dtype)


def _check_callable(bijector, dtype) -> None:
    for name in ("init", "forward", "inverse"):
        if not callable(getattr(bijector, name, None)):
            raise TypeError(f"check_bijector needs a bijector with callable init, forward and inverse; "
                            f"{type(bijector).__name__} has no callable {name!r}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("check_bijector(dtype=float64) needs x64: run it inside "
                           "`with jax.enable_x64(True):` or after jax.config.update('jax_enable_x64', True)")


def _rows(v):
    """The three vmapped rows of check 5: ``v``, ``0.9 v``, ``v + 0.1``."""
    return jnp.stack([v, 0.9 * v, v + 0.1])


def _context_rows(c):
    """The contexts of those rows: ``c``, ``-c``, ``2 c`` (``None`` without a context)."""
    return None if c is None else jnp.stack([c, -c, 2 * c])


def _all_checks_program(bijector, transforms: bool = True, jacobians: bool = True):
    """``(params, x, x_data, ctx) -> dict``: everything checks 1-5 compare, forward at
    ``x`` and inverse at ``x_data``; the inverse's vmap and gradients at ``y = forward(x)``
    (those of both directions only with ``transforms``, the Jacobians only with
    ``jacobians``)."""

    def direction(fn, p, v, c):
        """``fn``'s vmap over :func:`_rows` of ``v`` and gradients at ``v``."""
        cs = _context_rows(c)
        out_v = jax.vmap(lambda a, cc: fn(p, a, cc), in_axes=(0, None if cs is None else 0))(_rows(v), cs)

        def scalar(q, a):
            out, ld = fn(q, a, c)
            return jnp.sum(jnp.sin(out)) + ld

        return out_v, jax.grad(scalar, argnums=(0, 1))(p, v)

    def with_jacobian(fn, p, v, c):
        """``fn(p, v, c)`` and the Jacobian of its output in ``v``: the output is the
        primal of the forward-mode pass, so ``fn`` is traced once for both."""
        if not jacobians:
            return (*fn(p, v, c), None)

        def out(a):
            value = fn(p, a, c)
            return value[0], value
        jac, (value, log_det) = jax.jacfwd(out, has_aux=True)(v)
        return value, log_det, jac

    def program(p, x, x_data, c):
        y, ld_f, J_f = with_jacobian(bijector.forward, p, x, c)
        x_back, ld_back = bijector.inverse(p, y, c)
        z, ld_i, J_i = with_jacobian(bijector.inverse, p, x_data, c)
        x_again, ld_again = bijector.forward(p, z, c)
        r = dict(y=y, ld_f=ld_f, x_back=x_back, ld_back=ld_back, z=z, ld_i=ld_i,
                 x_again=x_again, ld_again=ld_again, J_f=J_f, J_i=J_i)
        if transforms:
            r["vmap_f"], r["grad_f"] = direction(bijector.forward, p, x, c)
            r["vmap_i"], r["grad_i"] = direction(bijector.inverse, p, y, c)
        return r

    return program


def _check_round_trips(r, x, x_data, tol) -> None:
    """1. ``inverse(forward(x)) == x`` and ``forward(inverse(x_data)) == x_data``, log-dets
    cancelling."""
    _close("inverse(forward(x))", r["x_back"], x, tol)
    _close("log_det_fwd + log_det_inv", r["ld_f"] + r["ld_back"], 0.0, tol)
    _close("forward(inverse(y))", r["x_again"], x_data, tol)
    _close("log_det_inv + log_det_fwd", r["ld_i"] + r["ld_again"], 0.0, tol)


def _check_jacobians(r, order, tol) -> None:
    """2. the log-dets equal ``slogdet`` of the Jacobians; 3. with ``order``, triangular."""
    _close("log_det_fwd vs slogdet(jacobian)", r["ld_f"], np.linalg.slogdet(np.asarray(r["J_f"], np.float64))[1], tol)
    _close("log_det_inv vs slogdet(jacobian)", r["ld_i"], np.linalg.slogdet(np.asarray(r["J_i"], np.float64))[1], tol)
    if order is not None:
        _check_triangular(np.asarray(order), r["y"].shape[0], r["J_f"], r["J_i"])


def _check_triangular(order: np.ndarray, dim: int, J_f, J_i) -> None:
    """3. both Jacobians triangular in ``order``, non-zero diagonal, not diagonal."""
    pos = np.empty(dim, int)
    pos[order] = np.arange(dim)
    upper = pos[None, :] > pos[:, None]  # input j comes after output i
    for name, J in (("forward", J_f), ("inverse", J_i)):
        J = np.asarray(J)
        assert np.all(J[upper] == 0), (
            f"{name} Jacobian is not triangular in order {order.tolist()}: "
            f"max |dy_i/dx_j| for j after i = {np.abs(J[upper]).max():.3g}")
        assert np.all(np.abs(np.diag(J)) > 0), f"{name} Jacobian has a zero on its diagonal"
        if dim > 1:
            assert np.any(J[~upper & ~np.eye(dim, dtype=bool)] != 0), (
                f"{name} Jacobian is diagonal: the layer ignores earlier variables")


def _check_shapes(r, dim, dtype) -> None:
    """4. both directions keep the event's shape and dtype; log-dets are scalars."""
    for name, out, ld in (("forward", r["y"], r["ld_f"]), ("inverse", r["z"], r["ld_i"])):
        assert out.shape == (dim,) and out.dtype == dtype, f"{name} output {out.shape} {out.dtype}"
        ld = np.asarray(ld)
        assert ld.shape == () and ld.dtype == dtype, f"{name} log_det {ld.shape} {ld.dtype}"


def _check_transforms(program, r, params, x, ctx, tol) -> None:
    """5. vmap equals a loop: each row through ``program`` again (the same shapes, so
    no new compile), forward at ``x``'s rows, inverse at ``y``'s; gradients finite."""
    xs, ys, cs = _rows(x), _rows(r["y"]), _context_rows(ctx)
    for b in range(3):
        single = program(params, xs[b], ys[b], None if cs is None else cs[b])
        for name, (out_v, ld_v), out, ld in (("forward", r["vmap_f"], single["y"], single["ld_f"]),
                                             ("inverse", r["vmap_i"], single["z"], single["ld_i"])):
            _close(f"vmap {name} == loop", out_v[b], out, tol)
            _close(f"vmap {name} log_det == loop", ld_v[b], ld, tol)
    for name, grads in (("forward", r["grad_f"]), ("inverse", r["grad_i"])):
        for leaf in jax.tree_util.tree_leaves(grads):
            assert np.all(np.isfinite(np.asarray(leaf))), f"non-finite gradient through {name}"


def _check_eager(bijector, r, params, x, x_data, ctx, tol) -> None:
    """5. the compiled results equal one op-by-op call per direction."""
    for name, fn, v, out, ld in (("forward", bijector.forward, x, r["y"], r["ld_f"]),
                                 ("inverse", bijector.inverse, x_data, r["z"], r["ld_i"])):
        out_e, ld_e = fn(params, v, ctx)
        _close(f"jit {name} == eager", out, out_e, tol)
        _close(f"jit {name} log_det == eager", ld, ld_e, tol)


def _check_bad_inputs(bijector, params, x, ctx, dim, context_dim, dtype) -> None:
    """7. wrong shapes, batched or integer input, a missing or extra context raise."""
    if context_dim is not None:
        _expect(ValueError, lambda: bijector.forward(params, x, None), "missing context")
        _expect(ValueError, lambda: bijector.forward(params, x, jnp.ones(context_dim + 1, dtype)),
                "context of the wrong shape")
    else:
        _expect(ValueError, lambda: bijector.forward(params, x, jnp.ones(2, dtype)), "unexpected context")
    _expect(ValueError, lambda: bijector.forward(params, jnp.ones(dim + 1, dtype), ctx), "input of shape (dim+1,)")
    _expect(ValueError, lambda: bijector.inverse(params, jnp.ones((2, dim), dtype), ctx), "batched input")
    _expect(TypeError, lambda: bijector.forward(params, jnp.ones(dim, jnp.int32), ctx), "integer input")


def _expect(exc, fn, what):
    try:
        fn()
    except exc:
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{what}: expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{what}: expected {exc.__name__}, nothing was raised")
