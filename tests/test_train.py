"""fit: validation, early stopping, best params, NaN guard, determinism, resume, options."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows as jf
from jaxflows.train import TRAIN_STATE_FILE, fit, make_step


def _flow(dim=2, **kw):
    return jf.maf(dim, num_layers=2, hidden=(8,), **kw)


# One flow and optimizer objects shared by the tests: fit memoises its jitted step
# on them, so each test does not pay for a fresh compilation.
FLOW = _flow()
ADAM_FAST = optax.adam(1e-2)
ADAM_MID = optax.adam(3e-3)


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _nll(flow, params, x):
    return -float(jnp.mean(jax.jit(flow.log_prob)(params, jnp.asarray(x))))


def test_history_and_the_plain_call_still_work():
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    params, hist = fit(flow, flow.init(jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1),
                       num_epochs=3, batch_size=50, progress=False)
    for name in ("train_loss", "val_loss", "epoch_seconds", "skipped_steps"):
        assert len(hist[name]) == 3, name
    assert all(s > 0 for s in hist["epoch_seconds"])
    assert hist["skipped_steps"] == [0, 0, 0]
    assert hist["num_epochs_run"] == 3 and not hist["stopped_early"]
    assert np.isfinite(hist["val_loss"]).all()
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(params))


def test_early_stopping_returns_the_best_epochs_params():
    # Train on a narrow Gaussian, validate on a wide one: every epoch of training
    # makes the validation loss worse, so epoch 0 is best and patience ends the fit.
    rng = np.random.default_rng(0)
    train = (0.1 * rng.normal(size=(256, 2))).astype(np.float32)
    val = rng.normal(size=(64, 2)).astype(np.float32)
    flow = FLOW
    params, hist = fit(flow, flow.init(jax.random.PRNGKey(0)), train, val_data=val,
                       key=jax.random.PRNGKey(1), num_epochs=50, batch_size=64, patience=3,
                       optimizer=ADAM_FAST, progress=False)
    assert hist["stopped_early"]
    assert hist["num_epochs_run"] == hist["best_epoch"] + 4 < 50
    best = int(np.argmin(hist["val_loss"]))
    assert hist["best_epoch"] == best
    assert hist["val_loss"][-1] > hist["val_loss"][best] + 1e-3
    # the returned params are the best epoch's: their validation loss is the best one
    assert _nll(flow, params, val) == pytest.approx(hist["val_loss"][best], abs=1e-4)


def test_validation_split_and_explicit_validation_data():
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    p0 = flow.init(jax.random.PRNGKey(0))
    _, h = fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=1, batch_size=10,
               val_fraction=0.2, progress=False)
    assert h["skipped_steps"] == [0]
    _, h0 = fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=2, batch_size=10,
                val_fraction=0.0, progress=False)
    assert np.isnan(h0["val_loss"]).all() and h0["best_epoch"] == 1
    with pytest.raises(ValueError, match=r"val_data must have shape \(n, 2\)"):
        fit(flow, p0, x, val_data=np.zeros((5, 3), np.float32), key=jax.random.PRNGKey(1),
            num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        fit(flow, p0, x, val_fraction=1.5, key=jax.random.PRNGKey(1), num_epochs=1,
            progress=False)


def test_nan_guard_skips_a_bad_batch_and_never_corrupts_params():
    flow = FLOW
    params = flow.init(jax.random.PRNGKey(0))
    opt = ADAM_FAST
    step = make_step(flow, opt)
    state = opt.init(params)
    bad = jnp.full((8, 2), jnp.nan)
    p1, s1, loss = step(params, state, bad)
    assert not np.isfinite(float(loss))
    _leaves_equal(p1, params)
    _leaves_equal(s1, state)
    # In fit: one finite but overflowing row (z^2 = inf in float32) makes its batch's
    # loss infinite; that step is skipped and counted, training goes on.
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    x[5] = 1e30
    with pytest.warns(jf.RawScaleWarning, match="unstandardised"):  # the 1e30 row, before training
        out, hist = fit(flow, params, x, key=jax.random.PRNGKey(1), num_epochs=4, batch_size=16,
                        val_fraction=0.0, progress=False)
    assert sum(hist["skipped_steps"]) >= 3  # the bad row lands in one batch per epoch
    assert all(s <= 1 for s in hist["skipped_steps"])
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(out))
    assert np.isfinite(hist["train_loss"]).all()


def test_nan_guard_stops_with_advice_when_it_persists():
    flow = FLOW
    # every batch overflows (not constant columns: fit refuses those before training)
    x = (1e30 * (1 + np.random.default_rng(0).random((64, 2)))).astype(np.float32)
    p0 = flow.init(jax.random.PRNGKey(0))
    with (pytest.raises(jf.TrainingDiverged, match="lower learning rate.*clipping.*standardising") as e,
          pytest.warns(jf.RawScaleWarning, match="unstandardised")):
        fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=10,
            batch_size=16, max_bad_steps=6, progress=False)
    err = e.value
    assert isinstance(err, FloatingPointError)
    assert len(err.history["train_loss"]) == 2  # 3 steps per epoch: 6 in a row by epoch 2
    assert err.history["skipped_steps"] == [3, 3]
    # epoch 1 (0-based) ended it; the 6th bad step in a row was step 5 of the whole fit
    assert (err.epoch, err.step, err.bad_steps) == (1, 5, 6)
    _leaves_equal(err.params, p0)  # no step was ever applied: the params it started from


def test_training_diverged_carries_its_fields_through_pickle_and_advice():
    import pickle

    err = jf.TrainingDiverged("stopped", params={"w": np.ones(2)}, history={"train_loss": [1.0]},
                              epoch=3, step=41, bad_steps=7)
    for e in (pickle.loads(pickle.dumps(err)), err.with_advice("Try --clip 1.0.")):
        assert isinstance(e, jf.TrainingDiverged) and isinstance(e, FloatingPointError)
        assert (e.epoch, e.step, e.bad_steps) == (3, 41, 7)
        assert e.history == {"train_loss": [1.0]}
        np.testing.assert_array_equal(e.params["w"], np.ones(2))
    assert str(err.with_advice("Try --clip 1.0.")) == "stopped Try --clip 1.0."


def test_early_stopping_update_is_pure():
    from jaxflows.early_stopping import EarlyStopping, update

    s0 = EarlyStopping(best_params="p0")
    s1 = update(s0, 0, "p1", 2.0, patience=2)
    assert s0 == EarlyStopping("p0")  # untouched
    assert s1 == EarlyStopping("p1", 2.0, 0, 0, False)
    s2 = update(s1, 1, "p2", 2.5, patience=2)  # worse: keeps the best, counts
    assert s2 == EarlyStopping("p1", 2.0, 0, 1, False)
    s3 = update(s2, 2, "p3", 2.0, patience=2)  # equal is not better: patience runs out
    assert s3 == EarlyStopping("p1", 2.0, 0, 2, True)
    assert update(s2, 2, "p3", 1.0, patience=2) == EarlyStopping("p3", 1.0, 2, 0, False)
    assert not update(s2, 2, "p3", 9.0, patience=None).stopped  # None: never stops
    # without validation the latest epoch is the best and nothing stops
    assert update(s0, 4, "p4", None, patience=1) == EarlyStopping("p4", float("inf"), 4, 0, False)


def test_make_step_reports_a_skip_with_a_finite_loss_as_nan():
    """A finite loss whose gradient is NaN (a norm at zero): skipped, and the loss says so."""
    flow = FLOW
    params = flow.init(jax.random.PRNGKey(0))

    def loss(p, x, c=None):
        leaf = jax.tree_util.tree_leaves(p)[0]
        return jnp.linalg.norm(leaf - leaf) + 0.0 * jnp.mean(x)

    step = make_step(flow, ADAM_FAST, loss_fn=loss)
    state = jf.init_optimizer(ADAM_FAST, params)
    p1, s1, value = step(params, state, jnp.zeros((4, 2)))
    assert np.isnan(float(value))
    _leaves_equal(p1, params)
    _leaves_equal(s1, state)


def test_deterministic_given_the_key_and_numpy_equals_jax_data():
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(120, 2)).astype(np.float32)
    p0 = flow.init(jax.random.PRNGKey(0))
    kw = dict(num_epochs=2, batch_size=20, progress=False)
    a, ha = fit(flow, p0, x, key=jax.random.PRNGKey(1), **kw)
    b, hb = fit(flow, p0, x, key=jax.random.PRNGKey(1), **kw)
    c, _ = fit(flow, p0, jnp.asarray(x), key=jax.random.PRNGKey(1), **kw)
    d, _ = fit(flow, p0, x, key=jax.random.PRNGKey(2), **kw)
    _leaves_equal(a, b)
    assert ha["train_loss"] == hb["train_loss"]
    assert _max_diff(a, c) < 1e-6
    assert _max_diff(a, d) > 1e-4


def test_any_optax_optimizer_with_schedule_and_clipping():
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(128, 2)).astype(np.float32) * 2 + 1
    sched = optax.exponential_decay(1e-2, transition_steps=10, decay_rate=0.5)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched))
    p0 = flow.init(jax.random.PRNGKey(0))
    p, h = fit(flow, p0, x, key=jax.random.PRNGKey(1), optimizer=opt, num_epochs=5,
               batch_size=32, progress=False)
    assert h["val_loss"][-1] < h["val_loss"][0]
    # one way to set the optimizer: learning_rate= beside it is an unknown keyword
    with pytest.raises(TypeError, match="learning_rate"):
        fit(flow, p0, x, key=jax.random.PRNGKey(1), learning_rate=1e-3)


def test_conditional_fit_learns_the_context():
    rng = np.random.default_rng(0)
    c = rng.choice([-2.0, 2.0], size=(256, 1)).astype(np.float32)
    x = (c + 0.3 * rng.normal(size=(256, 2))).astype(np.float32)
    flow = _flow(context_dim=1)
    p0 = flow.init(jax.random.PRNGKey(0))
    p, h = fit(flow, p0, x, context=c, key=jax.random.PRNGKey(1), num_epochs=30, batch_size=64,
               optimizer=ADAM_FAST, progress=False)
    assert h["val_loss"][h["best_epoch"]] < h["val_loss"][0] - 0.5
    log_prob = jax.jit(flow.log_prob)
    lp_right = log_prob(p, jnp.array([[2.0, 2.0]]), jnp.array([[2.0]]))
    lp_wrong = log_prob(p, jnp.array([[2.0, 2.0]]), jnp.array([[-2.0]]))
    assert float(lp_right[0]) > float(lp_wrong[0]) + 1.0
    with pytest.raises(ValueError, match="conditional"):
        fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=1, progress=False)
    with pytest.raises(ValueError, match="context has 10 rows but data has 256"):
        fit(flow, p0, x, context=c[:10], key=jax.random.PRNGKey(1), num_epochs=1, progress=False)


def test_progress_bar_is_shown_and_can_be_silenced(capsys):
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    p0 = flow.init(jax.random.PRNGKey(0))
    fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=2, batch_size=32, progress=True)
    assert "2/2" in capsys.readouterr().err
    fit(flow, p0, x, key=jax.random.PRNGKey(1), num_epochs=2, batch_size=32, progress=False)
    assert capsys.readouterr().err == ""


def test_resume_equals_an_uninterrupted_run(tmp_path):
    flow = FLOW
    x = np.random.default_rng(0).normal(size=(160, 2)).astype(np.float32) * [1.0, 3.0]
    p0 = flow.init(jax.random.PRNGKey(0))
    kw = dict(key=jax.random.PRNGKey(1), batch_size=32, patience=20, progress=False,
              optimizer=ADAM_MID)
    full, h_full = fit(flow, p0, x, num_epochs=6, **kw)
    d = str(tmp_path / "run")
    # "interrupted" after 2 epochs; then the same call with resume=True runs 2 more,
    # then a third call finishes.
    fit(flow, p0, x, num_epochs=2, checkpoint_dir=d, **kw)
    assert os.path.exists(os.path.join(d, TRAIN_STATE_FILE))
    fit(flow, p0, x, num_epochs=4, checkpoint_dir=d, resume=True, **kw)
    resumed, h_res = fit(flow, p0, x, num_epochs=6, checkpoint_dir=d, resume=True, **kw)
    _leaves_equal(full, resumed)
    assert h_full["train_loss"] == h_res["train_loss"]
    assert h_full["val_loss"] == h_res["val_loss"]
    assert h_full["best_epoch"] == h_res["best_epoch"]
    # the training state is an ordinary checkpoint too: load() gives the best params
    ck = jf.checkpoint.load(os.path.join(d, TRAIN_STATE_FILE))
    _leaves_equal(ck.params, full)
    assert ck.step == 6
    # resuming with other data or another key is refused, naming the file
    with pytest.raises(ValueError, match="different run"):
        fit(flow, p0, x[:100], num_epochs=7, checkpoint_dir=d, resume=True, **kw)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        fit(flow, p0, x, num_epochs=1, resume=True, key=jax.random.PRNGKey(1))


def test_resume_refuses_a_state_whose_default_adam_had_another_rate():
    """A training state saved when fit still took learning_rate= (its fingerprint holds the
    default Adam's rate): resuming it is refused, saying why and what to do instead."""
    from jaxflows.resume import refuse_other_run

    def fingerprint(**rate):
        return {"optimizer": {**rate, "state_structure": "abc", "hyperparams": {}}}

    saved = fingerprint(default_adam_learning_rate=0.5)
    for now in (fingerprint(default_adam_learning_rate=1e-3), fingerprint()):
        with pytest.raises(ValueError, match=r"default_adam_learning_rate: checkpoint 0\.5.*"
                                             r"learning_rate=0\.5, an argument fit no longer "
                                             r"takes.*optimizer=optax\.adam\(0\.5\)"):
            refuse_other_run("s.ckpt", saved, now)
    with pytest.raises(ValueError, match=r"run passed its own optimizer=: pass the same one"):
        refuse_other_run("s.ckpt", fingerprint(), fingerprint(default_adam_learning_rate=1e-3))
    refuse_other_run("s.ckpt", fingerprint(default_adam_learning_rate=1e-3),
                     fingerprint(default_adam_learning_rate=1e-3))  # the default: resumes


def test_batch_size_must_fit_the_mesh():
    mesh = jax.make_mesh((1,), ("batch",))
    flow = FLOW
    x = np.zeros((16, 2), np.float32)
    with pytest.raises(ValueError, match="axis named 'data'"):
        fit(flow, flow.init(jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1), mesh=mesh,
            num_epochs=1, progress=False)


def test_fit_batch_norm_flow_keeps_running_stats_out_of_the_optimizer():
    """fit threads batch-norm running statistics as state: they track the data, the
    optimizer (here with weight decay, which would shrink any param it sees) never moves them."""
    import optax
    from jaxflows.bijectors.batchnorm import split_state

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(512, 3)) * np.array([3.0, 0.5, 1.0]) + np.array([5.0, -2.0, 0.0])).astype(np.float32)
    flow = jf.maf(3, num_layers=2, hidden=(8,), batch_norm=True)
    params = flow.init(jax.random.PRNGKey(0))
    state0 = [np.asarray(a) for a in jax.tree_util.tree_leaves(split_state(params)[1])]
    opt = optax.adamw(3e-3, weight_decay=0.5)
    out, hist = jf.fit(flow, params, data, key=jax.random.PRNGKey(1), optimizer=opt, batch_size=128,
                       num_epochs=10, patience=None, progress=False, val_fraction=0.0)
    state1 = [np.asarray(a) for a in jax.tree_util.tree_leaves(split_state(out)[1])]
    assert len(state1) == len(state0) > 0
    assert any(not np.allclose(a, b) for a, b in zip(state0, state1)), "running statistics never updated"
    # evaluation mode (running statistics) now models the un-standardised data about as well as
    # training mode (batch statistics); the identity flow would score it near 23 nats
    eval_nll = -float(jnp.mean(jax.jit(flow.log_prob)(out, data)))
    gauss_nll = 0.5 * 3 * np.log(2 * np.pi * np.e) + np.log(3.0 * 0.5 * 1.0)
    assert abs(eval_nll - hist["train_loss"][-1]) < 0.2
    assert eval_nll < gauss_nll + 0.3
