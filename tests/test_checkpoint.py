"""Checkpoints: round trip, atomic writes, and clear errors for bad files."""

import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows as jf
from jaxflows import checkpoint as ckpt
from jaxflows.data import Standardizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    flow = jf.maf(3, num_layers=2, hidden=(8,), permutation="random", permutation_seed=3)
    params = jax.tree_util.tree_map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape),
        flow.init(jax.random.PRNGKey(0)))
    opt = optax.adam(1e-3)
    state = opt.init(params)
    _, state = jax.jit(opt.update)(jax.tree_util.tree_map(jnp.ones_like, params), state, params)
    std = Standardizer(mean=np.array([1.0, 2.0, 3.0]), scale=np.array([0.5, 1.0, 4.0]))
    path = str(tmp_path_factory.mktemp("ck") / "model.ckpt")
    out = ckpt.save(path, flow, params, opt_state=state, step=7, standardizer=std,
                    metadata={"note": "hi", "ll": -1.5})
    assert out == path
    return flow, params, opt, state, std, path


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_round_trip_rebuilds_the_same_flow(saved):
    flow, params, opt, state, std, path = saved
    c = ckpt.load(path, optimizer=opt)
    assert c.config == flow.config and c.step == 7
    assert c.metadata == {"note": "hi", "ll": -1.5}
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    np.testing.assert_array_equal(flow.log_prob(params, x), c.flow.log_prob(c.params, x))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(c.opt_state)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(c.opt_state) == jax.tree_util.tree_structure(state)
    np.testing.assert_array_equal(c.standardizer.mean, std.mean)
    np.testing.assert_array_equal(c.standardizer.scale, std.scale)
    # without an optimizer the state comes back as plain nested dicts of arrays
    assert ckpt.load(path).opt_state is not None


def test_minimal_save_and_flow_without_config(tmp_path):
    flow = jf.iaf(2, num_layers=1, hidden=(4,))
    params = flow.init(jax.random.PRNGKey(0))
    c = ckpt.load(ckpt.save(tmp_path / "m.ckpt", flow, params))
    assert c.opt_state is None and c.step is None and c.standardizer is None
    assert c.metadata == {}
    custom = jf.transformed(flow.bijector, "normal", dim=2)  # no config
    with pytest.warns(UserWarning, match="without a flow config"):
        p = ckpt.save(tmp_path / "c.ckpt", custom, params)
    c = ckpt.load(p)
    assert c.flow is None and c.config is None
    c = ckpt.load(p, flow=custom)
    x = jnp.ones((2, 2))
    np.testing.assert_array_equal(custom.log_prob(c.params, x), custom.log_prob(params, x))


def test_params_that_do_not_fit_the_flow_are_rejected(tmp_path):
    flow = jf.maf(2, num_layers=2, hidden=(4,))
    other = jf.maf(2, num_layers=2, hidden=(5,))
    p = ckpt.save(tmp_path / "x.ckpt", flow._replace(config=other.config), flow.init(jax.random.PRNGKey(0)))
    with pytest.raises(ckpt.CheckpointError, match=r"x\.ckpt.*shape"):
        ckpt.load(p)


def test_truncated_file(saved, tmp_path):
    blob = _bytes(saved[-1])
    for cut in (len(blob) - 1, len(blob) // 2, 20, 5):
        p = tmp_path / f"cut{cut}.ckpt"
        p.write_bytes(blob[:cut])
        with pytest.raises(ckpt.CheckpointError, match=rf"cut{cut}\.ckpt.*(truncated|not a jaxflows)"):
            ckpt.load(p)


def test_corrupted_file(saved, tmp_path):
    blob = bytearray(_bytes(saved[-1]))
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the payload
    p = tmp_path / "bad.ckpt"
    p.write_bytes(bytes(blob))
    with pytest.raises(ckpt.CheckpointError, match=r"bad\.ckpt.*corrupted.*checksum"):
        ckpt.load(p)
    p.write_bytes(_bytes(saved[-1]) + b"junk")
    with pytest.raises(ckpt.CheckpointError, match=r"bad\.ckpt.*corrupted"):
        ckpt.load(p)


def test_foreign_files(tmp_path):
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    pkl = tmp_path / "obj.pkl"
    import pickle
    pkl.write_bytes(pickle.dumps({"params": 1}))
    from flax import serialization
    raw = tmp_path / "flax.msgpack"
    raw.write_bytes(serialization.to_bytes({"w": np.zeros(2)}))
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for p in (npy, pkl, raw, empty):
        with pytest.raises(ckpt.CheckpointError, match=rf"{p.name}.*not a jaxflows checkpoint"):
            ckpt.load(p)
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt.*does not exist"):
        ckpt.load(tmp_path / "nope.ckpt")
    with pytest.raises(ckpt.CheckpointError, match="directory"):
        ckpt.load(tmp_path)


def test_newer_format_version(saved, tmp_path):
    blob = bytearray(_bytes(saved[-1]))
    struct.pack_into("<I", blob, 8, ckpt.FORMAT_VERSION + 1)
    p = tmp_path / "future.ckpt"
    p.write_bytes(bytes(blob))
    with pytest.raises(ckpt.CheckpointError, match=r"future\.ckpt.*newer.*upgrade jaxflows"):
        ckpt.load(p)


def test_unknown_factory_is_a_clear_error(tmp_path):
    flow = jf.maf(2, num_layers=1, hidden=(4,))
    cfg = {"factory": "from_the_future", "kwargs": {}}
    p = ckpt.save(tmp_path / "f.ckpt", flow._replace(config=cfg), flow.init(jax.random.PRNGKey(0)))
    with pytest.raises(ckpt.CheckpointError, match=r"f\.ckpt.*cannot rebuild its flow"):
        ckpt.load(p)


def test_writes_are_atomic(saved, tmp_path, monkeypatch):
    flow, params, *_ = saved
    p = tmp_path / "keep.ckpt"
    ckpt.save(p, flow, params, metadata={"version": 1})
    good = _bytes(p)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

    def crash(*a, **k):
        raise OSError("disk full mid-save")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(p, flow, params, metadata={"version": 2})
    monkeypatch.undo()
    assert _bytes(p) == good  # the old file is untouched
    assert ckpt.load(p).metadata == {"version": 1}
    assert sorted(os.listdir(tmp_path)) == ["keep.ckpt"]  # no temp file left behind


def test_save_rejects_non_flows(tmp_path):
    with pytest.raises(TypeError, match="flow must be a jaxflows Flow"):
        ckpt.save(tmp_path / "x.ckpt", {"not": "a flow"}, {})
