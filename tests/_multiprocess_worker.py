"""One process of tests/test_multiprocess.py (run as a script, not collected by pytest).

    python tests/_multiprocess_worker.py dist PROCESS_ID NUM_PROCESSES PORT OUT.json CKPT_DIR
    python tests/_multiprocess_worker.py ref OUT.json

``dist``: joins a JAX multi-process run on 127.0.0.1:PORT (two CPU devices per
process, gloo collectives) and fits the same small conditional MAF three ways on a mesh over
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
import time

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
flow = jf.maf(DIM, num_layers=1, hidden=(8,), context_dim=1)  # conditional: rows and context
rng = np.random.default_rng(0)
c = rng.normal(size=(N, 1)).astype(np.float32)
x = (rng.normal(size=(N, DIM)) @ np.array([[1.0, 0.6], [0.0, 0.8]]) + c).astype(np.float32)
p0 = flow.init(jax.random.PRNGKey(0))
opt = optax.adam(1e-2)
EPOCHS = 3
kw = dict(optimizer=opt, batch_size=32, progress=False)
mesh = jax.make_mesh((4,), ("data",))
k_fit, k_split = jax.random.PRNGKey(1), jax.random.PRNGKey(2)


def flat(tree):
    return [float(v) for leaf in jax.tree_util.tree_leaves(tree) for v in np.ravel(leaf)]


out = {"cpu_seconds": {}}
_t = [0.0]  # process_time counts from the start: "start" is the imports


def lap(name):  # CPU seconds of each phase, for the test's timing report
    out["cpu_seconds"][name] = round(time.process_time() - _t[0], 2)
    _t[0] = time.process_time()


lap("start")
# (a) the same full data on every process
pa, ha = jf.fit(flow, p0, x, context=c, key=k_fit, num_epochs=EPOCHS, mesh=mesh, **kw)
out["a"] = {"params": flat(pa), "train_loss": ha["train_loss"], "val_loss": ha["val_loss"]}
lap("a")

# (b) each process holds only its own rows: rows [p*HALF, (p+1)*HALF)
if MODE == "dist":
    mine, mine_c = x[PID * HALF:(PID + 1) * HALF], c[PID * HALF:(PID + 1) * HALF]
    r = process_local_split(mine, mesh, key=k_split, val_fraction=0.2, context=mine_c)
    out["b_shapes"] = [list(r.train.shape), list(r.val.shape)]
    out["b_local_rows"] = sorted(int(s.data.shape[0]) for s in r.train.addressable_shards)
    rows = dict(data=r.train, context=r.train_context, val_data=r.val, val_context=r.val_context)
else:  # the same rows, concatenated in process order, in one process
    idx = [local_split_indices(HALF, 0.2, k_split, p, multiple=2) for p in range(2)]

    def cat(a, j):  # part j (0 train, 1 validation) of every process's rows, in process order
        return np.concatenate([a[p * HALF:(p + 1) * HALF][idx[p][j]] for p in range(2)])

    rows = dict(data=cat(x, 0), context=cat(c, 0), val_data=cat(x, 1), val_context=cat(c, 1))
    out["b_shapes"] = [list(rows["data"].shape), list(rows["val_data"].shape)]
pb, hb = jf.fit(flow, p0, key=k_fit, num_epochs=EPOCHS, mesh=mesh, **rows, **kw)
out["b"] = {"params": flat(pb), "train_loss": hb["train_loss"], "val_loss": hb["val_loss"]}
lap("b")

# (c) the fit of (b), checkpointed by process 0 after one epoch, then resumed by every process
if MODE == "dist":
    ck = dict(key=k_fit, mesh=mesh, checkpoint_dir=CKPT, **kw)
    jf.fit(flow, p0, num_epochs=1, **rows, **ck)
    out["c_files"] = sorted(os.listdir(CKPT))
    pc, hc = jf.fit(flow, p0, num_epochs=EPOCHS, resume=True, **rows, **ck)
    out["c"] = {"params": flat(pc), "train_loss": hc["train_loss"], "val_loss": hc["val_loss"]}
    # (d) other rows on one process: every process refuses to resume (none hangs)
    o = process_local_split(mine[::-1] if PID == 1 else mine, mesh, key=k_split,
                            val_fraction=0.2, context=mine_c)
    try:
        jf.fit(flow, p0, o.train, context=o.train_context, val_data=o.val,
               val_context=o.val_context, num_epochs=EPOCHS, resume=True, **ck)
        out["d"] = "resumed"
    except ValueError as err:
        out["d"] = str(err)
lap("cd")

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
lap("e")

with open(OUT, "w") as f:
    json.dump(out, f)
