"""Cheap checks of the speed harness's machinery (benchmarks/speed.py).

The harness itself takes minutes (``python benchmarks/speed.py --quick`` is
its smoke run); these tests check, in well under a second, the parts that
make its ratios fair: calls interleaved with the order alternated, one
ratio per run, and the compiled-memory figure.
"""

import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import speed  # noqa: E402


class FakeClock:
    """A clock that advances by the cost of the thunk that runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_interleaved_alternates_order_and_gives_one_ratio_per_run():
    clock = FakeClock()
    calls = []

    def thunk(name, cost):
        def run():
            calls.append(name)
            clock.now += cost
            return name

        return run

    res = speed.interleaved(
        {"jaxflows": thunk("jaxflows", 1.0), "flowjax": thunk("flowjax", 3.0)},
        runs=3,
        reps=2,
        clock=clock,
    )
    # two warm-up calls each (first call, estimate), then 3 runs x 2 rounds
    assert calls[:4] == ["jaxflows", "flowjax", "jaxflows", "flowjax"]
    rounds = [tuple(calls[i:i + 2]) for i in range(4, len(calls), 2)]
    assert rounds == [
        ("jaxflows", "flowjax"), ("flowjax", "jaxflows"),  # run 0
        ("flowjax", "jaxflows"), ("jaxflows", "flowjax"),  # run 1 starts with the other
        ("jaxflows", "flowjax"), ("flowjax", "jaxflows"),  # run 2
    ]
    assert res["libs"]["jaxflows"]["run_medians_s"] == [1.0, 1.0, 1.0]
    r = speed.ratio(res)
    assert r["per_run"] == [3.0, 3.0, 3.0]
    assert (r["min"], r["median"], r["max"]) == (3.0, 3.0, 3.0)


def test_interleaved_sizes_rounds_to_the_budget():
    clock = FakeClock()

    def run():
        clock.now += 0.1

    res = speed.interleaved({"a": run, "b": run}, runs=3, target_s=1.0, clock=clock)
    assert res["reps"] == 5  # 1.0 s per run / (0.1 + 0.1 s per round)
    assert all(len(t) == 5 for t in res["libs"]["a"]["times_s"])


def test_ratio_spread_is_over_runs():
    res = {"libs": {"flowjax": {"run_medians_s": [2.0, 4.0, 3.0]}, "jaxflows": {"run_medians_s": [1.0, 1.0, 1.0]}}}
    assert speed.ratio(res) == {"min": 2.0, "median": 3.0, "max": 4.0, "per_run": [2.0, 4.0, 3.0]}


def test_compiled_memory_counts_arguments_outputs_and_temporaries():
    f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
    mem = speed.compiled_memory(f, jnp.ones((64, 64), jnp.float32))
    assert mem["argument"] == 64 * 64 * 4
    assert mem["output"] == 64 * 64 * 4
    assert mem["peak_bytes"] == mem["argument"] + mem["output"] + mem["temp"] - mem["alias"]


def test_runs_below_three_are_refused():
    with pytest.raises(SystemExit):
        speed.main(["--runs", "2", "--render", "unused.json"])
