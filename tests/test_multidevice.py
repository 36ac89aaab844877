"""Data-parallel fit over 8 simulated CPU devices equals a 1-device fit.

Runs in a subprocess because the device count is fixed when JAX starts
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys, time
    import jax, numpy as np, optax
    import jaxflows as jf
    from jaxflows.train import fit

    assert jax.device_count() == 8, jax.devices()
    flow = jf.maf(3, num_layers=2, hidden=(16,))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(640, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 0.5]])).astype(np.float32)
    p0 = flow.init(jax.random.PRNGKey(0))
    opt = optax.adam(3e-3)
    kw = dict(key=jax.random.PRNGKey(1), optimizer=opt, batch_size=64, num_epochs=int(sys.argv[1]),
              progress=False)
    t = time.perf_counter(); one, h1 = fit(flow, p0, x, **kw); t1 = time.perf_counter() - t
    mesh = jax.make_mesh((8,), ("data",))
    t = time.perf_counter(); eight, h8 = fit(flow, p0, x, mesh=mesh, **kw); t8 = time.perf_counter() - t
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight)))
    scale = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(p0)))
    devices = sorted({d.id for a in jax.tree_util.tree_leaves(eight) for d in a.devices()})
    # the batch really is split: 8 shards of 8 rows, and the step all-reduces gradients
    from jaxflows.sharding import auto_mesh, placer, replicate
    from jaxflows.steps import zero_stats
    from jaxflows.train import Carry, _compiled
    auto = auto_mesh(mesh)
    batch = placer(auto)(x[:64])
    shards = sorted(s.data.shape for s in batch.addressable_shards)
    step, _ = _compiled(flow.log_prob, flow.train_log_prob, opt, None, auto, 50)
    carry = replicate(Carry(p0, opt.init(p0), zero_stats()), auto)
    hlo = step.lower(carry, batch, None).compile().as_text()
    print(json.dumps({"max_param_diff": diff, "max_param_change": scale,
                      "train_loss_1": h1["train_loss"], "train_loss_8": h8["train_loss"],
                      "val_loss_1": h1["val_loss"], "val_loss_8": h8["val_loss"],
                      "seconds_1": t1, "seconds_8": t8, "result_devices": devices,
                      "shards": [list(t) for t in shards], "all_reduce": "all-reduce" in hlo,
                      "epoch_seconds_1": h1["epoch_seconds"], "epoch_seconds_8": h8["epoch_seconds"]}))
""")


def run_script(epochs=3):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(epochs)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_eight_devices_match_one_device():
    out = run_script()
    assert out["max_param_change"] > 1e-2  # training really moved the params
    assert out["max_param_diff"] < 1e-4, out
    for a, b in zip(out["train_loss_1"], out["train_loss_8"]):
        assert abs(a - b) < 1e-4
    for a, b in zip(out["val_loss_1"], out["val_loss_8"]):
        assert abs(a - b) < 1e-4
    assert out["result_devices"] == [0]  # returned params live on one device, ready to use
    assert out["shards"] == [[8, 3]] * 8
    assert out["all_reduce"]


if __name__ == "__main__":  # measurement: python tests/test_multidevice.py EPOCHS
    print(json.dumps(run_script(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
