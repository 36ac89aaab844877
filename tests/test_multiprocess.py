"""Training across processes with JAX's multi-process runtime, on this one machine.

Two processes on 127.0.0.1 (two CPU devices each, gloo collectives) train on a
mesh over the four global devices; a third process with four CPU devices is the
single-process reference. They run at once, each a script
(tests/_multiprocess_worker.py), because the runtime and the device count are
fixed when JAX starts. Checked:

(a) every process passes the same data: params equal the 4-device run;
(b) each process passes only its own half of the rows
    (``jaxflows.distributed.process_local_split``): params and losses equal the
    single-process fit on the concatenated rows (same batches: the shuffle is a
    permutation of the global row order, gathered across processes on device);
(c) the fit of (b), checkpointed by process 0 after one epoch and resumed by
    both processes, ends where the uninterrupted run does;
(d) a resume where one process passes other rows is refused by every process;
(e) ``jaxflows fit`` with ``--coordinator/--num-processes/--process-id`` on both
    processes writes (from process 0) the model the one-process command writes.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxflows import distributed

WORKER = os.path.join(os.path.dirname(__file__), "_multiprocess_worker.py")
TIMEOUT = 480  # seconds, for all three together (about 20 CPU-seconds each; 2 busy cores can be slow)
TOL = 1e-6  # observed: 1.5e-8 (a), 7.5e-9 (b, c), 6e-10 (e); float32 summation order differs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, devices: int, log_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env), log


def _run_all(tmp_path):
    port = str(_free_port())
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    outs = [tmp_path / f"out{i}.json" for i in range(2)] + [tmp_path / "ref.json"]
    logs = [tmp_path / f"log{i}.txt" for i in range(3)]
    procs = [_start(["dist", str(i), "2", port, str(outs[i]), str(ckpt)], 2, logs[i])
             for i in range(2)]
    procs.append(_start(["ref", str(outs[2])], 4, logs[2]))
    names = ["process 0", "process 1", "single-process reference"]
    deadline = time.monotonic() + TIMEOUT
    failure = None
    try:
        while any(p.poll() is None for p, _ in procs):
            bad = [i for i, (p, _) in enumerate(procs) if p.poll() not in (None, 0)]
            if bad:
                failure = f"{names[bad[0]]} exited with status {procs[bad[0]][0].returncode}"
                break
            if time.monotonic() > deadline:
                failure = f"timed out after {TIMEOUT} s"
                break
            time.sleep(0.2)
        bad = [i for i, (p, _) in enumerate(procs) if p.poll() not in (None, 0)]
        if failure is None and bad:
            failure = f"{names[bad[0]]} exited with status {procs[bad[0]][0].returncode}"
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
    if failure is not None:
        tails = "\n".join(f"--- {n} (last lines) ---\n" + "\n".join(
            line for line in path.read_text().splitlines() if "[Gloo]" not in line)[-3000:]
            for n, path in zip(names, logs))
        pytest.fail(f"{failure}\n{tails}")
    return [json.loads(path.read_text()) for path in outs]


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    p0, p1, ref = _run_all(tmp_path)
    for out in (p0, p1):
        # (a) same full data on every process == one process with four devices
        assert _max_diff(out["a"]["params"], ref["a"]["params"]) < TOL
        assert _max_diff(out["a"]["val_loss"], ref["a"]["val_loss"]) < TOL
        # (b) each process its own rows == one process on the concatenated rows
        assert out["b_shapes"] == ref["b_shapes"] == [[128, 2], [32, 2]]
        assert out["b_local_rows"] == [32, 32]  # this process's devices hold only its 64 rows
        assert _max_diff(out["b"]["params"], ref["b"]["params"]) < TOL
        assert _max_diff(out["b"]["train_loss"], ref["b"]["train_loss"]) < TOL
        assert _max_diff(out["b"]["val_loss"], ref["b"]["val_loss"]) < TOL
        # (c) written by process 0 after epoch 1, resumed by both: same end as (b)
        assert "train_state.ckpt" in out["c_files"]
        assert _max_diff(out["c"]["params"], ref["b"]["params"]) < TOL
        assert _max_diff(out["c"]["val_loss"], ref["b"]["val_loss"]) < TOL
        # (d) process 1 passes other rows: both refuse to resume, naming the data
        assert "different run" in out["d"] and "data contents" in out["d"], out["d"]
    # (e) `jaxflows fit --coordinator ... --num-processes 2 --process-id I`: process 0 wrote
    # the model, equal to the one-process command's
    assert p0["e_status"] == p1["e_status"] == ref["e_status"] == 0
    assert "e" not in p1  # only process 0 prints and writes
    assert "fitting maf" in (tmp_path / "log0.txt").read_text()
    assert "fitting maf" not in (tmp_path / "log1.txt").read_text()
    assert _max_diff(p0["e"], ref["e"]) < TOL
    # the comparisons mean something: training moved the params, and the two data
    # layouts (a) and (b) train on different rows
    assert _max_diff(ref["a"]["params"], ref["b"]["params"]) > 1e-2
    assert len(ref["a"]["val_loss"]) == 3


# ---- single-process checks of jaxflows.distributed (no subprocess) ----------------------

def test_local_split_indices_deterministic_disjoint_and_per_process():
    key = jax.random.PRNGKey(3)
    tr, va = distributed.local_split_indices(50, 0.25, key, 0, multiple=4)
    assert len(va) % 4 == 0 and len(tr) + len(va) == 50 and len(va) == 12
    assert not set(tr) & set(va)
    again = distributed.local_split_indices(50, 0.25, key, 0, multiple=4)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va), again))
    other = distributed.local_split_indices(50, 0.25, key, 1, multiple=4)
    assert not np.array_equal(va, other[1])  # each process draws its own split
    with pytest.raises(ValueError, match="val_fraction"):
        distributed.local_split_indices(50, 0.0, key, 0)
    with pytest.raises(ValueError, match="multiple of 4"):
        distributed.local_split_indices(7, 0.5, key, 0, multiple=4)


def test_process_local_rows_with_one_process_is_the_rows_on_the_mesh():
    mesh = jax.make_mesh((1,), ("data",))
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    g = distributed.process_local_rows(x, mesh)
    assert g.shape == (6, 2) and np.array_equal(np.asarray(g), x)
    r = distributed.process_local_split(x, mesh, key=jax.random.PRNGKey(0), val_fraction=0.5)
    assert r.train.shape == (3, 2) and r.val.shape == (3, 2) and r.train_context is None
    assert sorted(np.concatenate([np.asarray(r.train), np.asarray(r.val)])[:, 0]) == list(x[:, 0])
    with pytest.raises(ValueError, match="rows must have shape"):
        distributed.process_local_split(x[:, 0], mesh, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="axis named 'data'"):
        distributed.process_local_rows(x, jax.make_mesh((1,), ("batch",)))


@pytest.mark.parametrize("kwargs, match", [
    ({"coordinator": "nohost"}, "HOST:PORT"),
    ({"coordinator": "h:99999"}, "HOST:PORT"),
    ({"coordinator": "h:1", "num_processes": 0}, "num_processes"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"0 \.\.\. 1"),
])
def test_initialize_refuses_bad_arguments_before_starting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_initialize_reads_bad_environment_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        distributed.initialize("h:1")


@pytest.mark.parametrize("flags, match", [
    (["--coordinator", "nohost"], "HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], r"0 \.\.\. 1"),
])
def test_cli_refuses_bad_process_flags_before_starting(tmp_path, capsys, flags, match):
    from jaxflows import cli
    status = cli.main(["fit", "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert status == 1 and re.search(match, err) and "Traceback" not in err
    assert not (tmp_path / "run").exists()
