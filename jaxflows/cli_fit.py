"""``jaxflows fit``: read the data, split and standardise it, train, and write
``model.ckpt``, ``metrics.json`` and ``report.png`` (see :mod:`jaxflows.cli`)."""

from __future__ import annotations

import math
import os
import sys
import time

from . import cli_common as common
from .cli_common import METRICS_FILE, MODEL_FILE, REPORT_FILE

__all__ = ["cmd_fit", "fit_locked"]


def cmd_fit(args, out=None) -> int:
    out = sys.stdout if out is None else out
    import jax
    from .models import FACTORIES
    from .standardizing import standardize

    if not args.no_plot:  # report.png needs matplotlib: say so before training, not after
        from .report import require_matplotlib
        require_matplotlib(" (or pass --no-plot)")
    x, columns, source = _read_rows(args)
    train, val, test = _split_rows(args, x, columns, source)
    n, dim = x.shape
    # the standardisation (the training rows' mean and standard deviation) is a fixed affine
    # map inside the flow: fit, scores, samples and the checkpoint all work in data units
    flow = standardize(FACTORIES[args.flow](dim, num_layers=args.layers,
                                            hidden=tuple(args.hidden)), train)
    k_init, k_fit, _ = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    params = flow.init(k_init)
    from .report import image_shape_option
    image_shape = image_shape_option(args.image_shape, dim, source)
    batch_size, batch_note = _batch_size(len(train), args.batch_size)
    os.makedirs(args.out, exist_ok=True)
    print(f"fitting {args.flow} ({args.layers} layers, hidden {args.hidden}) to {source}: "
          f"{n} rows x {dim} dims (train {len(train)}, validation {len(val)}, test {len(test)})",
          file=out, flush=True)
    print(batch_note, file=out, flush=True)
    trained = _train(args, flow, params, k_fit, train, val, batch_size, columns, out)
    if isinstance(trained, int):  # interrupted: the exit status
        return trained
    params, history, train_seconds = trained
    metrics, scores, samples = _evaluate(flow, params, {"train": train, "validation": val, "test": test},
                                         args.seed)
    metrics.update({
        "data": source, "rows": int(n), "dim": int(dim), "flow": flow.config,
        "epochs_run": history["num_epochs_run"], "best_epoch": history["best_epoch"],
        "stopped_early": history["stopped_early"], "train_seconds": train_seconds,
        "batch_size": batch_size, "columns": columns,
        "history": {k: history[k] for k in ("train_loss", "val_loss", "epoch_seconds",
                                            "skipped_steps")},
        "units": "log-likelihood in nats per example in the data's own units "
                 "(standardisation's log-Jacobian included); bits/dim = -LL / (dim ln 2)",
    })
    written = _write_outputs(args, flow, params, metrics, history, test, samples, image_shape)
    return _print_summary(args, metrics, history, scores["test"], written, out)


def _read_rows(args):
    """``(rows as float64, column names or None, where they came from)``."""
    import numpy as np
    from .data import digits
    if args.data is None:
        if args.array or args.delimiter or args.drop or args.header is not None:
            raise ValueError("--array, --delimiter, --drop and --header need a DATA file")
        x, source = digits(seed=args.seed), "sklearn digits (1797 x 64, dequantised)"
        columns = [f"pixel {r},{c}" for r in range(8) for c in range(8)]
    else:
        (x, columns), source = common.load_data(args.data, args), args.data
    return np.asarray(x, np.float64), columns, source


def _split_rows(args, x, columns, source):
    """The 80/10/10 train/validation/test split, after the checks on the rows."""
    from .data import split
    n = x.shape[0]
    if n < 10:
        raise ValueError(f"{source} has {n} rows; fit needs at least 10 (80/10/10 split)")
    train, val, test = split(x, (0.8, 0.1, 0.1), seed=args.seed)
    names = columns if args.data is not None else None
    common.constant_column_error(source, train, names, bool(args.drop))
    common.warn_outliers(source, x, names, bool(args.drop))
    return train, val, test


def _batch_size(n_train: int, requested):
    """``(batch size, the line that explains it)``."""
    if requested is None:
        batch_size = common.auto_batch_size(n_train)
        return batch_size, (f"batch size {batch_size}, chosen from the {n_train} training rows "
                            f"({n_train // batch_size} steps per epoch; set --batch-size to change)")
    if requested > n_train:
        return n_train, (f"batch size {n_train}: --batch-size {requested} is more than the "
                         f"{n_train} training rows")
    note = f"batch size {requested} ({n_train // requested} steps per epoch)"
    dropped = n_train % requested
    if dropped > 0.1 * n_train:
        note += (f"; note: each epoch leaves out {dropped} of the {n_train} training "
                 f"rows (the last incomplete batch); --batch-size "
                 f"{common.auto_batch_size(n_train)} would use nearly all")
    return requested, note


def _optimizer(args):
    import optax
    optimizer = optax.adam(args.lr)
    if args.clip is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(args.clip), optimizer)
    return optimizer


def _state_dir(args, out) -> str:
    """Where fit keeps its training state (for --resume), and a line about an earlier one."""
    state_dir = getattr(args, "state_dir", None) or os.path.join(args.out, "train_state")
    state_file = os.path.join(state_dir, "train_state.ckpt")
    if args.resume:
        print(f"resuming the fit saved in {state_file}" if os.path.exists(state_file) else
              f"--resume: no training state in {state_dir} yet, so this is a new fit",
              file=out, flush=True)
    elif os.path.exists(state_file):
        print(f"note: {state_dir} holds an earlier fit's training state; this new fit replaces "
              "it (stop now and add --resume to continue that one instead)", file=out, flush=True)
    return state_dir


def _train(args, flow, params, key, train, val, batch_size, columns, out):
    """``(params, history, seconds)`` of the fit, or the exit status after Ctrl-C."""
    from .distributed import data_mesh
    from .train import TrainingDiverged, fit
    if not args.no_progress:
        print("progress bar: one tick per epoch; train/val NLL = mean negative log-likelihood per row "
              "(nats, data units) of the training/validation rows", file=out, flush=True)
    state_dir = _state_dir(args, out)
    optimizer = _optimizer(args)
    # what identifies this run besides the flow's config and the data (hashed by fit):
    # --resume with any of these changed is refused, naming the flag
    settings = {"--flow": args.flow, "--layers": args.layers,
                "--hidden": ",".join(map(str, args.hidden)), "--lr": args.lr, "--clip": args.clip,
                "--batch-size": batch_size, "--seed": args.seed}
    t0 = time.perf_counter()
    try:
        params, history = fit(
            flow, params, train, key=key, optimizer=optimizer, batch_size=batch_size,
            num_epochs=args.epochs, val_data=val, patience=args.patience,
            progress=not args.no_progress, checkpoint_dir=state_dir, resume=args.resume,
            mesh=data_mesh(),
            run_settings=settings)
    except KeyboardInterrupt:
        return _interrupted(args, flow, params, optimizer.init(params), None, columns, state_dir, out)
    except TrainingDiverged as err:
        raise err.with_advice(
            f"From the command line: a lower learning rate (--lr {args.lr / 10:g}) "
            f"and/or gradient clipping (--clip 1.0).") from None
    return params, history, time.perf_counter() - t0


def _evaluate(flow, params, splits, seed: int, n_samples: int = 1000):
    """``(metrics, per-row scores, samples)``: each split's log-likelihood summary and
    the time and finiteness of ``n_samples`` samples."""
    dim = flow.dim
    scores = {name: common.score_rows(flow, params, a) for name, a in splits.items()}
    metrics = {name: common.ll_summary(ll, dim) for name, ll in scores.items()}
    samples, sample_seconds = common.timed_sample(flow, params, n_samples, seed)
    metrics["nonfinite_samples_per_1000"] = common.nonfinite_rows(samples)
    metrics["sample_seconds_per_1000"] = sample_seconds * 1000 / n_samples
    return metrics, scores, samples


def _write_outputs(args, flow, params, metrics, history, test, samples, image_shape):
    """Write OUT/model.ckpt, OUT/metrics.json and (unless --no-plot) OUT/report.png."""
    from . import checkpoint
    model_path = checkpoint.save(os.path.join(args.out, MODEL_FILE), flow, params,
                                 metadata={k: metrics[k] for k in ("train", "validation", "test",
                                                                   "data", "epochs_run", "columns")})
    written = [model_path, common.write_json(os.path.join(args.out, METRICS_FILE), metrics)]
    if not args.no_plot:
        from .report import write_report
        report = write_report(os.path.join(args.out, REPORT_FILE), history, test, samples,
                              columns=metrics["columns"], image_shape=image_shape)
        if report:
            written.append(report)
    return written


def _print_summary(args, metrics, history, test_scores, written, out) -> int:
    import numpy as np
    print(f"epochs {history['num_epochs_run']} (best {history['best_epoch']}), "
          f"{metrics['train_seconds']:.1f} s", file=out)
    print("log-likelihood per row in the data's units, +- 2 standard errors over rows:", file=out)
    for name in ("train", "validation", "test"):
        print(f"{name:>10} log-likelihood {common.pm(metrics[name])}", file=out)
    if (history["best_epoch"] == history["num_epochs_run"] - 1 and not history["stopped_early"]
            and history["num_epochs_run"] > 0):
        print(f"not converged: the validation log-likelihood was still improving at the last "
              f"epoch ({history['best_epoch']}); train longer, e.g. --epochs {2 * args.epochs} "
              f"(with --resume to continue this run)", file=out)
    print(f"sampling: {metrics['sample_seconds_per_1000']:.3f} s per 1000 samples", file=out)
    if metrics["nonfinite_samples_per_1000"]:
        print(f"jaxflows: warning: {metrics['nonfinite_samples_per_1000']} of 1000 samples "
              "drawn for the report are NaN or Inf", file=sys.stderr)
    print("wrote " + ", ".join(written), file=out)
    if not math.isfinite(metrics["test"]["log_likelihood_nats"]):
        bad = int((~np.isfinite(test_scores)).sum())
        print(f"jaxflows: error: the test log-likelihood is not finite ({bad} of {len(test_scores)} "
              "test rows score -inf or NaN: the model gives them zero density, e.g. values far "
              "outside the training rows' range); it is null in metrics.json. The files above "
              "were written; check those rows (jaxflows score) or train longer or with more "
              "data", file=sys.stderr)
        return 1
    return 0


def _interrupted(args, flow, params_like, opt_state_like, std, columns, state_dir, out) -> int:
    """Ctrl-C during fit: keep the best model so far as OUT/model.ckpt, say how to resume."""
    import shlex
    from . import checkpoint
    print("\njaxflows: interrupted", file=sys.stderr, flush=True)
    state_file = os.path.join(state_dir, "train_state.ckpt")
    argv = [a for a in getattr(args, "argv", None) or sys.argv[1:] if a != "--resume"]
    again = "jaxflows " + shlex.join(argv + ["--resume"])
    if not os.path.exists(state_file):
        print(f"no epoch finished, so there is no model to keep; start again with: "
              f"jaxflows {shlex.join(argv)}", file=out)
        return 130
    state = checkpoint.read_train_state(state_file, params_like, opt_state_like)
    model_path = checkpoint.save(
        os.path.join(args.out, MODEL_FILE), flow, state["best_params"], standardizer=std,
        metadata={"data": args.data or "sklearn digits", "columns": columns, "interrupted": True,
                  "epochs_run": state["epoch"], "best_epoch": state["best_epoch"]})
    print(f"stopped after {state['epoch']} epochs: the best model so far (epoch "
          f"{state['best_epoch']}) is in {model_path}; continue training with:\n  {again}",
          file=out, flush=True)
    return 130


def fit_locked(args, out=None) -> int:
    """``fit`` holding OUT's lock: a second fit into the same OUT refuses to start
    (naming the first one's process) instead of overwriting its files."""
    from .files import LOCK_FILE, directory_lock
    from .distributed import cli_fit_other_process, cli_wants_processes, initialize
    if cli_wants_processes(args):  # before any JAX work: join the other processes
        import jax
        initialize(args.coordinator, args.num_processes, args.process_id)
        if jax.process_index() != 0:  # only process 0 locks, prints and writes OUT
            return cli_fit_other_process(args, cmd_fit)
    fresh = not os.path.exists(args.out)
    try:
        with directory_lock(args.out, "another 'jaxflows fit'"):
            return cmd_fit(args, out)
    finally:
        # a fit that failed before writing anything leaves no empty OUT behind
        if fresh and os.path.isdir(args.out) and os.listdir(args.out) == [LOCK_FILE]:
            try:
                os.remove(os.path.join(args.out, LOCK_FILE))
                os.rmdir(args.out)
            except OSError:
                pass
