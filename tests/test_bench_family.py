"""python -m fastoptim bench --algo all runs and reports every optimizer (no
timing is asserted), and each optimizer's ceiling moves exactly its streams."""
import io
import sys

import numpy as np
import pytest

from fastoptim.benchmarks import adam as _bench, cli as _cli

pytest.importorskip("fastoptim._core", reason="the family bench times the compiled backend")
from fastoptim.benchmarks import family as _bench_family  # noqa: E402

TINY = ["--algo", "all", "--quick", "--rounds", "1", "--min-ms", "0.2", "--threads", "1"]


def test_every_optimizer_has_a_row():
    out = io.StringIO()
    assert _cli.main(TINY + ["--sizes", "3000", "--dtype", "float64"], out=out) == 0
    text = out.getvalue()
    for spec in _bench_family.SPECS:
        row = next(line for line in text.splitlines() if line.startswith(spec.title + " "))
        cells = row[len(spec.title):].split()
        assert cells[0] == "float64"
        assert int(cells[1]) == 8 * spec.streams
        assert float(cells[2]) > 0 and cells[4].endswith("%")
        if spec.torch_cls is None:
            assert cells[5:] == ["-", "-"]


def test_a_missing_torch_is_reported_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    out = io.StringIO()
    assert _cli.main(TINY + ["--sizes", "1000,2000"], out=out) == 0
    text = out.getvalue()
    assert text.count("skipped torch:") == 1
    assert "skipped torch: torch not installed" in text.splitlines()
    for spec in _bench_family.SPECS:  # nor does any row claim a torch kernel
        rows = [line for line in text.splitlines() if line[:24].rstrip() == spec.title]
        assert len(rows) == 4  # 2 sizes x 2 dtypes
        assert all(row.split()[-2:] == ["-", "-"] for row in rows)


def test_the_adam_registry_is_untouched():
    assert _bench.ALGORITHMS["adam"].streams == 7
    assert "torch" not in _bench.CONTENDERS["adam"]
    assert all(s.name.startswith("family:") for s in _bench_family.SPECS)


@pytest.mark.parametrize("spec", _bench_family.SPECS, ids=lambda s: s.name)
def test_each_contender_steps_and_the_ceiling_moves_its_streams(spec):
    inputs = _bench.Inputs(_bench_family.matrix(250 * 250, np.float32))
    steps, skipped = _bench.build(spec.name, inputs)
    assert _bench.SUBJECT in steps and _bench.CEILING in steps
    for step in steps.values():
        step()
    # the ceiling's arrays: p and one state per state stream, each x += g
    p, _, _ = inputs.fresh()
    states = _bench_family._states(inputs, spec.nstates)
    expect = [{k: a + inputs.grads["d" + k] for k, a in p.items()}]
    expect += [{k: a + inputs.grads[k] for k, a in s.items()} for s in states]
    from fastoptim import _core
    _core.ceiling(p, inputs.grads, *states)
    for want, got in zip(expect, [p, *states]):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    # one pass per element, or two for a rule with a reduction (the second over p and g)
    assert spec.passes == ([spec.nstates, 0] if spec.cls in _bench_family.REDUCTIONS
                           else [spec.nstates])
    assert spec.streams == sum(3 + 2 * k for k in spec.passes)


def test_the_state_streams_are_counted_from_the_full_size_state():
    """Adafactor's factored statistics of a matrix are not streams; Muon's
    momentum is; Adam's two moments, AMSGrad's maximum and the moving average are."""
    streams = {s.title: s.nstates for s in _bench_family.SPECS}
    assert streams["Adafactor"] == 0 and streams["Muon"] == 1
    assert streams["Adam"] == 2 and streams["Adam amsgrad"] == 3
    assert streams["Adam ema_decay"] == 3   # state["ema"], read and written
