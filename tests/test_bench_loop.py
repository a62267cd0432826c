"""python -m fastoptim bench --loop runs and prints what it should (no timing is
asserted), and its network computes true gradients."""
import io
import sys

import numpy as np
import pytest

from fastoptim.benchmarks import cli as _cli, loop as _loop

CONTENDERS = [_loop.DEFAULT, _loop.ONE, _loop.OBJECT, _loop.SEED, _loop.TORCH]
COLUMNS = ["iter med", "iter p90", "step med", "step p90", "iter/1thr", "seed/iter", "seed/step"]


def _available():
    made, skipped = _loop.contenders(_loop.CourseNet())
    return [t.name for t in made], skipped


def _section_rows(text, scenario, case):
    """{contender: cells} of one case in one scenario's table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"in the loop, {scenario}"))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith(case + " "))
    rows = {}
    for line in lines[first:]:
        if rows and not line.startswith(" "):
            break
        rest = line[24:].strip()
        name = next((c for c in CONTENDERS if rest.startswith(c)), None)
        assert name is not None, f"unexpected row {line!r}"
        rows[name] = rest[len(name):].split()
    return rows


def test_loop_bench_prints_both_scenarios_every_contender_and_the_targets():
    out = io.StringIO()
    assert _cli.main(["--loop", "--rounds", "1", "--iters", "2"], out=out) == 0
    text = out.getvalue()
    available, skipped = _available()

    assert text.startswith("fastoptim bench --loop:")
    header = next(line for line in text.splitlines() if line.startswith("case"))
    for column in ["contender"] + COLUMNS:
        assert column in header
    assert text.count(header) == 2  # quiet, busy
    for scenario in ("quiet", "busy"):
        for case in ("MLP [784,256,128,10]", "course net [2,5,2,1]"):
            rows = _section_rows(text, scenario, case)
            assert list(rows) == available, (scenario, case)
            for name, cells in rows.items():
                assert len(cells) == 7, (scenario, case, name, cells)
                assert all(c.endswith("ms") for c in cells[:2])
                assert all(c.endswith("us") for c in cells[2:4])
                assert all(float(c[:-2]) > 0 for c in cells[:4])
                assert all(c.endswith("x") for c in cells[4:])
            assert rows[_loop.ONE][4] == "1.00x"
            assert rows[_loop.SEED][5] == "1.00x" and rows[_loop.SEED][6] == "1.00x"
    for name, why in skipped.items():
        assert f"skipped {name}: {why}" in text
    if sys.platform.startswith("linux"):
        assert text.count("  others ") == 4  # two cases, two scenarios

    targets = text[text.index("targets in the loop"):].splitlines()[1:]
    verdicts = [line.split()[-1] for line in targets if line.startswith("  ")]
    assert len(verdicts) == 6
    assert set(verdicts) <= {"PASS", "FAIL"}


def test_loop_bench_quiet_only_without_models():
    out = io.StringIO()
    _loop.run(out, rounds=1, block=1, models=False, scenarios=("quiet",), with_torch=False)
    text = out.getvalue()
    assert "in the loop, quiet" in text and "in the loop, busy" not in text
    assert "course net" not in text
    assert "MLP [784,256,128,10]" in text


@pytest.mark.parametrize("net", [_loop.SoftmaxMLP(layers=(6, 5, 4, 3), batch=7),
                                 _loop.CourseNet(batch=9)], ids=["softmax MLP", "course net"])
def test_loop_networks_compute_the_gradient_of_their_cost(net):
    """Central differences in float64 against the backward pass."""
    net.X = net.X.astype(np.float64)
    net.Y = net.Y.astype(np.float64)
    p = {k: a.astype(np.float64) for k, a in net.init().items()}
    for k in p:
        p[k] += 0.1 * np.random.default_rng(1).standard_normal(p[k].shape)
    g = net.grads(p)

    def cost(q):
        if isinstance(net, _loop.SoftmaxMLP):
            net.grads(q)
            return net.cost
        from fastoptim.demo import nn

        AL, _ = nn.forward_propagation(net.X, q)
        return nn.compute_cost(AL, net.Y) / net.X.shape[1]

    h = 1e-6
    for k in p:
        flat = p[k].reshape(-1)
        for j in range(0, flat.size, max(1, flat.size // 5)):
            old = flat[j]
            flat[j] = old + h
            up = cost(p)
            flat[j] = old - h
            down = cost(p)
            flat[j] = old
            assert g["d" + k].reshape(-1)[j] == pytest.approx((up - down) / (2 * h),
                                                              rel=1e-4, abs=1e-7), (k, j)
