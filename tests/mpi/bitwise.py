"""Every optimizer of the test database under DataParallel, both state modes,
at this world size: parameters and state bitwise equal to one process stepping
an ordinary optimizer with G = ((g_0 + g_1) + ...) * (1/w) (and equal on every
rank); clipping, skip_nonfinite (a NaN on one rank, a sum that overflows),
the moving average and gradient accumulation."""
import numpy as np

from _common import (COMM, RANK, SHAPE_SETS, WORLD, assert_bitwise, assert_same_on_every_rank,
                     copy, done, make_params, mean_grads, rank_grads)
from optimizer_db import CASES, INFOS

import fastoptim as fo
from fastoptim.distributed import DataParallel, elementwise

STEPS = 4
checks = 0


def run(cls, kwargs, spec, shard, steps=STEPS, accumulate=1, poison=None, what=""):
    """DataParallel against the single-process reference; returns the number of
    steps the reference took."""
    global checks
    params = make_params(spec)
    ref_params = copy(params)
    dp_kwargs = dict(kwargs)
    if accumulate > 1:
        dp_kwargs["gradient_accumulation_steps"] = accumulate
    opt = DataParallel(cls, params, COMM, shard_state=shard, **dp_kwargs)
    ref = cls(ref_params, **kwargs)
    taken = 0
    for step in range(steps):
        calls = []
        for c in range(accumulate):
            per_rank = [rank_grads(spec, r, step * accumulate + c) for r in range(WORLD)]
            if poison is not None:
                poison(step, per_rank)
            calls.append(per_rank)
            out = opt.step(per_rank[RANK])
        # each rank's k calls summed and scaled by 1/k, then the ranks' mean
        if accumulate > 1:
            local = [mean_grads(spec, [calls[c][r] for c in range(accumulate)])
                     for r in range(WORLD)]
        else:
            local = calls[0]
        expected = ref.step(mean_grads(spec, local))
        assert out == expected, f"{what}: step {step} returned {out}, the reference {expected}"
        taken += expected
    label = f"rank {RANK}/{WORLD} {what} shard_state={shard}"
    assert opt.t == ref.t, f"{label}: t {opt.t} vs {ref.t}"
    assert_bitwise(params, ref_params, f"{label}: parameters")
    state = opt.gather_state()
    assert sorted(state) == sorted(ref.state), f"{label}: state names"
    for name in state:
        assert_bitwise(state[name], ref.state[name], f"{label}: state {name}")
    if opt.last_grad_norm is not None or ref.last_grad_norm is not None:
        assert opt.last_grad_norm == ref.last_grad_norm or (
            np.isnan(opt.last_grad_norm) and np.isnan(ref.last_grad_norm)), \
            f"{label}: norm {opt.last_grad_norm!r} vs {ref.last_grad_norm!r}"
    assert_same_on_every_rank(params, f"{what}: parameters")
    checks += 1
    return taken


# Every configuration of the database (its rules, options, per-key decay,
# masks, clipping) on arrays that slices cut.
for case in CASES:
    cls = getattr(fo, case.cls)
    run(cls, case.kwargs, SHAPE_SETS["uneven"], elementwise(cls), what=case.id)

# Every class's richest configuration, each parameter set, both state modes,
# with clipping and with skip_nonfinite.
for info in INFOS:
    for set_name, spec in SHAPE_SETS.items():
        for shard in (True, False) if elementwise(info.cls) else (False,):
            for extra in ({}, {"max_grad_norm": 0.5}, {"skip_nonfinite": True}):
                run(info.cls, dict(info.rich, **extra), spec, shard,
                    what=f"{info.name} {set_name} {extra}")

# The moving average and gradient accumulation; a learning-rate schedule.
spec = SHAPE_SETS["mixed"]
for shard in (True, False):
    run(fo.AdamW, dict(weight_decay=0.1, ema_decay=0.9, ema_warmup=True), spec, shard,
        what="AdamW ema")
    run(fo.NAdam, dict(weight_decay=0.01), spec, shard, accumulate=3, what="NAdam accumulate")
    run(fo.Adam, dict(learning_rate=fo.schedules.CosineDecay(0.01, 10, warmup_steps=2),
                      max_grad_norm=1.0, skip_nonfinite=True),
        spec, shard, accumulate=2, what="Adam schedule accumulate clip skip")


# A NaN in one rank's gradient, and finite gradients whose sum overflows: with
# skip_nonfinite every rank skips (as the single process skips G).
def nan_on_last_rank(step, per_rank):
    if step == 1:
        per_rank[-1]["dW1"].flat[7] = np.nan


def overflow(step, per_rank):
    if step == 2:
        for g in per_rank:
            g["dW1"].flat[3] = np.finfo(g["dW1"].dtype).max
    if step == 2 and len(per_rank) == 1:
        per_rank[0]["dW1"].flat[3] = np.inf


for shard in (True, False):
    for spec_name in ("uneven", "mixed"):
        spec = SHAPE_SETS[spec_name]
        taken = run(fo.Adam, dict(skip_nonfinite=True), spec, shard, poison=nan_on_last_rank,
                    what=f"NaN on rank {WORLD - 1} {spec_name}")
        assert taken == STEPS - 1, taken
        taken = run(fo.AdamW, dict(skip_nonfinite=True, max_grad_norm=1.0), spec, shard,
                    poison=overflow, what=f"overflowing sum {spec_name}")
        assert taken == STEPS - 1 or WORLD == 1 and taken == STEPS - 1, taken
        # without skipping, the NaN reaches only the elements it touches
        run(fo.SGD, dict(momentum=0.9), spec, shard, poison=nan_on_last_rank,
            what=f"NaN not skipped {spec_name}")

# Schedule-Free's evaluation point x on every rank: eval() and train() switch the
# parameters as the single-process optimizer does, bitwise; step() refuses in eval mode.
for cls in (fo.ScheduleFreeAdamW, fo.ScheduleFreeSGD):
    for shard in (True, False):
        spec = SHAPE_SETS["mixed"]
        params = make_params(spec)
        ref_params = copy(params)
        opt = DataParallel(cls, params, COMM, shard_state=shard, warmup_steps=2)
        ref = cls(ref_params, warmup_steps=2)
        label = f"rank {RANK}/{WORLD} {cls.__name__} shard_state={shard}"
        for step in range(3):
            per_rank = [rank_grads(spec, r, step) for r in range(WORLD)]
            opt.step(per_rank[RANK])
            ref.step(mean_grads(spec, per_rank))
        opt.eval()
        ref.eval()
        assert opt.eval_mode and ref.eval_mode
        assert_bitwise(params, ref_params, f"{label}: eval() parameters")
        try:
            opt.step(rank_grads(spec, RANK, 9))
        except RuntimeError as exc:
            assert "eval" in str(exc), exc
        else:
            raise AssertionError(f"{label}: step() in eval mode did not raise")
        assert_bitwise(params, ref_params, f"{label}: a refused step changes nothing")
        opt.train()
        ref.train()
        per_rank = [rank_grads(spec, r, 3) for r in range(WORLD)]
        opt.step(per_rank[RANK])
        ref.step(mean_grads(spec, per_rank))
        assert_bitwise(params, ref_params, f"{label}: train() and a step")
        checks += 1
try:
    DataParallel(fo.Adam, make_params(SHAPE_SETS["small"]), COMM).eval()
except AttributeError as exc:
    assert "Schedule-Free" in str(exc), exc
else:
    raise AssertionError("Adam's DataParallel has an eval()")

# The compiled step of the fused path and the NumPy step (FASTOPTIM_BACKEND=numpy
# runs the whole script again) agree through the references above; the state
# bytes of a rank are its slice's.
params = make_params(SHAPE_SETS["uneven"])
opt = DataParallel(fo.Adam, params, COMM)
full = fo.Adam(copy(params))
total = sum(a.nbytes for d in full.state.values() for a in d.values())
mine = opt.state_nbytes
every = COMM.allgather(mine)
assert sum(every) == total, (every, total)
assert max(every) <= total / WORLD + 2 * 1024 * 8 * 2, (every, total)   # one chunk per state stream
done("bitwise", checks)
