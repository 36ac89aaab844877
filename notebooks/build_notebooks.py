"""Write the tutorial notebooks in this folder from the cell sources below.

The notebooks are generated so that they can be reviewed as plain Python and
so that every file is committed with its outputs stripped::

    python notebooks/build_notebooks.py          # (re)write notebooks/*.ipynb
    python notebooks/build_notebooks.py --check  # exit 1 if a notebook differs

Every notebook reads ``JAXFLOWS_NB_SMALL=1`` (set by ``tests/test_notebooks.py``)
to shrink data sets, epochs and sweeps so the whole set runs in about a minute
on 2 CPU cores; without it they run the full-size tutorial.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

# First code cell of every notebook: the switch the test suite flips.
SMALL = '''\
import os

# The test suite sets JAXFLOWS_NB_SMALL=1 to run this notebook at toy sizes.
SMALL = os.environ.get("JAXFLOWS_NB_SMALL") == "1"'''


def md(text: str):
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str):
    return ("code", textwrap.dedent(text).strip("\n"))


# ---------------------------------------------------------------------------
# 1. Quickstart
# ---------------------------------------------------------------------------

QUICKSTART = [
    md("""
    # Quickstart: a masked autoregressive flow on two moons

    A normalizing flow models data `x` as an invertible map of noise, `x = f(z)` with
    `z ~ N(0, I)`. The change of variables gives its exact density,

    $$\\log p(x) = \\log N\\big(f^{-1}(x); 0, I\\big) + \\log\\left|\\det \\frac{\\partial f^{-1}}{\\partial x}\\right| ,$$

    so it can be trained by maximum likelihood. This notebook trains a MAF
    (masked autoregressive flow) on the two-moons toy data, plots its density and samples,
    and saves and reloads it.

    In `jaxflows` a flow is a `NamedTuple` of pure functions; its parameters are an
    ordinary pytree that you hold and pass in.
    """),
    code(SMALL),
    code("""
    import tempfile

    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    import jaxflows
    from jaxflows import checkpoint, data

    N_POINTS = 2_000 if SMALL else 20_000
    NUM_EPOCHS = 3 if SMALL else 100
    key = jax.random.key(0)
    """),
    md("""
    ## Data

    `jaxflows.data.two_moons(seed, n)` draws `n` points of two noisy half circles;
    `data.split` cuts them into a training and a test part (deterministically from a seed).
    """),
    code("""
    x = data.two_moons(0, N_POINTS)
    train, test = data.split(x, (0.9, 0.1), seed=0)
    print("train", train.shape, "test", test.shape)

    plt.figure(figsize=(4, 3))
    plt.scatter(*train[:2000].T, s=2, alpha=0.5)
    plt.title("two moons (training data)")
    plt.gca().set_aspect("equal")
    plt.show()
    """),
    md("""
    ## Build and train a MAF

    `jaxflows.maf(dim, num_layers, hidden)` stacks MADE layers with the variable order
    reversed between layers. `flow.init(key)` returns the parameters; `jaxflows.fit`
    minimises the mean negative log-likelihood with Adam, holding out 10% of the rows
    for validation, and returns the parameters of the best validation epoch.
    """),
    code("""
    flow = jaxflows.maf(2, num_layers=5, hidden=(64, 64))
    params = flow.init(jax.random.key(1))
    print("parameters:", sum(p.size for p in jax.tree_util.tree_leaves(params)))

    params, history = jaxflows.fit(flow, params, train, key=jax.random.key(2),
                                   num_epochs=NUM_EPOCHS, batch_size=256,
                                   learning_rate=1e-3, progress=False)
    print(f"{history['num_epochs_run']} epochs, best epoch {history['best_epoch']}")

    plt.figure(figsize=(5, 3))
    plt.plot(history["train_loss"], label="train")
    plt.plot(history["val_loss"], label="validation")
    plt.xlabel("epoch"); plt.ylabel("negative log-likelihood (nats)"); plt.legend()
    plt.show()
    """),
    md("""
    ## Test log-likelihood

    `flow.log_prob(params, x)` takes any batch shape `(..., dim)`. Jit it once and
    reuse it.
    """),
    code("""
    log_prob = jax.jit(flow.log_prob)
    test_ll = log_prob(params, test)
    stderr = test_ll.std() / np.sqrt(test_ll.size)
    print(f"test log-likelihood: {test_ll.mean():.3f} +- {2 * stderr:.3f} nats")
    assert np.isfinite(test_ll).all()
    """),
    md("""
    ## Density and samples

    The density on a grid is one `log_prob` call on an array of shape `(rows, cols, 2)`.
    Samples come from `flow.sample(params, key, sample_shape)`: draw `z ~ N(0, I)` and
    map it through the flow (for a MAF this direction runs the `dim` autoregressive steps
    one after another; for two dimensions that costs nothing).
    """),
    code("""
    xs = np.linspace(-1.5, 2.5, 200)
    ys = np.linspace(-1.0, 1.5, 130)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)          # (130, 200, 2)
    density = jnp.exp(log_prob(params, grid))               # (130, 200)

    samples = jax.jit(flow.sample, static_argnums=2)(params, jax.random.key(3), (2000,))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True, sharey=True)
    axes[0].pcolormesh(xs, ys, density, shading="auto", cmap="magma")
    axes[0].set_title("model density p(x)")
    axes[1].scatter(*samples.T, s=2, alpha=0.5, label="flow samples")
    axes[1].scatter(*test[:2000].T, s=2, alpha=0.3, label="test data")
    axes[1].set_title("samples vs test data"); axes[1].legend(markerscale=5)
    for ax in axes:
        ax.set_aspect("equal")
    plt.show()
    """),
    md("""
    ## Save and load a checkpoint

    `jaxflows.checkpoint.save(path, flow, params, ...)` writes one file holding the flow's
    configuration (the factory and its arguments), the parameters and any metadata.
    `checkpoint.load(path)` rebuilds the flow from that configuration, so the file alone is
    enough: no model code is needed to load it. The reloaded flow gives the same
    log-likelihoods.
    """),
    code("""
    workdir = tempfile.mkdtemp()
    path = checkpoint.save(os.path.join(workdir, "moons.ckpt"), flow, params,
                           metadata={"test_log_likelihood": float(test_ll.mean())})
    print("wrote", path, os.path.getsize(path), "bytes")

    restored = checkpoint.load(path)
    print("config:", restored.config)
    print("metadata:", restored.metadata)

    restored_ll = restored.flow.log_prob(restored.params, test)
    print("max |difference| in log p:", float(jnp.max(jnp.abs(restored_ll - test_ll))))
    np.testing.assert_allclose(restored_ll, test_ll, rtol=0, atol=1e-5)
    """),
]


# ---------------------------------------------------------------------------
# 2. MAF vs IAF
# ---------------------------------------------------------------------------

MAF_VS_IAF = [
    md("""
    # MAF vs IAF: which direction is fast

    Both flows use the same affine autoregressive layer

    $$x_i = \\mu_i(\\cdot_{<i}) + \\sigma_i(\\cdot_{<i})\\, z_i ,$$

    and differ in what the conditioner reads:

    * **MAF** conditions on the data, `mu_i(x_<i)`. Given `x`, every `z_i` is known at once:
      the density is **one parallel pass** of the MADE network per layer. Sampling must
      produce `x_1`, then `x_2` from `x_1`, ...: **D sequential passes**.
    * **IAF** conditions on the noise, `mu_i(z_<i)`. Sampling is one parallel pass; the
      density of an arbitrary `x` must recover `z_1, z_2, ...` one after another.

    The IAF study note (seed 000) puts this as a table, counting one pass over the `D`
    inputs as `O(D)` work:

    | | IAF | MAF |
    |---|---|---|
    | sampling | O(D), parallel | O(D^2), sequential |
    | likelihood | O(D^2), sequential | O(D), parallel |

    Here we measure it. We time `log_prob` and `sample` of a MAF and an IAF of the same
    size as the dimension `D` grows. The cost of a pass does not depend on the parameter
    values, so the flows are timed at their initial parameters on rows of the same data
    (scikit-learn's digits, the first `D` pixel columns).

    `jaxflows` runs the sequential direction with a cached scan (`method="cached"`, the
    default): step `k` computes only the hidden units that can change once `x_k` is known,
    so the *arithmetic* of the D steps adds up to about one MADE pass, but the D steps
    still run one after another. We also time the textbook version that reruns the whole
    network at every step (`method="scan"`), which is the `O(D^2)` of the note.
    """),
    code(SMALL),
    code("""
    import time

    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    import jaxflows
    from jaxflows import data
    from jaxflows.bijectors import maf_layer
    from jaxflows.testing import perturb_params

    DIMS = (2, 4) if SMALL else (8, 16, 32, 64)
    N = 128 if SMALL else 1000          # rows per call
    REPEATS = 2 if SMALL else 7
    NUM_LAYERS, HIDDEN = (2, (16,)) if SMALL else (5, (128, 128))

    digits = data.digits(seed=0)
    standardizer = data.fit_standardizer(digits)
    rows = np.asarray(data.standardize(standardizer, digits[:N]), dtype=np.float32)
    """),
    md("""
    ## The three flows

    `jaxflows.maf` and `jaxflows.iaf` are the library's flows. The naive MAF sampler is
    built from the same layer, `maf_layer(..., method="scan")`, stacked with
    `jaxflows.stack` in the same alternating orders, so it computes exactly the same map
    as the MAF.
    """),
    code("""
    def naive_maf(dim):
        natural = np.arange(dim)
        orders = np.stack([natural if l % 2 == 0 else natural[::-1] for l in range(NUM_LAYERS)])
        layers = jaxflows.stack(
            lambda order: maf_layer(dim, order=order, hidden=HIDDEN, method="scan"),
            NUM_LAYERS, per_layer=orders)
        return jaxflows.transformed(layers, "normal", dim=dim)


    def median_seconds(fn, *args):
        jax.block_until_ready(fn(*args))          # compile and warm up
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
        return float(np.median(times))


    def time_flow(flow, x):
        params = flow.init(jax.random.key(0))
        log_prob = jax.jit(flow.log_prob)
        sample = jax.jit(lambda p, k: flow.sample(p, k, (x.shape[0],)))
        return (median_seconds(log_prob, params, x),
                median_seconds(sample, params, jax.random.key(1)))
    """),
    md("""
    Before timing, a check that the fast and the slow direction are inverse to each other:
    with random (non-identity) parameters, the IAF's parallel `sample_and_log_prob` and its
    sequential `log_prob` of the same points agree, and so do the cached and the naive MAF
    samplers. The random perturbation is kept small: with large random weights the
    sequential direction of a deep 64-D flow multiplies many `1/sigma` factors and becomes
    so badly conditioned that float32 rounding alone separates the two samplers.
    """),
    code("""
    randomize = jax.jit(perturb_params)     # params + scale * N(0, 1), leaf by leaf

    D = DIMS[-1]
    iaf = jaxflows.iaf(D, num_layers=NUM_LAYERS, hidden=HIDDEN)
    p_iaf = randomize(iaf.init(jax.random.key(0)), jax.random.key(1), 0.02)
    xs, lp_parallel = jax.jit(iaf.sample_and_log_prob, static_argnums=2)(p_iaf, jax.random.key(2), (64,))
    lp_sequential = jax.jit(iaf.log_prob)(p_iaf, xs)
    print("IAF: max |parallel - sequential| log p =", float(jnp.max(jnp.abs(lp_parallel - lp_sequential))))
    np.testing.assert_allclose(lp_parallel, lp_sequential, rtol=1e-4, atol=1e-3)

    maf, slow = jaxflows.maf(D, num_layers=NUM_LAYERS, hidden=HIDDEN), naive_maf(D)
    p_maf = randomize(maf.init(jax.random.key(0)), jax.random.key(1), 0.02)
    z = jax.random.normal(jax.random.key(3), (64, D))
    x_cached, x_naive = jax.jit(maf.from_latent)(p_maf, z), jax.jit(slow.from_latent)(p_maf, z)
    print("MAF: max |cached - naive| sample =", float(jnp.max(jnp.abs(x_cached - x_naive))))
    np.testing.assert_allclose(x_cached, x_naive, rtol=1e-4, atol=1e-4)
    """),
    md("## Timing sweep"),
    code("""
    results = []
    for dim in DIMS:
        x = rows[:, :dim]
        maf_lp, maf_s = time_flow(jaxflows.maf(dim, num_layers=NUM_LAYERS, hidden=HIDDEN), x)
        iaf_lp, iaf_s = time_flow(jaxflows.iaf(dim, num_layers=NUM_LAYERS, hidden=HIDDEN), x)
        _, naive_s = time_flow(naive_maf(dim), x)
        results.append(dict(D=dim, maf_log_prob=maf_lp, iaf_sample=iaf_s, maf_sample=maf_s,
                            iaf_log_prob=iaf_lp, maf_sample_naive=naive_s))

    header = ("D", "MAF log_prob", "IAF sample", "MAF sample", "IAF log_prob", "MAF sample (naive)")
    print(f"milliseconds for {N} rows, {NUM_LAYERS} layers, hidden {HIDDEN}, on {jax.devices()[0].platform}")
    print("".join(f"{h:>20}" for h in header))
    for r in results:
        print(f"{r['D']:>20}" + "".join(f"{1e3 * r[k]:>20.2f}" for k in list(r)[1:]))
    """),
    md("""
    On a log-log plot a cost that grows like `D^k` is a line of slope `k`; the legend gives
    the fitted slopes. Read them against the note's table:

    * the **parallel** directions (MAF density, IAF sampling) are one pass per layer. Their
      cost grows slowly with `D`, because most of a pass's work sits in the hidden layers,
      whose width is fixed here;
    * the **sequential** directions run `D` dependent steps per layer, so they grow faster
      and are many times slower at the largest `D`;
    * the **naive** sampler reruns the whole network at each of the `D` steps (the note's
      `O(D^2)`) and is the slowest. The cached one does about one pass of arithmetic but
      still pays for `D` steps one after another.

    Timings are of the machine that ran the notebook and noisy on a busy one; the ordering
    is what carries over.
    """),
    code("""
    d = np.array([r["D"] for r in results])
    series = {
        "MAF log_prob (parallel)": "maf_log_prob",
        "IAF sample (parallel)": "iaf_sample",
        "MAF sample (sequential, cached)": "maf_sample",
        "IAF log_prob (sequential, cached)": "iaf_log_prob",
        "MAF sample (sequential, naive)": "maf_sample_naive",
    }
    plt.figure(figsize=(6.5, 4))
    for label, k in series.items():
        t = np.array([r[k] for r in results])
        slope = np.polyfit(np.log(d), np.log(t), 1)[0]
        style = "-o" if "parallel" in label else ("--s" if "cached" in label else ":^")
        plt.loglog(d, 1e3 * t, style, label=f"{label}: slope {slope:.2f}")
    plt.xlabel("dimension D"); plt.ylabel(f"ms per {N} rows")
    plt.minorticks_off(); plt.xticks(d, [str(v) for v in d])
    plt.legend(fontsize=8); plt.title("MAF vs IAF, both directions")
    plt.show()
    """),
    md("""
    ## Reading the result

    * Use a **MAF** when you evaluate densities of data (maximum-likelihood training,
      anomaly scores, model comparison): its density is the parallel direction.
    * Use an **IAF** when you draw samples and score your *own* samples, as in variational
      inference: `iaf.sample_and_log_prob` gets both from the parallel pass.
    * Calling the slow direction is correct, only slower; the gap grows with `D`.
      On an accelerator, where one pass over a batch is highly parallel but the `D` steps
      still run one after another, expect the gap to be wider than on this CPU.
    """),
]


# ---------------------------------------------------------------------------
# 3. Autoregressive models are flows
# ---------------------------------------------------------------------------

AR_FLOWS = [
    md("""
    # Autoregressive models are flows

    Any joint density factorises into conditionals, `p(x) = prod_i p(x_i | x_<i)`. A
    **Gaussian autoregressive model** makes each conditional a Gaussian whose mean and
    scale are functions of the earlier variables:

    $$p(x_i \\mid x_{<i}) = N\\big(x_i \\mid m_i(x_{<i}),\\ s_i(x_{<i})^2\\big).$$

    Study note 003 reads this model as a normalizing flow: drawing `x_i` is
    `x_i = m_i(x_<i) + s_i(x_<i) z_i` with `z_i ~ N(0, 1)`, an invertible map `z -> x`
    whose Jacobian is triangular with diagonal `s_i`, so `|det dx/dz| = prod_i s_i`.

    This notebook checks the claim numerically with one MAF layer of `jaxflows`:

    1. the product of Gaussian conditionals gives the same log-likelihood as the flow;
    2. ancestral sampling from the conditionals gives the same points as the flow's
       `from_latent` applied to the same noise;
    3. the Jacobian is triangular, and its diagonal gives the log-determinant.
    """),
    code(SMALL),
    code("""
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    from jax.scipy.stats import norm

    import jaxflows
    from jaxflows import nn
    from jaxflows.bijectors import affine, maf_layer
    from jaxflows.testing import perturb_params

    D = 6
    HIDDEN = (32, 32)
    N_ROWS = 50 if SMALL else 500
    """),
    md("""
    ## One MAF layer and its conditioner

    `maf_layer(D)` is one autoregressive layer in the natural order. Its docstring gives the
    exact parameterisation: the density direction is

    $$z_i = \\mu_i(x_{<i}) + \\sigma_i(x_{<i})\\, x_i ,$$

    where `(mu_i, sigma_i)` come from a MADE network and `sigma_i = softplus(.) + 1e-3 > 0`.
    Solving for `x_i`: `x_i = (z_i - mu_i) / sigma_i`, i.e. the notes' form with

    $$m_i = -\\mu_i / \\sigma_i, \\qquad s_i = 1 / \\sigma_i .$$

    A fresh layer is the identity (its output weights start at zero), so we add random
    noise to the parameters (`jaxflows.testing.perturb_params`) to get an interesting
    model. Any parameter values would do.
    """),
    code("""
    layer = maf_layer(D, hidden=HIDDEN)
    flow = jaxflows.transformed(layer, "normal", dim=D)

    randomize = jax.jit(perturb_params)     # params + scale * N(0, 1), leaf by leaf
    params = randomize(flow.init(jax.random.key(0)), jax.random.key(1), 0.3)
    """),
    md("""
    The conditioner is the layer's MADE: `jaxflows.nn.made_apply` maps one `x` of shape
    `(D,)` to `(D, 2)` raw outputs, and the affine transformer `affine()` turns a row of
    raw outputs into `(mu_i, log sigma_i)` (its forward map at `u = 0` returns exactly that).
    """),
    code("""
    made = nn.made_config(D, HIDDEN, 2)        # 2 outputs per variable: shift and scale
    order = np.arange(D)                       # maf_layer's default: natural order
    transformer = affine()

    def conditioner(x):
        theta = nn.made_apply(params["bijector"], x, made, order)    # (D, 2)
        mu, log_sigma = transformer.forward(jnp.zeros(D), theta)     # mu + sigma * 0, log sigma
        return mu, jnp.exp(log_sigma)
    """),
    md("""
    ## 1. The same log-likelihood

    The autoregressive model is written the slow, explicit way: for each `i`, the
    conditioner sees only `x_<i` (later entries are zeroed, so they cannot leak in), and
    we add `log N(x_i | m_i, s_i^2)`. The flow computes `log N(z; 0, I) + sum_i log sigma_i`
    in one pass.
    """),
    code("""
    def ar_log_likelihood(x):
        total = 0.0
        for i in range(D):
            visible = jnp.where(jnp.arange(D) < i, x, 0.0)     # only x_<i
            mu, sigma = conditioner(visible)
            m_i, s_i = -mu[i] / sigma[i], 1.0 / sigma[i]
            total = total + norm.logpdf(x[i], loc=m_i, scale=s_i)
        return total

    # Rows from a correlated Gaussian: any data would do.
    cov = 0.5 * np.eye(D) + 0.5
    x = jax.random.multivariate_normal(jax.random.key(2), jnp.zeros(D), cov, (N_ROWS,))

    ll_ar = jax.jit(jax.vmap(ar_log_likelihood))(x)
    ll_flow = flow.log_prob(params, x)
    print("first rows, autoregressive:", np.round(ll_ar[:4], 4))
    print("first rows, flow:          ", np.round(ll_flow[:4], 4))
    print("total log-likelihood: AR", float(ll_ar.sum()), " flow", float(ll_flow.sum()))
    np.testing.assert_allclose(ll_ar, ll_flow, rtol=1e-5, atol=1e-4)
    """),
    md("""
    ## 2. The same samples

    Ancestral sampling draws `x_1 ~ p(x_1)`, then `x_2 ~ p(x_2 | x_1)`, and so on. With
    the noise `eps` fixed, that is `x_i = m_i(x_<i) + s_i(x_<i) eps_i`, exactly the flow's
    sampling direction `from_latent(params, eps)`.
    """),
    code("""
    def ancestral_sample(eps):
        x = jnp.zeros(D)
        for i in range(D):
            mu, sigma = conditioner(x)          # x_>=i are still zero
            x = x.at[i].set(-mu[i] / sigma[i] + eps[i] / sigma[i])
        return x

    eps = jax.random.normal(jax.random.key(3), (N_ROWS, D))
    x_ancestral = jax.jit(jax.vmap(ancestral_sample))(eps)
    x_flow = flow.from_latent(params, eps)
    print("max |ancestral - flow|:", float(jnp.max(jnp.abs(x_ancestral - x_flow))))
    np.testing.assert_allclose(x_ancestral, x_flow, rtol=1e-4, atol=1e-4)
    """),
    md("""
    ## 3. The triangular Jacobian

    `jax.jacfwd` of the density direction `x -> z` (`flow.to_latent`) at one point. Output
    `z_i` depends on `x_1, ..., x_i` only, so the matrix is lower triangular; its diagonal is
    `dz_i/dx_i = sigma_i(x_<i)`, and `log|det| = sum_i log sigma_i` with no `D^3`
    determinant. The second panel is a layer built with the reversed order
    (`order=[D-1, ..., 0]`): triangular the other way. The third is a 3-layer `jaxflows.maf`,
    which reverses the order between layers: the composite Jacobian is dense, yet its
    log-determinant is still the sum of the layers' cheap ones, which is what `log_prob` uses.
    """),
    code("""
    def jacobian(f, p, v):
        # dz/dx of the density direction z = to_latent(p, x) at one point v: (D,)
        return jax.jit(jax.jacfwd(lambda u: f.to_latent(p, u)))(v)

    x0 = x[0]
    J = jacobian(flow, params, x0)
    mu, sigma = conditioner(x0)
    print("diagonal of J:    ", np.round(jnp.diag(J), 4))
    print("sigma_i(x_<i):    ", np.round(sigma, 4))
    print("above diagonal, max |J_ij|:", float(jnp.max(jnp.abs(jnp.triu(J, 1)))))
    assert float(jnp.max(jnp.abs(jnp.triu(J, 1)))) == 0.0
    np.testing.assert_allclose(jnp.diag(J), sigma, rtol=1e-5)

    reversed_flow = jaxflows.transformed(maf_layer(D, hidden=HIDDEN, order=np.arange(D)[::-1]),
                                         "normal", dim=D)
    J_rev = jacobian(reversed_flow, params, x0)

    deep = jaxflows.maf(D, num_layers=3, hidden=HIDDEN)
    deep_params = randomize(deep.init(jax.random.key(4)), jax.random.key(5), 0.3)
    J_deep = jacobian(deep, deep_params, x0)
    log_det = jnp.linalg.slogdet(J_deep)[1]
    log_base = norm.logpdf(deep.to_latent(deep_params, x0)).sum()
    print("3-layer MAF: log N(z) + log|det J| =", float(log_base + log_det),
          " log_prob =", float(deep.log_prob(deep_params, x0)))
    np.testing.assert_allclose(log_base + log_det, deep.log_prob(deep_params, x0), rtol=1e-4, atol=1e-4)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, M, title in zip(axes, (J, J_rev, J_deep),
                            ("one layer, natural order", "one layer, reversed order",
                             "3-layer MAF (orders alternate)")):
        lim = float(jnp.max(jnp.abs(M)))
        im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x_j"); ax.set_ylabel("z_i")
        fig.colorbar(im, ax=ax, fraction=0.046)
    plt.suptitle("Jacobian dz/dx at one point")
    plt.tight_layout()
    plt.show()
    """),
    md("""
    ## Summary

    The Gaussian autoregressive model and the one-layer affine flow are the same model:
    same log-likelihood, same samples from the same noise. The flow view adds the
    change-of-variables bookkeeping, which the triangular Jacobian makes cheap, and lets
    such layers be stacked (with the variable order changed in between) into a deeper,
    more flexible flow whose log-determinant is still a sum of diagonals.
    """),
]


# ---------------------------------------------------------------------------
# 4. Sampling and latent inference
# ---------------------------------------------------------------------------

LATENT = [
    md("""
    # Sampling and latent inference

    A flow is one invertible map used in two directions (study note 002):

    * **sampling**, `z -> x`: draw `z ~ N(0, I)` and compute `x = f(z) = f_K(...f_1(z))`;
    * **latent inference**, `x -> z`: compute `z = f^{-1}(x) = f_1^{-1}(...f_K^{-1}(x))`.

    Unlike a VAE's approximate encoder, the latent of a data point is exact and unique, and
    mapping it back reconstructs the point exactly (up to floating-point rounding). In
    `jaxflows` the two directions are `flow.from_latent(params, z)` and
    `flow.to_latent(params, x)`.
    """),
    code(SMALL),
    code("""
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    from jax.scipy.stats import norm

    import jaxflows
    from jaxflows import data

    N_POINTS = 2_000 if SMALL else 20_000
    NUM_EPOCHS = 3 if SMALL else 100

    x = data.two_moons(0, N_POINTS)
    flow = jaxflows.maf(2, num_layers=5, hidden=(64, 64))
    params, history = jaxflows.fit(flow, flow.init(jax.random.key(0)), x, key=jax.random.key(1),
                                   num_epochs=NUM_EPOCHS, batch_size=256, progress=False)
    print(f"validation NLL after {history['num_epochs_run']} epochs: {history['val_loss'][-1]:.3f} nats")
    """),
    md("""
    ## Data -> latent

    Mapping the data to latent space should give points that look like draws from the base
    `N(0, I)`: the flow has learned to "Gaussianise" the two moons. Colouring each point by
    its moon shows where each moon lands.
    """),
    code("""
    to_latent = jax.jit(flow.to_latent)
    from_latent = jax.jit(flow.from_latent)

    z = to_latent(params, x)
    moon = x[:, 1] > 0.25 - 0.5 * (x[:, 0] - 0.5)   # a rough label, for colour only

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].scatter(*x.T, c=moon, s=2, cmap="coolwarm"); axes[0].set_title("data x")
    axes[1].scatter(*z.T, c=moon, s=2, cmap="coolwarm"); axes[1].set_title("latent z = f^{-1}(x)")
    circle = plt.Circle((0, 0), 2.0, fill=False, ls="--", color="k")
    axes[1].add_patch(circle)
    for ax in axes:
        ax.set_aspect("equal")
    plt.show()
    print("latent mean", np.round(z.mean(0), 3), " latent covariance", np.round(np.cov(z.T), 3).tolist())
    """),
    md("""
    ## Exact reconstruction

    `from_latent(to_latent(x))` returns `x`. The error is floating-point rounding: about
    `1e-6` in float32.
    """),
    code("""
    x_rec = from_latent(params, z)
    err = jnp.abs(x_rec - x).max(axis=-1)
    print(f"max reconstruction error {float(err.max()):.2e}, median {float(jnp.median(err)):.2e}")
    assert float(err.max()) < 1e-3

    plt.figure(figsize=(5, 3))
    plt.hist(np.log10(np.maximum(np.asarray(err), 1e-12)), bins=40)
    plt.xlabel("log10 max |x_rec - x|"); plt.ylabel("points")
    plt.title("reconstruction error, float32")
    plt.show()
    """),
    md("""
    ## The density is the latent density times a volume change

    The change of variables says `log p(x) = log N(z; 0, I) + log|det dz/dx|`. With the
    latent map in hand we can check `flow.log_prob` against an explicit Jacobian from
    `jax.jacfwd`.
    """),
    code("""
    def log_prob_by_hand(xi):
        zi = flow.to_latent(params, xi)
        jac = jax.jacfwd(lambda v: flow.to_latent(params, v))(xi)
        return norm.logpdf(zi).sum() + jnp.linalg.slogdet(jac)[1]

    few = x[:5]
    print("by hand:", np.round(jax.vmap(log_prob_by_hand)(few), 4))
    print("log_prob:", np.round(flow.log_prob(params, few), 4))
    np.testing.assert_allclose(jax.vmap(log_prob_by_hand)(few), flow.log_prob(params, few),
                               rtol=1e-4, atol=1e-4)
    """),
    md("""
    ## Latent -> data: sampling

    Sampling is the same map the other way. Drawing a regular polar grid in latent space and
    pushing it through `from_latent` shows how the flow bends space: circles of constant
    base density become the curved level sets of the model.
    """),
    code("""
    radii = np.array([0.5, 1.0, 1.5, 2.0])
    angles = np.linspace(0, 2 * np.pi, 400)
    rings = np.stack([np.stack([r * np.cos(angles), r * np.sin(angles)], -1) for r in radii])  # (4, 400, 2)
    x_rings = from_latent(params, jnp.asarray(rings, jnp.float32))

    samples = flow.sample(params, jax.random.key(2), (2000,))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r, ring, ring_x in zip(radii, rings, x_rings):
        axes[0].plot(*ring.T, label=f"|z| = {r}")
        axes[1].plot(*ring_x.T)
    axes[1].scatter(*samples.T, s=1, alpha=0.3, color="gray")
    axes[0].set_title("circles in latent space"); axes[0].legend(fontsize=8)
    axes[1].set_title("their images in data space, and samples")
    for ax in axes:
        ax.set_aspect("equal")
    plt.show()
    """),
    md("""
    ## Interpolation in latent space

    Take one point on each moon, map both to latent space, walk the straight line between the
    latents and map every step back. The path in data space follows the model's
    high-density region, while the straight line in data space crosses the empty gap between
    the moons. The log-density along both paths shows the difference.
    """),
    code("""
    a = jnp.array([-0.8, 0.5], jnp.float32)     # on the upper moon
    b = jnp.array([1.9, 0.2], jnp.float32)       # on the lower moon
    t = jnp.linspace(0.0, 1.0, 60)[:, None]

    z_a, z_b = to_latent(params, a), to_latent(params, b)
    latent_path = from_latent(params, (1 - t) * z_a + t * z_b)
    straight_path = (1 - t) * a + t * b

    log_prob = jax.jit(flow.log_prob)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].scatter(*x[:3000].T, s=1, alpha=0.2, color="gray")
    axes[0].plot(*latent_path.T, "-o", ms=3, label="linear in latent space")
    axes[0].plot(*straight_path.T, "--", label="linear in data space")
    axes[0].scatter(*jnp.stack([a, b]).T, color="k", zorder=3)
    axes[0].set_aspect("equal"); axes[0].legend(fontsize=8); axes[0].set_title("interpolation paths")
    axes[1].plot(t[:, 0], log_prob(params, latent_path), label="latent-space path")
    axes[1].plot(t[:, 0], log_prob(params, straight_path), "--", label="data-space path")
    axes[1].set_xlabel("t"); axes[1].set_ylabel("log p(x(t))"); axes[1].legend(fontsize=8)
    plt.show()

    # The endpoints come back exactly.
    np.testing.assert_allclose(latent_path[0], a, atol=1e-4)
    np.testing.assert_allclose(latent_path[-1], b, atol=1e-4)
    """),
]


# ---------------------------------------------------------------------------
# 5. Variational inference
# ---------------------------------------------------------------------------

VI = [
    md("""
    # Variational inference with an IAF

    Sometimes there is no data, only an unnormalised density `p~(x)` (a Bayesian posterior,
    a physics model). Variational inference fits a flow `q` to it by maximising the
    evidence lower bound

    $$\\mathrm{ELBO}(\\theta) = E_{x\\sim q_\\theta}\\big[\\log \\tilde p(x) - \\log q_\\theta(x)\\big] = \\log Z - \\mathrm{KL}(q_\\theta \\,\\|\\, p) \\le \\log Z .$$

    Each step draws samples from `q` and scores them under `q`. An **IAF** does both in one
    parallel pass per layer (`flow.sample_and_log_prob`), which is why it is the flow of
    choice here (see the MAF vs IAF notebook).

    The target is a 2-D "banana": `x_1 ~ N(0, 1.5^2)`, `x_2 | x_1 ~ N(x_1^2 / 2 - 1, 0.5^2)`, a
    curved ridge that no Gaussian fits well. We give it without its normalising constant; the
    true `log Z = log(2 pi * 1.5 * 0.5) = log(1.5 pi)`, so we can check the bound.
    """),
    code(SMALL),
    code("""
    import math

    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    import optax

    import jaxflows
    from jaxflows import vi

    NUM_STEPS = 300 if SMALL else 4000
    NUM_SAMPLES = 64 if SMALL else 128
    LOG_Z = math.log(1.5 * math.pi)


    def log_banana(x):
        \"\"\"Unnormalised log density of ONE point x: (2,).\"\"\"
        return -0.5 * (x[0] / 1.5) ** 2 - 0.5 * ((x[1] - 0.5 * x[0] ** 2 + 1.0) / 0.5) ** 2
    """),
    md("""
    ## Fit

    `vi.fit_vi` maximises a Monte-Carlo ELBO with reparameterised gradients, running the
    steps inside a jitted loop. `log_density` is a function of one point; the library
    vectorises it.
    """),
    code("""
    flow = jaxflows.iaf(2, num_layers=5, hidden=(32, 32))
    params = flow.init(jax.random.key(0))
    params, history = vi.fit_vi(flow, params, log_banana, key=jax.random.key(1),
                                num_steps=NUM_STEPS, num_samples=NUM_SAMPLES,
                                optimizer=optax.adam(3e-3))
    elbo_curve = np.asarray(history["elbo"])
    print(f"{NUM_STEPS} steps in {history['seconds']:.1f} s; "
          f"ELBO over the last 100 steps {elbo_curve[-100:].mean():.3f}, log Z = {LOG_Z:.3f}")
    """),
    code("""
    window = 50
    smooth = np.convolve(elbo_curve, np.ones(window) / window, mode="valid")
    plt.figure(figsize=(6, 3.2))
    steps = np.arange(1, len(elbo_curve) + 1)
    plt.plot(steps, elbo_curve, alpha=0.3, label="ELBO per step")
    plt.plot(steps[window - 1:], smooth, label=f"{window}-step mean")
    plt.xscale("log")
    plt.axhline(LOG_Z, color="k", ls="--", label="log Z")
    plt.ylim(LOG_Z - 6, LOG_Z + 0.5)
    plt.xlabel("step"); plt.ylabel("nats"); plt.legend()
    plt.show()
    """),
    md("""
    ## Samples against the target

    Samples from `q` should fill the banana-shaped contours of the target.
    """),
    code("""
    samples = flow.sample(params, jax.random.key(2), (3000,))
    xs, ys = np.linspace(-5, 5, 200), np.linspace(-3, 11, 200)
    grid = np.stack(np.meshgrid(xs, ys), -1)
    target = jax.vmap(jax.vmap(log_banana))(jnp.asarray(grid))
    fitted = flow.log_prob(params, grid)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
    levels = [-9, -6, -3]                  # of the normalised log density log p~(x) - log Z
    axes[0].contour(xs, ys, target - LOG_Z, levels=levels, colors="k")
    axes[0].scatter(*samples.T, s=1, alpha=0.3)
    axes[0].set_title("IAF samples on target contours")
    axes[1].contour(xs, ys, target - LOG_Z, levels=levels, colors="k")
    axes[1].contour(xs, ys, fitted, levels=levels, colors="C1", linestyles="--")
    axes[1].set_title("target (black) vs q (orange dashed)")
    plt.show()
    """),
    md("""
    ## How good is the fit? Importance weights

    With `w = p~(x) / q(x)` for `x ~ q`, the effective sample size `ESS = (sum w)^2 / sum w^2`
    is `n` when `q` matches the target exactly and falls towards 1 as they diverge; the
    average weight estimates `Z`. `vi.importance_ess` returns both.
    """),
    code("""
    stats = vi.importance_ess(flow, params, log_banana, jax.random.key(3), num_samples=4096)
    print(f"ESS {float(stats['ess']):.0f} of 4096 ({100 * float(stats['ess_fraction']):.1f}%)")
    print(f"importance-sampling log Z {float(stats['log_evidence']):.3f}, "
          f"ELBO {float(stats['elbo']):.3f}, true log Z {LOG_Z:.3f}")
    assert float(stats["elbo"]) <= LOG_Z + 0.05
    assert np.isfinite(float(stats["log_evidence"]))
    """),
    md("""
    The ELBO stays below `log Z` (the gap is `KL(q || p)`), while the importance-sampling
    estimate is close to `log Z` once `q` covers the target. A small ESS fraction would say
    that `q` misses part of the target (often the tails): train longer, or use more layers.
    """),
]


# ---------------------------------------------------------------------------
# 6. Anomaly detection and model comparison
# ---------------------------------------------------------------------------

ANOMALY = [
    md("""
    # Anomaly detection and model comparison

    Study note 004 lists what an exact, cheap density buys: maximum-likelihood training,
    **model comparison** by likelihood on held-out data, and **anomaly detection** by
    flagging points the model finds improbable. This notebook does both on scikit-learn's
    handwritten digits (8x8 images, 64 dimensions, bundled with scikit-learn: nothing to
    download).

    The pixels are integers 0..16; `jaxflows.data.digits` adds uniform noise in `[0, 1)`
    (dequantisation) so that a continuous density makes sense. The models are trained on
    standardised pixels, and `data.standardizer_log_det` converts their log-likelihoods back
    to pixel units.
    """),
    code(SMALL),
    code("""
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.datasets import load_digits

    import jaxflows
    from jaxflows import data
    from jaxflows.flows import realnvp

    NUM_EPOCHS = 2 if SMALL else 150
    HIDDEN = (64,) if SMALL else (256, 256)

    x_all = data.digits(seed=0)                      # (1797, 64) float32, dequantised
    labels_all = load_digits().target                # the digit of each row, for display only
    idx_train, idx_val, idx_test = data.split(np.arange(len(x_all)), (0.7, 0.1, 0.2), seed=0)
    if SMALL:
        idx_train = idx_train[:400]
    standardizer = data.fit_standardizer(x_all[idx_train])
    std = lambda a: np.asarray(data.standardize(standardizer, a), np.float32)
    train, val, test = (std(x_all[i]) for i in (idx_train, idx_val, idx_test))
    to_pixels = float(data.standardizer_log_det(standardizer))   # log|dz/dx| of standardising
    print("train", train.shape, "validation", val.shape, "test", test.shape)
    """),
    md("""
    ## The models

    * **Gaussian**: a full-covariance Gaussian fitted in closed form (mean and covariance of
      the training rows). A flow has to beat it to be worth its cost.
    * **MAF, 1 layer** and **MAF, 5 layers**: `jaxflows.maf`.
    * **RealNVP, 5 layers**: `jaxflows.flows.realnvp`, affine coupling layers.

    Every flow trains with early stopping on the validation rows.
    """),
    code("""
    def gaussian_log_prob(train_rows):
        mean = train_rows.mean(0)
        cov = np.cov(train_rows.T) + 1e-6 * np.eye(train_rows.shape[1])
        chol = np.linalg.cholesky(cov)
        half_log_det = np.log(np.diag(chol)).sum()

        def log_prob(x):
            w = np.linalg.solve(chol, (x - mean).T).T
            return -0.5 * (w ** 2).sum(-1) - half_log_det - 0.5 * x.shape[-1] * np.log(2 * np.pi)

        return log_prob


    def train_flow(flow, seed=0):
        params = flow.init(jax.random.key(seed))
        params, history = jaxflows.fit(flow, params, train, val_data=val, key=jax.random.key(seed + 1),
                                       num_epochs=NUM_EPOCHS, batch_size=128, learning_rate=1e-3,
                                       patience=15, progress=False)
        return jax.jit(lambda x: flow.log_prob(params, x)), history


    scorers = {"Gaussian": gaussian_log_prob(train)}
    histories = {}
    flows = {
        "MAF, 1 layer": jaxflows.maf(64, num_layers=1, hidden=HIDDEN),
        "MAF, 5 layers": jaxflows.maf(64, num_layers=5, hidden=HIDDEN),
        "RealNVP, 5 layers": realnvp(64, num_layers=5, hidden=HIDDEN),
    }
    for name, flow in flows.items():
        scorers[name], histories[name] = train_flow(flow)
        print(f"{name}: {histories[name]['num_epochs_run']} epochs, best {histories[name]['best_epoch']}")
    """),
    md("""
    ## Model comparison: test log-likelihood

    The average log-likelihood of held-out rows estimates `-KL(p_data || p_model)` up to a
    constant, so higher is better and differences between models are meaningful. We report
    it per image in nats (pixel units), with two standard errors, and in bits per pixel.
    """),
    code("""
    test_scores = {name: np.asarray(score(test)) + to_pixels for name, score in scorers.items()}

    print(f"{'model':<20}{'test log-lik (nats)':>24}{'bits/pixel':>12}")
    for name, ll in test_scores.items():
        se = ll.std() / np.sqrt(ll.size)
        print(f"{name:<20}{ll.mean():>16.2f} +- {2 * se:<5.2f}{float(data.bits_per_dim(ll.mean(), 64)):>12.3f}")
        assert np.isfinite(ll).all()

    names = list(test_scores)
    means = [test_scores[n].mean() for n in names]
    errs = [2 * test_scores[n].std() / np.sqrt(test_scores[n].size) for n in names]
    plt.figure(figsize=(6, 3))
    plt.barh(names, means, xerr=errs, color=["gray"] + ["C0"] * (len(names) - 1))
    plt.xlabel("mean test log-likelihood per image (nats, higher is better)")
    plt.xlim(min(means) - 20, max(means) + 10)
    plt.show()
    """),
    md("""
    ## Anomaly detection

    Score every held-out image with the best model and flag the least likely ones. A
    threshold makes the flag a rule that can run on new data: here, the 2nd percentile of the
    log-likelihoods of the validation rows. Take it from held-out rows, not from the training
    rows: a flexible model scores its own training rows higher than new ones, so a
    training-set percentile would flag far more than 2% of new, normal data.
    """),
    code("""
    best = max(test_scores, key=lambda n: test_scores[n].mean())
    score = lambda x: np.asarray(scorers[best](x)) + to_pixels
    threshold = np.percentile(score(val), 2)
    ll_test = test_scores[best]
    flagged = np.argsort(ll_test)[:8]
    print(f"model: {best}; threshold {threshold:.1f} nats; "
          f"{(ll_test < threshold).sum()} of {len(ll_test)} test images below it")

    fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
    typical = np.argsort(ll_test)[len(ll_test) // 2:][:8]
    for row, picks, what in ((0, flagged, "least likely"), (1, typical, "typical")):
        for ax, i in zip(axes[row], picks):
            ax.imshow(x_all[idx_test[i]].reshape(8, 8), cmap="gray_r")
            ax.set_title(f"'{labels_all[idx_test[i]]}' {ll_test[i]:.0f}", fontsize=9)
            ax.axis("off")
        axes[row, 0].text(-6, 4, what, rotation=90, va="center", fontsize=10)
    plt.suptitle("held-out digits: label and log-likelihood (nats)")
    plt.show()
    """),
    md("""
    The flagged images are typically badly written or unusual strokes. To see the detector
    work on known anomalies, we corrupt held-out images in two ways: **transposed**
    (a plausible stroke image, but not a digit as written) and **noisy** (random pixels
    replaced with random intensities), and compare their score distributions with the
    clean test set.
    """),
    code("""
    rng = np.random.default_rng(0)
    clean = x_all[idx_test]
    transposed = clean.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64)
    noisy = clean.copy()
    mask = rng.random(noisy.shape) < 0.2
    noisy[mask] = rng.uniform(0, 17, size=mask.sum())

    sets = {"clean test": clean, "transposed": transposed, "20% noisy pixels": noisy}
    scores = {k: score(std(v)) for k, v in sets.items()}

    plt.figure(figsize=(7, 3.2))
    lo = np.percentile(scores["clean test"], 1) - 150      # lower scores are piled up at lo
    bins = np.linspace(lo, max(s.max() for s in scores.values()), 60)
    for k, s in scores.items():
        plt.hist(np.clip(s, lo, None), bins=bins, alpha=0.5, label=k)
        print(f"{k:>18}: {100 * np.mean(s < threshold):5.1f}% flagged")
    plt.axvline(threshold, color="k", ls="--", label="threshold")
    plt.xlabel(f"log-likelihood (nats; everything below {lo:.0f} shown at {lo:.0f})")
    plt.legend(); plt.show()

    # Ranking quality: probability that a corrupted image scores below a clean one (AUROC).
    def auroc(normal, anomalous):
        return float(np.mean(anomalous[:, None] < normal[None, :]))

    for k in ("transposed", "20% noisy pixels"):
        print(f"AUROC clean vs {k}: {auroc(scores['clean test'], scores[k]):.3f}")
    assert auroc(scores["clean test"], scores["20% noisy pixels"]) > 0.5
    """),
    md("""
    ## Caveats

    * Likelihood compares models **on the same data in the same units**. Every model here
      sees the same standardised pixels, so the `standardizer_log_det` term is one constant
      for all of them and does not change the ranking; it puts the numbers in pixel units,
      where they can be compared with models trained on unstandardised pixels.
    * On dequantised pixels the continuous log-likelihood is a lower bound on the log
      probability of the integer image (unit-width bins), so bits per pixel here bound a
      code length.
    * A low likelihood flags "unlike the training data", not "wrong": flows are known to
      give high likelihood to some simple out-of-distribution inputs (such as near-constant
      images), so check a detector on the anomalies you care about.
    """),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_maf_vs_iaf.ipynb": MAF_VS_IAF,
    "03_autoregressive_models_are_flows.ipynb": AR_FLOWS,
    "04_sampling_and_latent_inference.ipynb": LATENT,
    "05_variational_inference.ipynb": VI,
    "06_anomaly_detection_and_model_comparison.ipynb": ANOMALY,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    """A notebook with no outputs and deterministic cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    stem = name.split(".")[0]
    for i, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"{stem[:40]}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a notebook is not up to date")
    args = p.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = os.path.join(HERE, name)
        text = nbformat.writes(build(name, cells)) + "\n"
        if args.check:
            current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
            if current != text:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
