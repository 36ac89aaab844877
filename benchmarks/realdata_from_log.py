"""Rebuild a report JSON from ``realdata.py``'s log lines, for a run stopped before its end.

    .venv/bin/python benchmarks/realdata_from_log.py LOG --budget full --out results/STEM

``realdata.py`` writes its JSON only when every run is done; its log has one line per finished
run (test log-likelihood mean, KL, epochs, seconds, sample counts) and, per seed, each model's
paired comparison with flowjax's MAF.  This keeps those runs: each
becomes a ``runs`` entry with ``test_ll.mean`` (and ``test_bpd`` for MNIST, ``kl`` for targets)
and no per-row statistics, and ``meta.note`` says so.  ``--render`` on the result prints the
usual table.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _realdata_common as RC  # noqa: E402

HEAD = re.compile(r"^\S+ (\w+) seed (\d+): dim (\d+), train/val/test (\d+)/(\d+)/(\d+)")
RUN = re.compile(r"^\S+\s+(\w+): test LL (\S+)(?:, KL (\S+))? \((\d+) epochs, (\S+) s; samples (\d+) "
                 r"non-finite, (\d+) far of (\d+)\)")
CMP = re.compile(r"^\S+\s+(\w+) - flowjax_maf: (\S+) ± (\S+) nats per row \(paired over (\d+) test rows\), "
                 r"wins (\d+) / (\d+)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--budget", default="full")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    runs, comps, datasets, cur = [], [], {}, None
    with open(a.log) as fh:
        for line in fh:
            m = HEAD.match(line)
            if m:
                name, seed = m.group(1), int(m.group(2))
                b = dict(RC.BUDGETS[a.budget][name], n_train=int(m.group(4)), n_val=int(m.group(5)),
                         n_test=int(m.group(6)))
                datasets[name] = {"dim": int(m.group(3)), "units": "see realdata.py", "budget": b,
                                  "protocol": RC.PROTOCOL[name]}
                cur = (name, seed)
                continue
            m = CMP.match(line)
            if m and cur:
                diff, se = float(m.group(2)), float(m.group(3))
                comps.append({"dataset": cur[0], "seed": cur[1], "model": m.group(1), "peer": "flowjax_maf",
                              "difference": diff, "difference_se": se, "n": int(m.group(4)),
                              "z": diff / se if se > 0 else math.copysign(math.inf, diff),
                              "wins_a": int(m.group(5)), "wins_b": int(m.group(6))})
                continue
            m = RUN.match(line)
            if m and cur:
                name, seed = cur
                ll = float(m.group(2))
                r = {"dataset": name, "seed": seed, "model": m.group(1),
                     "library": "flowjax" if m.group(1) == "flowjax_maf" else "jaxflows",
                     "test_ll": {"mean": ll}, "epochs_run": int(m.group(4)), "best_epoch": -1,
                     "train_s": float(m.group(5)),
                     "samples": {"nonfinite": int(m.group(6)), "far": int(m.group(7)), "n": int(m.group(8))}}
                if m.group(3):
                    r["kl"] = {"mean": float(m.group(3))}
                if name == "mnist":
                    r["test_bpd"] = {"mean": -ll / (datasets[name]["dim"] * math.log(2))}
                runs.append(r)
    import jax

    report = {"meta": {"budget": a.budget, "device": "cpu:cpu", "machine": C.machine_info(),
                       "seeds": sorted({r["seed"] for r in runs}), "total_s": float("nan"),
                       "versions": {"jax": jax.__version__},
                       "note": f"rebuilt from the log {os.path.basename(a.log)} of a run stopped "
                               "before its end: per-seed means only"},
              "datasets": datasets, "runs": runs, "comparisons": comps}
    C.write_json(a.out + ".json", report)
    table = RC.markdown(report).replace(" (0) | ", " (n/a) | ")  # the log has no best epoch
    with open(a.out + ".md", "w") as fh:
        fh.write(f"Rebuilt from `{os.path.basename(a.log)}` (per-seed means only).\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
