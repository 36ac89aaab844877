"""Bad inputs: files, runs and arguments that must not hurt the user.

Each case asserts the exception type and that its message names the file or the
argument; from the command line, one line ``jaxflows: error: ...``, a non-zero
exit and no traceback; nothing the user saved is overwritten.
"""

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows as jf
from jaxflows import checkpoint as ckpt
from jaxflows import cli, cli_common
from jaxflows.data import DataWarning, load_array
from jaxflows.distributions import diag_normal, mixture_of_gaussians, uniform
from jaxflows.train import fit

FLOW = jf.maf(2, num_layers=1, hidden=(4,))
PARAMS = FLOW.init(jax.random.PRNGKey(0))
X = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)


def _raw_checkpoint(path, record):
    """A checkpoint file with a valid header and checksum around any msgpack record."""
    from flax import serialization
    payload = serialization.msgpack_serialize(record)
    blob = ckpt._HEADER.pack(ckpt.MAGIC, ckpt.FORMAT_VERSION, len(payload),
                             hashlib.sha256(payload).digest()) + payload
    with open(path, "wb") as f:
        f.write(blob)
    return str(path)


def _crafted(path, config):
    return _raw_checkpoint(path, {"kind": "model", "config": json.dumps(config),
                                  "params": {"w": np.zeros(3, np.float32)}, "metadata": "{}"})


def _cli_error(argv, capsys):
    """Run the CLI expecting an error: returns its one stderr line."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if not l.startswith("jaxflows: warning:")]
    assert len(lines) == 1 and lines[0].startswith("jaxflows: error: "), err
    return lines[0]


# --------------------------------------------------------------------------
# 1. Files that are not checkpoints, or checkpoints that lie
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    p = tmp_path_factory.mktemp("good") / "model.ckpt"
    ckpt.save(p, FLOW, PARAMS)
    return p.read_bytes()


def _bad_files(d, good):
    """name -> (path, pattern the message must contain)."""
    files = {}

    def put(name, blob, pattern):
        p = d / name
        p.write_bytes(blob)
        files[name] = (p, pattern)

    put("truncated.ckpt", good[: len(good) // 2], "truncated")
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    put("flipped.ckpt", bytes(flipped), "checksum")
    put("random.ckpt", np.random.default_rng(0).bytes(4096), "not a jaxflows checkpoint")
    put("pickle.ckpt", pickle.dumps({"params": 1}), "not a jaxflows checkpoint")
    put("empty.ckpt", b"", "not a jaxflows checkpoint")
    newer = bytearray(good)
    struct.pack_into("<I", newer, 8, ckpt.FORMAT_VERSION + 1)
    put("newer.ckpt", bytes(newer), "newer")
    longer = bytearray(good)  # the header announces more payload than the file holds
    struct.pack_into("<Q", longer, 12, 1 << 60)
    put("claims_more.ckpt", bytes(longer), "truncated")
    put("trailing.ckpt", good + b"x" * 100, "unexpected bytes")
    _crafted(d / "layers.ckpt", {"factory": "maf", "kwargs": {"dim": 2, "num_layers": int(1e9)}})
    files["layers.ckpt"] = (d / "layers.ckpt", "num_layers")
    big = {"factory": "maf", "kwargs": {"dim": 100_000, "num_layers": 1000, "hidden": [100_000]}}
    _crafted(d / "too_big.ckpt", big)
    files["too_big.ckpt"] = (d / "too_big.ckpt", "parameters")
    # within the global bound, but far more parameters than the small file can hold
    beyond = {"factory": "maf", "kwargs": {"dim": 1000, "num_layers": 100, "hidden": [1000]}}
    _crafted(d / "beyond_file.ckpt", beyond)
    files["beyond_file.ckpt"] = (d / "beyond_file.ckpt", "parameters")
    # a config nested 100000 deep (json.loads alone would raise RecursionError)
    _raw_checkpoint(d / "deep_config.ckpt", {"kind": "model", "config": "[" * 100_000 + "]" * 100_000,
                                              "params": {}, "metadata": "{}"})
    files["deep_config.ckpt"] = (d / "deep_config.ckpt", "nested")
    # a msgpack payload nested 100000 maps deep (written byte by byte: no writer nests so deep)
    import msgpack
    payload = b"\x83" + b"".join(msgpack.packb(v) for v in ("kind", "model", "config", "null",
                                                             "params"))
    payload += b"\x81\xa1a" * 100_000 + b"\xc0"
    put("deep_payload.ckpt", ckpt._HEADER.pack(ckpt.MAGIC, ckpt.FORMAT_VERSION, len(payload),
                                               hashlib.sha256(payload).digest()) + payload,
        "nested deeper than any checkpoint")
    _crafted(d / "unknown_arg.ckpt", {"factory": "maf", "kwargs": {"dim": 2, "frobnicate": 1}})
    files["unknown_arg.ckpt"] = (d / "unknown_arg.ckpt", "frobnicate")
    _crafted(d / "bad_base.ckpt", {"factory": "maf", "kwargs": {
        "dim": 2, "base": {"name": "mog", "kwargs": {"num_components": 10 ** 12}}}})
    files["bad_base.ckpt"] = (d / "bad_base.ckpt", "num_components")
    _crafted(d / "bool_dim.ckpt", {"factory": "maf", "kwargs": {"dim": True}})
    files["bool_dim.ckpt"] = (d / "bool_dim.ckpt", "dim")
    files["directory"] = (d, "directory")
    return files


def test_bad_files_give_a_checkpoint_error_naming_the_file(tmp_path, good, capsys):
    files = _bad_files(tmp_path, good)
    import re
    for name, (path, pattern) in files.items():
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load(path)
        msg = str(info.value)
        assert str(path) in msg and re.search(pattern, msg), (name, msg)
        assert "\n" not in msg
        # and from the command line: one line, exit 1, no traceback
        line = _cli_error(["info", path], capsys)
        assert str(path) in line and re.search(pattern, line), (name, line)


def test_missing_file_and_devices(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt' does not exist"):
        ckpt.load(tmp_path / "nope.ckpt")
    with pytest.raises(ckpt.CheckpointError, match=r"/dev/zero' is not a regular file"):
        ckpt.load("/dev/zero")


def test_a_huge_foreign_file_is_never_read_whole(tmp_path):
    big = tmp_path / "video.mp4.ckpt"
    with open(big, "wb") as f:  # 64 GB, sparse: only the header is read
        f.truncate(64 << 30)
    with pytest.raises(ckpt.CheckpointError, match="not a jaxflows checkpoint"):
        ckpt.load(big)


def test_crafted_files_load_within_a_memory_limit(tmp_path, good):
    """Under an address-space limit of what the interpreter already uses plus 300 MB,
    every crafted file (10^9 layers, a config describing 10^13 parameters, deep
    nesting, a 64 GB sparse file, /dev/zero) gives CheckpointError, not MemoryError."""
    files = _bad_files(tmp_path, good)
    big = tmp_path / "sparse.ckpt"
    with open(big, "wb") as f:
        f.truncate(64 << 30)
    paths = [str(p) for p, _ in files.values()] + [str(big), "/dev/zero"]
    ok = tmp_path / "good.ckpt"  # control: a real checkpoint still loads under the limit
    ok.write_bytes(good)
    script = textwrap.dedent("""
        import json, resource, sys
        import jax, jaxflows
        from jaxflows import checkpoint
        # start JAX's runtime (threads, compiler) before the limit: only loading is measured
        warm = jaxflows.maf(2, num_layers=1, hidden=(4,))
        jax.eval_shape(warm.init, jax.random.PRNGKey(0))
        jax.jit(lambda a: a + 1)(1.0).block_until_ready()
        def vm_bytes():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        limit = vm_bytes() + 300 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out = {}
        for p in json.loads(sys.argv[1]):
            try:
                checkpoint.load(p)
                out[p] = "loaded"
            except checkpoint.CheckpointError:
                out[p] = "CheckpointError"
            except BaseException as err:
                out[p] = type(err).__name__
        try:  # control: the limit does bite (what num_layers=10**9 once built)
            from jaxflows.flows import layer_orders
            layer_orders(2, 10**9)
            out["control"] = "allocated"
        except MemoryError:
            out["control"] = "MemoryError"
        print(json.dumps(out))
    """)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc (Linux) to measure the interpreter's address space")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(paths + [str(ok)])],
                       capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {**{p: "CheckpointError" for p in paths}, str(ok): "loaded",
                      "control": "MemoryError"}


# --------------------------------------------------------------------------
# 3. Configs rebuild every factory, with every base and option
# --------------------------------------------------------------------------

BASES = ["normal", "diag_normal", "mog", lambda d: mixture_of_gaussians(d, 3, init_spread=0.5),
         lambda d: diag_normal(d), lambda d: uniform([-4.0] * d, [4.0] * d)]
OPTIONS = {
    "maf": [dict(permutation="random", permutation_seed=3, residual=True, hidden=(4, 4)),
            dict(batch_norm=True, method="scan", context_dim=2, activation="tanh")],
    "iaf": [dict(permutation="none", min_scale=1e-2), dict(batch_norm=True, context_dim=1)],
    "realnvp": [dict(mask="half", activation="elu"), dict(batch_norm=True, context_dim=2)],
    "nsf": [dict(num_bins=4, bound=2.5, residual=True),
            dict(coupling_layers=True, mask="half", batch_norm=True, context_dim=2)],
}


@pytest.mark.parametrize("factory", sorted(OPTIONS))
def test_every_factory_base_and_option_rebuilds_from_its_config(factory):
    make = jf.FACTORIES[factory]
    for base in BASES:
        for opts in [{}] + OPTIONS[factory]:
            opts = dict(opts)
            b = base(3) if callable(base) else base
            flow = make(3, num_layers=2, hidden=opts.pop("hidden", (4,)), base=b, **opts)
            assert flow.config is not None, (factory, base, opts)
            json.dumps(flow.config)  # plain JSON
            rebuilt = jf.from_config(json.loads(json.dumps(flow.config)))
            assert rebuilt.config == flow.config
            t1 = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
            t2 = jax.eval_shape(rebuilt.init, jax.random.PRNGKey(0))
            assert jax.tree_util.tree_structure(t1) == jax.tree_util.tree_structure(t2)
            assert [a.shape for a in jax.tree_util.tree_leaves(t1)] == \
                   [a.shape for a in jax.tree_util.tree_leaves(t2)]


def test_a_mog_base_maf_survives_a_checkpoint(tmp_path):
    flow = jf.maf(2, num_layers=2, hidden=(4,), base=mixture_of_gaussians(2, 4))
    params = flow.init(jax.random.PRNGKey(1))
    c = ckpt.load(ckpt.save(tmp_path / "m.ckpt", flow, params))
    assert c.flow is not None and c.config == flow.config
    x = jnp.array([[0.3, -1.0], [2.0, 0.5]])
    np.testing.assert_array_equal(c.flow.log_prob(c.params, x), flow.log_prob(params, x))


def test_a_flow_without_config_says_so_at_save(tmp_path, capsys):
    hand = jf.transformed(FLOW.bijector, "normal", dim=2)
    with pytest.warns(UserWarning, match=r"h\.ckpt.*without a flow config.*load\(path, flow="):
        ckpt.save(tmp_path / "h.ckpt", hand, PARAMS)
    assert ckpt.load(tmp_path / "h.ckpt", flow=hand).flow is hand
    line = _cli_error(["sample", tmp_path / "h.ckpt"], capsys)
    assert "stores no flow config" in line


# --------------------------------------------------------------------------
# 4. save checks that the params fit the flow
# --------------------------------------------------------------------------

def test_save_refuses_params_that_do_not_fit(tmp_path):
    p = tmp_path / "x.ckpt"
    ensemble = jax.vmap(FLOW.init)(jax.random.split(jax.random.PRNGKey(0), 4))
    with pytest.raises(ValueError, match=r"extra leading axis of 4.*ensemble"):
        ckpt.save(p, FLOW, ensemble)
    other = jf.maf(2, num_layers=1, hidden=(5,)).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"params do not fit the flow: leaf params.*shape"):
        ckpt.save(p, FLOW, other)
    with pytest.raises(ValueError, match="params do not fit the flow: their structure"):
        ckpt.save(p, FLOW, {"w": np.zeros(3)})
    assert not p.exists()  # nothing written


# --------------------------------------------------------------------------
# 5. Output files
# --------------------------------------------------------------------------

def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.ckpt.{dead.pid}.abc123.tmp"   # its writer was killed
    stale.write_bytes(b"half a checkpoint")
    old = tmp_path / ".m.ckpt.zz9_old.tmp"               # no pid, a day and more old
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    live = tmp_path / f".m.ckpt.{os.getppid()}.def456.tmp"  # a living writer's: kept
    live.write_bytes(b"in progress")
    other = tmp_path / f".other.ckpt.{dead.pid}.x.tmp"   # another file's: not ours to judge
    other.write_bytes(b"x")
    ckpt.save(tmp_path / "m.ckpt", FLOW, PARAMS)
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["m.ckpt", live.name, other.name]), left


def test_directory_lock_refuses_a_second_holder(tmp_path):
    with ckpt.directory_lock(tmp_path / "run", "a test"):
        with pytest.raises(ckpt.DirectoryLocked, match=rf"{tmp_path}/run' is in use by another fit "
                                                       rf"\(process {os.getpid()}\)"):
            fit(FLOW, PARAMS, X, key=jax.random.PRNGKey(0),
                num_epochs=1, progress=False, checkpoint_dir=tmp_path / "run")
    # released: a holder that exits (even killed) leaves no stale lock
    with ckpt.directory_lock(tmp_path / "run"):
        pass


def test_write_json_is_strict_with_null(tmp_path):
    p = cli_common.write_json(str(tmp_path / "m.json"), {"a": float("nan"), "b": [1.0, -float("inf")],
                                                   "c": {"d": float("inf"), "e": 2}})

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    assert json.loads(open(p).read(), parse_constant=refuse) == \
        {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2}}


# --------------------------------------------------------------------------
# 6. Ill-posed data
# --------------------------------------------------------------------------

def test_numeric_header_is_detected_and_can_be_forced(tmp_path):
    p = tmp_path / "pandas.csv"
    p.write_text("0,1,2\n0.5,1.5,2.5\n3.25,4.5,5.75\n")
    with pytest.warns(DataWarning, match=r"pandas\.csv.*first row \(0, 1, 2\) numbers the columns"):
        assert load_array(p).shape == (2, 3)
    assert load_array(p, header=False).shape == (3, 3)
    q = tmp_path / "plain.csv"  # integers that do not number the columns: data
    q.write_text("3,1,2\n0.5,1.5,2.5\n")
    assert load_array(q).shape == (2, 3)
    assert load_array(q, header=True).shape == (1, 3)


def test_outlier_warning_names_column_and_row(capsys):
    x = np.random.default_rng(0).normal(size=(200, 3))
    x[17, 1] = 1e30
    cli_common.warn_outliers("d.csv", x, ["a", "b", "c"], False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "column 'b'" in err[0] and "data row 17" in err[0] and "1e+30" in err[0]
    cli_common.warn_outliers("d.csv", np.random.default_rng(1).standard_t(2, size=(500, 3)), None, False)
    assert capsys.readouterr().err == ""  # heavy tails are not outliers


# --------------------------------------------------------------------------
# 7. fit's arguments, and its final check
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=-5), r"batch_size must be an integer >= 1, got -5"),
    (dict(batch_size=2.5), r"batch_size must be an integer"),
    (dict(num_epochs=-1), r"num_epochs must be an integer >= 0, got -1"),
    (dict(max_bad_steps=0), r"max_bad_steps must be an integer >= 1, got 0"),
    (dict(learning_rate=1e-3), r"unexpected keyword argument 'learning_rate'"),
    (dict(max_bad_steps=True), r"max_bad_steps must be an integer >= 1, got True"),
    (dict(val_data=np.zeros((0, 2), np.float32)), r"val_data has no rows"),
    (dict(data=np.zeros((0, 2), np.float32)), r"data has no rows"),
    (dict(run_settings={"f": object()}), r"run_settings must hold JSON data"),
])
def test_fit_argument_checks_name_the_argument(kwargs, pattern):
    data = kwargs.pop("data", X)
    with pytest.raises((ValueError, TypeError), match=pattern):
        fit(FLOW, PARAMS, data, key=jax.random.PRNGKey(0), progress=False, **kwargs)


def test_sample_shape_must_be_non_negative():
    with pytest.raises(ValueError, match=r"sample_shape must hold non-negative ints, got \(-1,\)"):
        FLOW.sample(PARAMS, jax.random.PRNGKey(0), (-1,))


def test_fit_checks_that_the_final_flow_samples_finite_values():
    """A loss that stays finite while the flow breaks: the base's log-scale is pushed
    up without bound, so every sample overflows; fit says so instead of returning it."""
    flow = jf.maf(2, num_layers=1, hidden=(4,), base="diag_normal")
    params = flow.init(jax.random.PRNGKey(0))

    def loss(p, x, c=None):
        return -jnp.sum(p["base"]["log_scale"]) + 0.0 * jnp.mean(x)

    with pytest.raises(jf.TrainingDiverged, match=r"64 of 64 samples .* NaN or Inf.*loss stayed finite") as info:
        fit(flow, params, X, key=jax.random.PRNGKey(1), loss_fn=loss, num_epochs=2, batch_size=8,
            optimizer=optax.sgd(20.0), val_fraction=0.0, progress=False)
    assert info.value.params is not None and len(info.value.history["train_loss"]) == 2
    assert (info.value.epoch, info.value.step, info.value.bad_steps) == (1, None, 0)


# --------------------------------------------------------------------------
# 2. Resume continues only the same run (library)
# --------------------------------------------------------------------------

def test_resume_refuses_another_run_naming_what_differs(tmp_path):
    d = tmp_path / "state"
    common = dict(key=jax.random.PRNGKey(1), batch_size=16, progress=False, checkpoint_dir=d)
    fit(FLOW, PARAMS, X, num_epochs=1, **common)
    before = (d / "train_state.ckpt").read_bytes()
    other_flow = jf.maf(2, num_layers=2, hidden=(4,))
    cases = [
        (dict(optimizer=optax.adam(0.5)), r"default_adam_learning_rate: checkpoint 0\.001, now "
                                          r"absent.*default optimizer, optax\.adam\(1e-3\): resume "
                                          r"without optimizer="),
        (dict(data=X + 1.0), r"data contents \(SHA-256\): checkpoint [0-9a-f]+, now [0-9a-f]+"),
        (dict(flow=other_flow), r"flow\.kwargs\.num_layers: checkpoint 1, now 2"),
        (dict(run_settings={"--lr": 0.5}), r"--lr: checkpoint absent, now 0\.5"),
        (dict(optimizer=optax.sgd(0.1)), r"optimizer\.state_structure"),
    ]
    for change, pattern in cases:
        flow = change.pop("flow", FLOW)
        data = change.pop("data", X)
        with pytest.raises(ValueError, match=r"train_state\.ckpt' was written by a different run.*"
                                             + pattern):
            fit(flow, flow.init(jax.random.PRNGKey(0)), data, num_epochs=2, resume=True,
                **common, **change)
    assert (d / "train_state.ckpt").read_bytes() == before  # untouched
    with pytest.warns(UserWarning, match=r"holds a finished fit: it ran 1 epochs and num_epochs is 1"):
        fit(FLOW, PARAMS, X, num_epochs=1, resume=True, **common)


# --------------------------------------------------------------------------
# 2 and 5 from the command line
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny CLI fit whose last test row is made to score -inf."""
    d = tmp_path_factory.mktemp("clirun")
    rng = np.random.default_rng(0)
    csv = d / "data.csv"
    with open(csv, "w") as f:
        f.write("0,1\n")  # a numeric header numbering the columns
        for row in rng.normal(size=(60, 2)):
            f.write(f"{row[0]:.6f},{row[1]:.6f}\n")
    out = d / "run"
    real_score = cli_common.score_rows

    def score(flow, params, x):
        ll = real_score(flow, params, x)
        if len(x) == 6:  # the test split: its last row gets zero density
            ll = ll.copy()
            ll[-1] = -np.inf
        return ll

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_common, "score_rows", score)
        code = cli.main(["fit", str(csv), "--layers", "1", "--hidden", "4", "--epochs", "1",
                         "--batch-size", "16", "--out", str(out), "--no-plot", "--no-progress"])
    return d, csv, out, code


def test_cli_non_finite_test_likelihood_strict_json_and_message(run, capsys):
    d, csv, out, code = run
    assert code == 1
    m = json.loads((out / "metrics.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    assert m["test"]["log_likelihood_nats"] is None
    assert m["train"]["log_likelihood_nats"] is not None
    assert m["rows"] == 60  # the numeric header was not read as a row
    assert (out / "model.ckpt").exists()


def test_cli_non_finite_message_is_one_line(tmp_path, capsys, monkeypatch, run):
    d, csv, out, _ = run
    real_score = cli_common.score_rows
    monkeypatch.setattr(cli_common, "score_rows", lambda f, p, x: np.full(len(x), -np.inf)
                        if len(x) == 6 else real_score(f, p, x))
    line = _cli_error(["fit", csv, "--layers", "1", "--hidden", "4", "--epochs", "1",
                       "--batch-size", "16", "--out", tmp_path / "r", "--no-plot",
                       "--no-progress"], capsys)
    assert "test log-likelihood is not finite (6 of 6 test rows" in line and "null" in line


def test_cli_resume_names_the_flag_and_says_when_finished(run, capsys):
    d, csv, out, _ = run
    base = ["fit", csv, "--layers", "1", "--hidden", "4", "--epochs", "1", "--batch-size", "16",
            "--out", out, "--no-plot", "--no-progress", "--resume"]
    before = (out / "train_state" / "train_state.ckpt").read_bytes()
    line = _cli_error(base[:3] + ["2"] + base[4:], capsys)
    assert "--layers: checkpoint 1, now 2" in line
    line = _cli_error(base + ["--lr", "0.5"], capsys)
    assert "--lr: checkpoint 0.001, now 0.5" in line
    other = d / "other.csv"  # same shape, other values
    lines = csv.read_text().splitlines()
    other.write_text("\n".join(lines[:1] + [l.replace("1", "2") for l in lines[1:]]) + "\n")
    line = _cli_error(["fit", other] + base[2:], capsys)
    assert "data contents (SHA-256)" in line
    assert (out / "train_state" / "train_state.ckpt").read_bytes() == before
    cli.main([str(a) for a in base])
    err = capsys.readouterr().err
    assert "holds a finished fit" in err


def test_cli_refuses_train_state_for_sample_and_score(run, capsys):
    d, csv, out, _ = run
    state = out / "train_state" / "train_state.ckpt"
    for argv in (["sample", state], ["score", state, csv]):
        line = _cli_error(argv, capsys)
        assert "training state" in line and str(out / "model.ckpt") in line


def test_cli_out_name_is_kept_exactly(run, capsys, tmp_path):
    d, csv, out, _ = run
    target = tmp_path / "S.NPY"
    keep = tmp_path / "keep.npy"
    np.save(keep, np.arange(3))
    assert cli.main(["sample", str(out / "model.ckpt"), "-n", "5", "--out", str(target)]) == 0
    assert "S.NPY" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["S.NPY", "keep.npy"]
    assert np.load(target).shape == (5, 2)
    # a failing command leaves an existing output as it was
    line = _cli_error(["sample", out / "train_state" / "train_state.ckpt", "--out", keep], capsys)
    np.testing.assert_array_equal(np.load(keep), np.arange(3))
    assert line


def test_cli_fit_lock_and_header_flags(run, capsys):
    d, csv, out, _ = run
    with ckpt.directory_lock(out, "a test"):
        line = _cli_error(["fit", csv, "--out", out, "--no-plot", "--no-progress"], capsys)
    assert f"'{out}' is in use by" in line and "choose another output directory" in line
    line = _cli_error(["fit", d / "missing.csv", "--out", d / "never"], capsys)
    assert not (d / "never").exists()  # a failed fit leaves no empty output directory
    for flag, rows in (("--no-header", 61), ("--header", 60)):
        args = cli.build_parser().parse_args(["fit", str(csv), flag])
        x, names = cli_common.load_data(str(csv), args)
        assert x.shape == (rows, 2)
    np.save(d / "x.npy", np.zeros((20, 2)))
    line = _cli_error(["fit", d / "x.npy", "--header", "--out", d / "nh"], capsys)
    assert "x.npy" in line and "header only apply to text files" in line
