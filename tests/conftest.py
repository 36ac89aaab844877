"""Suite-wide guards.

float64 tests run in the same process as the float32 ones, each inside
``with jax.enable_x64(True):`` (a thread-local switch restored on exit). A test
that turns x64 on and leaves it on would silently change the dtypes of every
later test in the same pytest-xdist worker, so any test that ends with x64
still enabled fails here, and the flag is switched back off for the next one.
"""

import os

# Compile for a short-lived test process: the suite compiles hundreds of small programs
# and runs each a few times, so XLA's backend (LLVM) optimisation costs more time than it
# saves (about a third of the suite's CPU time on 2 cores), and XLA:CPU's newer fusion
# emitters take about twice as long to compile a flow as the classic ones (measured on
# jaxlib 0.10, which pyproject.toml pins). XLA also splits each program's LLVM module to
# generate code on several threads, which only adds work when both cores already run a
# test: one part instead saves about 14% of the CPU time of test_models.py and test_vi.py
# (92 -> 79 s, two runs each). Set before the first JAX computation; subprocesses the
# tests start (CLI, docs, notebooks) inherit it.
# JAXFLOWS_TEST_OPTIMIZED=1 keeps XLA's defaults.
_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                 "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
if os.environ.get("JAXFLOWS_TEST_OPTIMIZED") != "1" and _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# One compilation cache on disk for the whole run: the pytest-xdist workers and every
# subprocess (CLI, docs, notebooks) inherit it from the process that starts pytest, so a
# program compiled once (the same small flow in several modules, or in several CLI calls)
# is read back instead of compiled again. It is new for each run and removed at the end.
_CACHE_OWNER = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _CACHE_OWNER:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxflows-test-jit-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _x64_does_not_leak(request):
    before = bool(jax.config.jax_enable_x64)
    yield
    after = bool(jax.config.jax_enable_x64)
    if after and not before:
        jax.config.update("jax_enable_x64", False)
        pytest.fail(f"{request.node.nodeid} left jax_enable_x64 on: use `with jax.enable_x64(True):`",
                    pytrace=False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module: a pytest-xdist worker
    otherwise keeps every executable of every module it ran (several GB by the end of
    the suite), and modules rarely share one."""
    yield
    jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (notebooks, doc pages, multi-process runs: 4-30 CPU-seconds
    each) run first, in their collected order, then the rest. ``make test`` splits the
    list between two pytest-xdist workers (``--dist worksteal``): with the slow tests at
    the front, the run ends on short tests and neither worker waits long for the other."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable sort


# --------------------------------------------------------------------------
# --cpu-durations=N: the N tests that used the most CPU time (this process and the
# subprocesses it waited for). Unlike --durations (wall time), it does not grow when
# other programs share the machine, so two runs can be compared on a busy computer.
# --compile-report: per test module, that CPU time beside the seconds JAX spent
# tracing, lowering and compiling (from jax.monitoring, in the test processes only,
# not in the subprocesses they start), the programs compiled and the ones read back
# from the compilation cache: where the suite's time goes.
# --------------------------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N",
                     help="show the N tests that used the most CPU seconds (0: all)")
    parser.addoption("--compile-report", action="store_true",
                     help="per test module: CPU seconds and JAX's tracing, lowering and compiling")


_EVENTS = {"trace": "/jax/core/compile/jaxpr_trace_duration",
           "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
           "compile": "/jax/core/compile/backend_compile_duration",
           "cached": "/jax/compilation_cache/cache_retrieval_time_sec"}
_JAX_TOTALS = dict.fromkeys(["trace", "lower", "compile", "programs", "cached"], 0.0)


def pytest_configure(config):
    if config.getoption("--compile-report"):
        from jax import monitoring

        names = {v: k for k, v in _EVENTS.items()}

        def listen(event, seconds, **_):
            name = names.get(event)
            if name == "cached":
                _JAX_TOTALS["cached"] += 1
            elif name is not None:
                _JAX_TOTALS[name] += seconds
                _JAX_TOTALS["programs"] += name == "compile"

        monitoring.register_event_duration_secs_listener(listen)


def _cpu_seconds():
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item._cpu_start = _cpu_seconds()
    item._jax_start = dict(_JAX_TOTALS)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "teardown" and hasattr(item, "_cpu_start"):
        # setup + call + teardown, so module fixtures count against the test that built them
        props = outcome.get_result().user_properties
        props.append(("cpu_s", _cpu_seconds() - item._cpu_start))
        props.append(("jax", {k: v - item._jax_start[k] for k, v in _JAX_TOTALS.items()}))


_CPU_TIMES, _JAX_PER_TEST = {}, {}


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "cpu_s" and report.when == "teardown":
            _CPU_TIMES[report.nodeid] = value
        if key == "jax" and report.when == "teardown":
            _JAX_PER_TEST[report.nodeid] = value


def _compile_report(tr):
    modules = {}
    for nodeid, cpu in _CPU_TIMES.items():
        row = modules.setdefault(nodeid.split("::")[0], dict.fromkeys(["cpu", *_JAX_TOTALS], 0.0))
        row["cpu"] += cpu
        for k, v in _JAX_PER_TEST.get(nodeid, {}).items():
            row[k] += v
    rows = sorted(modules.items(), key=lambda kv: -kv[1]["cpu"])
    total = {k: sum(r[k] for _, r in rows) for k in ("cpu", *_JAX_TOTALS)}
    tr.write_sep("=", "CPU seconds per test module; JAX tracing, lowering, compiling (s); "
                 "programs compiled or read from the compilation cache; of them cached")
    tr.write_line(f"{'module':48s} {'CPU':>7s} {'trace':>7s} {'lower':>7s} {'compile':>8s} "
                  f"{'programs':>9s} {'cached':>7s}")
    for name, r in rows + [("total", total)]:
        tr.write_line(f"{name:48s} {r['cpu']:7.1f} {r['trace']:7.1f} {r['lower']:7.1f} {r['compile']:8.1f} "
                      f"{r['programs']:9.0f} {r['cached']:7.0f}")


def pytest_terminal_summary(terminalreporter, config):
    if config.getoption("--compile-report") and _CPU_TIMES:
        _compile_report(terminalreporter)
    n = config.getoption("--cpu-durations")
    if n is None or not _CPU_TIMES:
        return
    rows = sorted(_CPU_TIMES.items(), key=lambda kv: -kv[1])
    tr = terminalreporter
    tr.write_sep("=", f"CPU seconds per test (setup + call + teardown), total {sum(_CPU_TIMES.values()):.0f} s")
    for nodeid, secs in rows[:n or None]:
        tr.write_line(f"{secs:8.2f}s  {nodeid}")


def pytest_unconfigure(config):
    if _CACHE_OWNER:
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
