"""Time zuko's masked autoregressive flows (run in the bench venv).

    .venv-bench/bin/python benchmarks/peer_zuko.py --out /tmp/zuko.json

MAF: ``zuko.flows.MAF(dim, transforms=L, hidden_features=hidden)`` (fully
autoregressive, ``passes = dim``: parallel log_prob, sampling by ``dim``
full MADE passes; ReLU; monotonic affine transformer; alternating orders).
IAF: the same transforms, each wrapped in ``.inv`` (``zuko.lazy.LazyInverse``)
in reverse order, over the same base: parallel sampling, ``dim``-pass
log_prob.  zuko has no dedicated IAF class.

Eager PyTorch: log_prob and sample run under ``torch.no_grad()``; a train
step is ``zero_grad``, loss, ``backward``, ``Adam.step``.  Runs on CUDA when
``torch.cuda.is_available()`` (then every timing synchronizes), else CPU
with torch's default thread count (recorded).

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set before torch is
imported; export ``OMP_WAIT_POLICY=ACTIVE`` to override): with the default
spinning OpenMP barriers, eager torch on a machine shared with other
processes ran 10-20x slower (S log_prob 146 ms vs 7.4 ms measured side by
side at load 10 on 2 cores), which would measure the machine's load rather
than zuko.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import _runner as R  # noqa: E402


def make_adapter():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import zuko
    from importlib.metadata import version

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_default_dtype(torch.float32)

    def block(out):
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def make(kind, dim, hidden, num_layers, seed):
        torch.manual_seed(seed)
        maf = zuko.flows.MAF(dim, transforms=num_layers, hidden_features=tuple(hidden))
        if kind == "maf":
            flow = maf
        else:
            flow = zuko.flows.Flow([t.inv for t in reversed(maf.transform.transforms)], maf.base)
        return flow.to(device)

    def log_prob(model, x):
        x = torch.as_tensor(x, device=device)

        def run():
            with torch.no_grad():
                return model().log_prob(x)

        return run

    def sample(model, n, seed):
        torch.manual_seed(seed)

        def run():
            with torch.no_grad():
                return model().sample((n,))

        return run

    def trainer(model, loss_fn, lr):
        opt = torch.optim.Adam(model.parameters(), lr=lr)

        def step():
            opt.zero_grad()
            loss = loss_fn(model)
            loss.backward()
            opt.step()
            return loss.detach()

        def loss():
            return float(loss_fn(model).detach())

        return R.Trainer(step=step, model=lambda: model, loss=loss)

    def mle_trainer(model, x, lr):
        x = torch.as_tensor(x, device=device)
        return trainer(model, lambda m: -m().log_prob(x).mean(), lr)

    def rkl_trainer(model, target, batch, lr):
        prec = torch.as_tensor(target["precision"], device=device)
        log_norm = float(target["log_norm"])

        def loss(m):
            y, log_q = m().rsample_and_log_prob((batch,))
            log_p = log_norm - 0.5 * torch.einsum("bi,ij,bj->b", y, prec, y)
            return (log_q - log_p).mean()

        torch.manual_seed(3)
        return trainer(model, loss, lr)

    def matmul():
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(C.MATMUL_N, C.MATMUL_N, generator=gen).to(device)
        b = torch.randn(C.MATMUL_N, C.MATMUL_N, generator=gen).to(device)
        return lambda: torch.mm(a, b)

    kind = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return R.Adapter(
        library="zuko",
        versions={"zuko": version("zuko"), "torch": torch.__version__},
        device=f"{device.type}:{kind}",
        block=block,
        make=make,
        log_prob=log_prob,
        sample=sample,
        mle_trainer=mle_trainer,
        rkl_trainer=rkl_trainer,
        matmul=matmul,
        notes={
            "maf": "zuko.flows.MAF (passes = dim): parallel log_prob, dim-pass sample",
            "iaf": "Flow([t.inv for t in reversed(MAF.transform.transforms)], MAF.base)",
            "threads": f"torch.get_num_threads() = {torch.get_num_threads()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
            "mode": "eager; log_prob and sample under torch.no_grad()",
        },
    )


def main(argv=None):
    args = C.common_arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    settings = C.settings_from_args(args)
    R.run(make_adapter(), settings, args.out)


if __name__ == "__main__":
    main()
