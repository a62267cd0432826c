"""Ranks that disagree get the same clear error on every rank, never a hang:
keys, shapes, dtypes, layouts, settings, class, state mode at construction; a
rank's bad gradients and settings changed on one rank at a step (nothing
changes); bad settings as the optimizer classes report them; a rule that is
not elementwise refused with shard_state=True."""
import re

import numpy as np

from _common import (COMM, RANK, SHAPE_SETS, WORLD, assert_bitwise, copy, done, make_params,
                     mean_grads, rank_grads)

import fastoptim as fo
from fastoptim import distributed
from fastoptim.distributed import DataParallel

LAST = WORLD - 1
checks = 0


def expect(exc_type, pattern, fn):
    """fn() raises exc_type matching pattern on this rank (every rank calls it)."""
    global checks
    try:
        fn()
    except exc_type as exc:
        text = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        assert re.search(pattern, text), f"rank {RANK}: {text!r} does not match {pattern!r}"
    else:
        raise AssertionError(f"rank {RANK}: no {exc_type.__name__} ({pattern})")
    # every rank got here: no rank is left waiting in a collective
    assert COMM.allgather(RANK) == list(range(WORLD))
    checks += 1


spec = SHAPE_SETS["small"]


def build(params, cls=fo.Adam, **kw):
    return DataParallel(cls, params, COMM, **kw)


if WORLD > 1:
    p = make_params(spec)
    if RANK == LAST:
        del p["b2"]
    expect(ValueError, rf"rank {LAST} has no parameter 'b2'", lambda: build(p))

    p = make_params(spec)
    if RANK == LAST:
        p["W1"] = np.zeros((6, 4))
    expect(ValueError, rf"parameters\['W1'\]: shape \(6, 5\) on rank 0, \(6, 4\) on rank {LAST}",
           lambda: build(p))

    p = make_params(spec)
    if RANK == LAST:
        p["b1"] = p["b1"].astype(np.float32)
    expect(ValueError, rf"parameters\['b1'\]: dtype float64 on rank 0, float32 on rank {LAST}",
           lambda: build(p))

    p = make_params(spec)
    if RANK == LAST:
        p["W2"] = np.ascontiguousarray(p["W2"])
    expect(ValueError, rf"parameters\['W2'\]: memory order F on rank 0, C on rank {LAST}",
           lambda: build(p))

    p = make_params(spec)
    expect(ValueError, r"disagree on the settings: rank 0 has .*learning_rate', 0\.01",
           lambda: build(p, learning_rate=0.01 if RANK == 0 else 0.02))
    expect(ValueError, r"disagree on the optimizer class: rank 0 has Adam",
           lambda: build(make_params(spec), cls=fo.Adam if RANK == 0 else fo.AdamW))
    expect(ValueError, r"disagree on shard_state",
           lambda: build(make_params(spec), shard_state=RANK == 0))

    # a rank's bad gradients at a step: every rank raises, nothing changes
    p = make_params(spec)
    opt = build(p, learning_rate=0.01)
    opt.step(rank_grads(spec, RANK, 0))
    before = copy(p)
    g = rank_grads(spec, RANK, 1)
    if RANK == LAST:
        del g["db2"]
    expect(KeyError, rf"rank {LAST} of {WORLD}: grads has no key 'db2'", lambda: opt.step(g))
    g = rank_grads(spec, RANK, 1)
    if RANK == LAST:
        g["dW1"] = np.zeros((5, 6))
    expect(ValueError, rf"rank {LAST} of {WORLD}: grads\['dW1'\] has shape \(5, 6\)",
           lambda: opt.step(g))
    g = rank_grads(spec, RANK, 1)
    if RANK == 0:
        g["dW2"] = g["dW2"].astype(np.int64)
    expect(TypeError, r"rank 0 of \d+: grads\['dW2'\] has dtype int64", lambda: opt.step(g))
    assert_bitwise(p, before, "after refused steps")
    assert opt.t == 1
    if RANK == LAST:
        opt.learning_rate = 0.5
    expect(ValueError, rf"disagree on their settings: rank 0 has .*, rank {LAST} has .*0\.5",
           lambda: opt.step(rank_grads(spec, RANK, 1)))
    assert_bitwise(p, before, "after refused steps")
    opt.learning_rate = 0.01
    opt.step(rank_grads(spec, RANK, 1))   # agreeing again, it steps
    assert opt.t == 2

# bad settings: the optimizer class's own errors, on every rank
expect(ValueError, r"beta1 must be in \[0, 1\)", lambda: build(make_params(spec), beta1=1.5))
expect(TypeError, r"unexpected keyword argument 'betaa'",
       lambda: build(make_params(spec), betaa=0.5))
expect(KeyError, r"weight_decay has no key 'b2'",
       lambda: build(make_params(spec), cls=fo.AdamW, weight_decay={"W1": 0.1, "b1": 0.0,
                                                                    "W2": 0.1}))
expect(ValueError, r"arena=False is not supported",
       lambda: build(make_params(spec), arena=False))
expect(TypeError, r"optimizer_class must be a fastoptim optimizer class",
       lambda: DataParallel(dict, make_params(spec), COMM))

# storage formats (issue 13) are not sliced or exchanged: refused, nothing changes
for kw, pattern in [({"state_bits": 8}, r"DataParallel\(AdamW\).*state_bits must be 32, got 8"),
                    ({"state_bits": 16}, r"DataParallel\(AdamW\).*state_bits must be 32, got 16"),
                    ({"kahan_summation": True}, r"DataParallel\(AdamW\).*kahan_summation=True"),
                    ({"stochastic_rounding": True},
                     r"DataParallel\(AdamW\).*stochastic_rounding=True")]:
    expect(ValueError, pattern, lambda: build(make_params(spec), cls=fo.AdamW, **kw))
p = make_params(spec)
p["W1"] = p["W1"].astype(np.float16)
kept = p["W1"]
expect(TypeError, r"DataParallel\(Adam\) takes float32 or float64 parameters, got "
       r"parameters\['W1'\] of float16", lambda: build(p))
assert p["W1"] is kept

# a rule that is not elementwise: refused when sharded, whole state otherwise
saved = distributed.ELEMENTWISE_RULES
distributed.ELEMENTWISE_RULES = frozenset()
try:
    expect(ValueError, r"Adam's step is not elementwise.*shard_state=False",
           lambda: build(make_params(spec)))
    spec = SHAPE_SETS["uneven"]
    p = make_params(spec)
    ref_p = copy(p)
    opt = build(p, shard_state=False, learning_rate=0.01)
    ref = fo.Adam(ref_p, learning_rate=0.01)
    for step in range(3):
        per_rank = [rank_grads(spec, r, step) for r in range(WORLD)]
        opt.step(per_rank[RANK])
        ref.step(mean_grads(spec, per_rank))
    assert_bitwise(p, ref_p, "whole state, a rule taken as not elementwise")
    checks += 1
finally:
    distributed.ELEMENTWISE_RULES = saved
done("errors", checks)
