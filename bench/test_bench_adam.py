"""One Adam step per contender and problem (see conftest.py for the options)."""
import pytest

from fastoptim.benchmarks import adam as _bench, cli as _cli

ALGORITHM = "adam"


def test_adam(benchmark, case, inputs_for, bytes_per_element):
    problem, name = case
    steps, skipped = _bench.build(ALGORITHM, inputs_for(problem), names=[name])
    if name in skipped:
        pytest.skip(f"{name}: {skipped[name]}")
    step = steps[name]
    step()  # state allocated and warm before timing
    step()
    benchmark.group = f"{ALGORITHM} {problem.dtype.name} {problem.label}"
    benchmark.extra_info.update(
        elements=problem.size,
        bytes_per_step=bytes_per_element(ALGORITHM, problem.dtype) * problem.size,
    )
    benchmark(step)
