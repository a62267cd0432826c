"""Sharded checkpoints: python -m mpi4py checkpoint.py MODE DIR [SAVED_WORLD]

save    STEPS_BEFORE steps, then save_checkpoint(DIR)
resume  load_checkpoint(DIR) (saved at SAVED_WORLD ranks), check it is bitwise what
        the reference optimizer has after the same steps, step on, check again
crash   load, step, then save again with one rank dying in the middle of its
        file (CRASH=file) or rank 0 dying before the manifest (CRASH=manifest)
mid     save in the middle of a gradient-accumulation cycle (1 of 2 calls)
midload resume that checkpoint: bitwise at the saved world size, refused at another
"""
import os
import sys


from _common import (COMM, RANK, SHAPE_SETS, WORLD, assert_bitwise, done, make_params,
                     mean_grads, rank_grads)

import fastoptim as fo
from fastoptim import distributed
from fastoptim.distributed import DataParallel, load_checkpoint, save_checkpoint

mode, directory = sys.argv[1], sys.argv[2]
saved_world = int(sys.argv[3]) if len(sys.argv) > 3 else WORLD
spec = SHAPE_SETS["mixed"]
# OPT: the class (AdamW; Adafactor and Muon, whose state is not per element, take SHARD=0)
CLS = getattr(fo, os.environ.get("OPT", "AdamW"))
SETTINGS = dict(learning_rate=fo.schedules.StepDecay(0.01, 3, 0.5),
                weight_decay={"W1": 0.1, "W2": 0.2, "b1": 0.0, "c": 0.0, "e": 0.1, "s": 0.0,
                              "E": 0.0},
                max_grad_norm=2.0, ema_decay=0.9)
if CLS is fo.AdamW:
    SETTINGS["amsgrad"] = True
BEFORE, AFTER = 5, 4
shard = os.environ.get("SHARD", "1") == "1"


def build(**extra):
    params = make_params(spec, seed=1)
    return params, DataParallel(CLS, params, COMM, shard_state=shard,
                                **dict(SETTINGS, **extra))


def reference(steps_at):
    """The single-process optimizer after steps taken at the given world sizes."""
    params = make_params(spec, seed=1)
    ref = CLS(params, **SETTINGS)
    for step, world in steps_at:
        ref.step(mean_grads(spec, [rank_grads(spec, r, step) for r in range(world)]))
    return params, ref


def check(params, opt, ref_params, ref, what):
    assert_bitwise(params, ref_params, f"{what}: parameters")
    state = opt.gather_state()
    for name in state:
        assert_bitwise(state[name], ref.state[name], f"{what}: state {name}")
    assert opt.t == ref.t, (opt.t, ref.t)


if mode == "save":
    params, opt = build()
    for step in range(BEFORE):
        opt.step(rank_grads(spec, RANK, step))
    save_checkpoint(directory, params, opt)
    done("save", 1)
elif mode == "resume":
    params, opt = build()
    load_checkpoint(directory, params, opt)
    history = [(step, saved_world) for step in range(BEFORE)]
    ref_params, ref = reference(history)
    check(params, opt, ref_params, ref, f"loaded at {WORLD} (saved at {saved_world})")
    for step in range(BEFORE, BEFORE + AFTER):
        opt.step(rank_grads(spec, RANK, step))
        ref.step(mean_grads(spec, [rank_grads(spec, r, step) for r in range(WORLD)]))
    check(params, opt, ref_params, ref, "resumed")
    done("resume", 2)
elif mode == "crash":
    params, opt = build()
    load_checkpoint(directory, params, opt)
    opt.step(rank_grads(spec, RANK, BEFORE))
    where = os.environ["CRASH"]
    if where == "file" and RANK == WORLD - 1:
        def dying(path, payload):
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a file")
                f.flush()
            os._exit(3)
        distributed._write_rank_file = dying
    if where == "manifest" and RANK == 0:
        def dying_manifest(directory, manifest):
            with open(os.path.join(directory, ".manifest.json.1.deadbeef.tmp"), "w") as f:
                f.write('{"format": "fastoptim.distributed", "vers')
            os._exit(3)
        distributed._write_manifest = dying_manifest
    save_checkpoint(directory, params, opt)
    raise AssertionError("the save should have died")
elif mode == "mid":
    params, opt = build(gradient_accumulation_steps=2)
    for call in range(3):   # one step, then one accumulated call
        opt.step(rank_grads(spec, RANK, call))
    save_checkpoint(directory, params, opt)
    done("mid", 1)
elif mode == "midload":
    params, opt = build(gradient_accumulation_steps=2)
    if WORLD != saved_world:
        try:
            load_checkpoint(directory, params, opt)
        except ValueError as exc:
            assert "resumes only at that world size" in str(exc), exc
        else:
            raise AssertionError("loaded a mid-cycle checkpoint at another world size")
        done("midload refused", 1)
    else:
        load_checkpoint(directory, params, opt)
        opt.step(rank_grads(spec, RANK, 3))   # completes the second step
        ref_params = make_params(spec, seed=1)
        ref = fo.AdamW(ref_params, **SETTINGS)
        for pair in ((0, 1), (2, 3)):
            per_rank = [mean_grads(spec, [rank_grads(spec, r, c) for c in pair])
                        for r in range(WORLD)]
            ref.step(mean_grads(spec, per_rank))
        check(params, opt, ref_params, ref, "resumed mid-cycle")
        done("midload", 1)
