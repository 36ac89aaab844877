"""One process of tests/test_multiprocess.py (run as a script, not collected by pytest).

    python tests/_multiprocess_worker.py dist PROCESS_ID NUM_PROCESSES PORT OUT.json CKPT_DIR
    python tests/_multiprocess_worker.py ref OUT.json

``dist``: joins a JAX multi-process run on 127.0.0.1:PORT (two CPU devices per
process, gloo collectives) and fits the same small MAF three ways on a mesh over
all processes' devices: (a) every process passes the same full data; (b) each
process passes only its own half of the rows (``jaxflows.distributed``); (c) as
(b) but stopped after one epoch with a checkpoint and resumed to the end; (d) a
resume with other rows on process 1, which every process must refuse; (e) the
command line, ``jaxflows fit`` with ``--coordinator/--num-processes/--process-id``.
``ref``: one process with four CPU devices runs (a), the single-process
equivalent of (b) (the same fit on the concatenation of the processes' rows) and
(e) without the flags.
Each writes its final params and histories as JSON.
"""

import json
import os
import sys

MODE = sys.argv[1]
if MODE == "dist":
    PID, NPROC, PORT, OUT, CKPT = (int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
                                   sys.argv[6])
else:
    PID, NPROC, OUT = 0, 1, sys.argv[2]

import jax  # noqa: E402

if MODE == "dist":
    from jaxflows import distributed  # noqa: E402
    distributed.initialize(f"127.0.0.1:{PORT}", NPROC, PID)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxflows as jf  # noqa: E402
from jaxflows.distributed import local_split_indices, process_local_split  # noqa: E402

assert jax.device_count() == 4 and jax.process_count() == NPROC, (jax.devices(), NPROC)
DIM, N, HALF = 2, 160, 80
flow = jf.maf(DIM, num_layers=1, hidden=(8,))
rng = np.random.default_rng(0)
x = (rng.normal(size=(N, DIM)) @ np.array([[1.0, 0.6], [0.0, 0.8]])).astype(np.float32)
p0 = flow.init(jax.random.PRNGKey(0))
opt = optax.adam(1e-2)
EPOCHS = 3
kw = dict(optimizer=opt, batch_size=32, progress=False)
mesh = jax.make_mesh((4,), ("data",))
k_fit, k_split = jax.random.PRNGKey(1), jax.random.PRNGKey(2)


def flat(tree):
    return [float(v) for leaf in jax.tree_util.tree_leaves(tree) for v in np.ravel(leaf)]


out = {}
# (a) the same full data on every process
pa, ha = jf.fit(flow, p0, x, key=k_fit, num_epochs=EPOCHS, mesh=mesh, **kw)
out["a"] = {"params": flat(pa), "train_loss": ha["train_loss"], "val_loss": ha["val_loss"]}

# (b) each process holds only its own rows: rows [p*HALF, (p+1)*HALF)
if MODE == "dist":
    mine = x[PID * HALF:(PID + 1) * HALF]
    r = process_local_split(mine, mesh, key=k_split, val_fraction=0.2)
    out["b_shapes"] = [list(r.train.shape), list(r.val.shape)]
    out["b_local_rows"] = sorted(int(s.data.shape[0]) for s in r.train.addressable_shards)
    train, val = r.train, r.val
else:  # the same rows, concatenated in process order, in one process
    parts = [x[p * HALF:(p + 1) * HALF] for p in range(2)]
    idx = [local_split_indices(HALF, 0.2, k_split, p, multiple=2) for p in range(2)]
    train = np.concatenate([a[tr] for a, (tr, _) in zip(parts, idx)])
    val = np.concatenate([a[va] for a, (_, va) in zip(parts, idx)])
    out["b_shapes"] = [list(train.shape), list(val.shape)]
pb, hb = jf.fit(flow, p0, train, val_data=val, key=k_fit, num_epochs=EPOCHS, mesh=mesh, **kw)
out["b"] = {"params": flat(pb), "train_loss": hb["train_loss"], "val_loss": hb["val_loss"]}

# (c) the fit of (b), checkpointed by process 0 after one epoch, then resumed by every process
if MODE == "dist":
    ck = dict(val_data=val, key=k_fit, mesh=mesh, checkpoint_dir=CKPT, **kw)
    jf.fit(flow, p0, train, num_epochs=1, **ck)
    out["c_files"] = sorted(os.listdir(CKPT))
    pc, hc = jf.fit(flow, p0, train, num_epochs=EPOCHS, resume=True, **ck)
    out["c"] = {"params": flat(pc), "train_loss": hc["train_loss"], "val_loss": hc["val_loss"]}
    # (d) other rows on one process: every process refuses to resume (none hangs)
    other = process_local_split(mine[::-1] if PID == 1 else mine, mesh, key=k_split,
                                val_fraction=0.2)
    try:
        jf.fit(flow, p0, other.train, num_epochs=EPOCHS, resume=True,
               **dict(ck, val_data=other.val))
        out["d"] = "resumed"
    except ValueError as err:
        out["d"] = str(err)

# (e) the command line, `jaxflows fit` with the multi-process flags (process 0 writes OUT)
from jaxflows import checkpoint, cli  # noqa: E402

data_file = os.path.join(os.path.dirname(OUT), f"rows{PID}.npy")
np.save(data_file, x)
run_dir = os.path.join(os.path.dirname(OUT), "cli-" + MODE)
argv = ["fit", data_file, "--layers", "1", "--hidden", "8", "--epochs", "2", "--batch-size",
        "16", "--out", run_dir, "--no-plot", "--no-progress"]
if MODE == "dist":
    argv += ["--coordinator", f"127.0.0.1:{PORT}", "--num-processes", "2", "--process-id",
             str(PID)]
out["e_status"] = cli.main(argv)
if PID == 0:
    out["e"] = flat(checkpoint.load(os.path.join(run_dir, "model.ckpt")).params)

with open(OUT, "w") as f:
    json.dump(out, f)
