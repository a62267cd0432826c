"""One training iteration (forward, backward, Adam step) per contender of the loop
benchmark (fastoptim.benchmarks.loop), for the MLP [784, 256, 128, 10] and the course
net: python -m pytest bench/test_bench_loop.py --benchmark-only

pytest-benchmark runs each contender on its own, not interleaved, and times whole
iterations only: for the step inside the loop, its p90, ratios and the busy-machine
run, prefer `python -m fastoptim bench --loop`.
"""
import pytest

from fastoptim import _config
from fastoptim.benchmarks import loop as _loop

NETS = {"mlp": _loop.SoftmaxMLP, "course": _loop.CourseNet}
NAMES = [_loop.DEFAULT, _loop.ONE, _loop.OBJECT, _loop.SEED, _loop.TORCH]


@pytest.mark.parametrize("name", NAMES, ids=[n.replace(" ", "_") for n in NAMES])
@pytest.mark.parametrize("net", list(NETS))
def test_loop_iteration(benchmark, net, name, threads):
    made, skipped = _loop.contenders(NETS[net](), names=[name])
    if name in skipped:
        pytest.skip(f"{name}: {skipped[name]}")
    trainer = made[0]
    _config.set_num_threads(trainer.threads or threads)
    try:
        for _ in range(3):  # state allocated, caches and threads warm
            trainer.iteration()
        benchmark.group = f"training loop, {net}"
        benchmark(trainer.iteration)
    finally:
        _config.set_num_threads(threads)
