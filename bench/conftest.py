"""pytest-benchmark suite: python -m pytest bench/ --benchmark-only

Every contender of fastoptim.benchmarks.adam (fastoptim C, the NumPy fallback, the seed's
NumPy code, torch's fused Adam when torch imports, the memory-traffic ceiling) on
every problem: one benchmark group per problem, the contender in the test id.
Options: --fo-sizes 1e2,1e4 (vector sizes), --fo-dtype float32|float64|both,
--fo-threads N (fastoptim and torch), --fo-no-models. pytest-benchmark runs each
test on its own, not interleaved: for ratios on a shared machine prefer
`python -m fastoptim bench`.
"""
import numpy as np
import pytest

from fastoptim.benchmarks import adam as _bench, cli as _cli


def pytest_addoption(parser):
    group = parser.getgroup("fastoptim bench")
    group.addoption("--fo-sizes", default="1e2,1e3,1e4,1e5,1e6,1e7",
                    help="comma-separated vector sizes")
    group.addoption("--fo-dtype", default="both", choices=("float32", "float64", "both"))
    group.addoption("--fo-threads", type=int, default=None,
                    help="threads for fastoptim and torch (default: fastoptim's count)")
    group.addoption("--fo-no-models", action="store_true", help="skip the whole-model steps")


def _problems(config):
    dtype = config.getoption("--fo-dtype")
    dtypes = ["float32", "float64"] if dtype == "both" else [dtype]
    sizes = _bench._sizes(config.getoption("--fo-sizes"))
    problems = [_bench.vector(n, dt) for dt in dtypes for n in sizes]
    if not config.getoption("--fo-no-models"):
        problems += [_bench.course_net(), _bench.mlp()]
    return problems


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    algorithm = metafunc.module.ALGORITHM
    cases, ids = [], []
    # Problem outermost, so each problem's arrays are built once for all contenders.
    for problem in _problems(metafunc.config):
        for name in _bench.CONTENDERS[algorithm]:
            cases.append((problem, name))
            label = problem.label.replace(" ", "").replace("=", "")
            ids.append(f"{problem.dtype.name}-{label}-{name.replace(' ', '_')}")
    metafunc.parametrize("case", cases, ids=ids)


@pytest.fixture(scope="session", autouse=True)
def threads(request):
    from fastoptim import _config

    n = request.config.getoption("--fo-threads")
    n = _config.get_num_threads() if n is None else n
    _config.set_num_threads(n)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(n)
    return n


class _LastInputs:
    """Keeps the arrays of the problem being benchmarked, and only those."""

    problem = None
    inputs = None

    def get(self, problem):
        if problem is not self.problem:
            self.problem, self.inputs = None, None
            self.inputs = _bench.Inputs(problem)
            self.problem = problem
        return self.inputs


_last = _LastInputs()


@pytest.fixture
def inputs_for():
    return _last.get


@pytest.fixture
def bytes_per_element():
    def get(algorithm, dtype):
        return _bench.ALGORITHMS[algorithm].bytes_per_element(np.dtype(dtype))
    return get
