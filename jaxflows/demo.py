"""``make demo``: the command line's main job on the bundled default dataset.

Runs ``jaxflows fit`` (no DATA: scikit-learn's digits, 1797 x 64, dequantised)
with a small budget (about a minute or two on 2 CPU cores), then prints the
test log-likelihood in nats and bits/dim, the sampling time and where the
report is. ``python -m jaxflows.demo [--out DIR] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli import METRICS_FILE, MODEL_FILE, REPORT_FILE, main as cli_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxflows.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_output", help="output directory (default: demo_output)")
    p.add_argument("--epochs", type=int, default=60)
    args = p.parse_args(argv)
    cmd = ["fit", "--flow", "maf", "--layers", "5", "--hidden", "128", "--epochs", str(args.epochs),
           "--batch-size", "128", "--lr", "1e-3", "--patience", "10", "--seed", "0",
           "--out", args.out]
    print("$ jaxflows " + " ".join(cmd), flush=True)
    status = cli_main(cmd)
    if status != 0:
        return status
    with open(os.path.join(args.out, METRICS_FILE)) as f:
        m = json.load(f)
    test = m["test"]
    print()
    print(f"demo: {m['data']}, MAF trained {m['epochs_run']} epochs in {m['train_seconds']:.0f} s")
    print(f"  test log-likelihood: {test['log_likelihood_nats']:.2f} nats "
          f"+- {2 * test['stderr_nats']:.2f} (2 standard errors), {test['bits_per_dim']:.4f} bits/dim")
    print(f"  sampling: {m['sample_seconds_per_1000']:.3f} s per 1000 samples")
    print(f"  report: {os.path.abspath(os.path.join(args.out, REPORT_FILE))}")
    print(f"  metrics: {os.path.abspath(os.path.join(args.out, METRICS_FILE))}")
    print(f"  checkpoint: {os.path.abspath(os.path.join(args.out, MODEL_FILE))}")
    print(f"next: {command_hint()} info {os.path.join(args.out, MODEL_FILE)}" + (
        "   (or: source .venv/bin/activate, then jaxflows info ...)"
        if command_hint().startswith(".venv") else ""))
    return 0


def command_hint() -> str:
    """How to call ``jaxflows`` from the current directory, as it can be pasted.

    ``jaxflows`` if that is the one on PATH; else the console script beside this
    Python (``.venv/bin/jaxflows`` after ``make demo``); else ``python -m jaxflows``
    with this interpreter's path.
    """
    import shutil
    bindir = os.path.dirname(sys.executable)
    script = os.path.join(bindir, "jaxflows")
    on_path = shutil.which("jaxflows")
    if on_path and os.path.exists(script) and os.path.samefile(on_path, script):
        return "jaxflows"
    if os.path.exists(script):
        rel = os.path.relpath(script)
        return rel if not rel.startswith("..") else script
    return f"{sys.executable} -m jaxflows"


if __name__ == "__main__":
    sys.exit(main())
