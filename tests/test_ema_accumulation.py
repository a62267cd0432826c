"""Weight EMA and gradient accumulation, on every optimizer of the test database:
against a reference written from their definitions (bitwise: the same IEEE
operations), compiled == NumPy, state dicts and resume, and errors."""
import numpy as np
import pytest

import fastoptim as fo
import optimizer_db as db

DTYPES = [np.float32, np.float64]
IDS = ["f32", "f64"]


@pytest.mark.parametrize("warmup", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_ema_follows_its_definition(info, dtype, warmup):
    """After every step, ema = d*ema + (1-d)*W with the new W, starting at the
    parameters; d = ema_decay, or min(ema_decay, (1+t)/(10+t)) with warmup.
    The parameters and state equal a run without the EMA, bitwise."""
    grads = db.grads(dtype, steps=5)
    params = db.params(dtype)
    plain_params = db.params(dtype)
    opt = info.make(params, ema_decay=0.95, ema_warmup=warmup, max_grad_norm=5.0)
    plain = info.make(plain_params, max_grad_norm=5.0)
    ema = {k: a.copy(order="K") for k, a in params.items()}
    for t, g in enumerate(grads, 1):
        opt.step(g)
        plain.step(g)
        d = min(0.95, (1.0 + t) / (10.0 + t)) if warmup else 0.95
        for k, a in ema.items():
            a[...] = (dtype(d) * a + dtype(1.0 - d) * params[k])
            db.assert_same({k: opt.ema[k]}, {k: a}, f"{info.name} ema step {t}")
    snap = db.snapshot(opt, params)
    for k in params:
        snap.pop(("ema", "d" + k))
    db.assert_same(snap, db.snapshot(plain, plain_params), f"{info.name}: ema changed the step")


@pytest.mark.skipif(fo.BACKEND != "c", reason="compares the compiled step with the NumPy step")
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_ema_compiled_equals_numpy(info):
    rng = np.random.default_rng(4)
    shapes = {"W1": (400, 70), "b1": (7, 1), "W2": (9, 3)}
    start = {k: rng.standard_normal(s).astype(np.float64 if k == "b1" else np.float32)
             for k, s in shapes.items()}
    grads = [{"d" + k: rng.standard_normal(a.shape).astype(a.dtype) for k, a in start.items()}
             for _ in range(3)]
    out = []
    for compiled in (True, False):
        params = {k: a.copy() for k, a in start.items()}
        opt = info.make(params, ema_decay=0.9, ema_warmup=True)
        if not compiled:
            opt._unbind()
        for g in grads:
            opt.step(g)
        out.append((db.snapshot(opt, params), opt))
    db.assert_same(out[0][0], out[1][0], info.name)


@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_accumulation_equals_one_step_with_the_mean(info, dtype, clip):
    """k = 3 calls == one step with ((g1 + g2) + g3) * (1/3) in the dtype, bitwise;
    the first two calls return False and change nothing a user sees."""
    grads = db.grads(dtype, steps=6)
    params, ref_params = db.params(dtype), db.params(dtype)
    opt = info.make(params, gradient_accumulation_steps=3, max_grad_norm=clip)
    ref = info.make(ref_params, max_grad_norm=clip)
    for cycle in range(2):
        before = {k: a.copy() for k, a in params.items()}
        three = grads[3 * cycle:3 * cycle + 3]
        assert opt.step(three[0]) is False and opt.step(three[1]) is False
        for k in params:
            np.testing.assert_array_equal(params[k], before[k])
        assert opt.t == cycle
        assert opt.step(three[2]) is True
        mean = {}
        with np.errstate(all="ignore"):
            for key in three[0]:
                s = three[0][key] + three[1][key]
                s = s + three[2][key]
                mean[key] = s * dtype(1.0 / 3)
        ref.step(mean)
        assert opt.t == ref.t == cycle + 1
        snap = db.snapshot(opt, params)
        for k in params:
            snap.pop(("grad_sum", "d" + k))
        db.assert_same(snap, db.snapshot(ref, ref_params), f"{info.name} cycle {cycle}")


@pytest.mark.parametrize("info", [db.BY_NAME["Adam"], db.BY_NAME["NAdam"], db.BY_NAME["SGD"]],
                         ids=repr)
def test_accumulation_and_ema_resume_bitwise(info, tmp_path):
    """A checkpoint in the middle of an accumulation cycle, loaded into a fresh
    object, continues exactly (the partial sum, the count and the EMA are state)."""
    grads = db.grads(np.float32, steps=7)
    kwargs = dict(gradient_accumulation_steps=3, ema_decay=0.9)
    straight_params = db.params(np.float32)
    straight = info.make(straight_params, **kwargs)
    for g in grads:
        straight.step(g)
    params = db.params(np.float32)
    opt = info.make(params, **kwargs)
    for g in grads[:4]:  # one cycle and one call of the next
        opt.step(g)
    fo.save_checkpoint(tmp_path / "mid.npz", params, opt)
    fresh_params = db.params(np.float32, seed=8)
    fresh = info.make(fresh_params, **kwargs)
    fo.load_checkpoint(tmp_path / "mid.npz", fresh_params, fresh)
    for g in grads[4:]:
        fresh.step(g)
    db.assert_same(db.snapshot(fresh, fresh_params), db.snapshot(straight, straight_params))


def test_accumulation_bad_gradient_changes_nothing():
    params = db.params()
    opt = fo.Adam(params, gradient_accumulation_steps=2)
    g = db.grads(steps=1)[0]
    opt.step(g)
    before = db.snapshot(opt, params), opt.state_dict()["accumulated"]
    bad = dict(g)
    bad["dW2"] = np.zeros(3)
    with pytest.raises(ValueError, match="dW2"):
        opt.step(bad)
    db.assert_same(db.snapshot(opt, params), before[0])
    assert opt.state_dict()["accumulated"] == before[1] == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(ema_decay=1.0), "ema_decay"), (dict(ema_decay=-0.1), "ema_decay"),
    (dict(ema_decay="0.9"), "ema_decay"), (dict(ema_warmup=1), "ema_warmup"),
    (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    (dict(gradient_accumulation_steps=2.0), "gradient_accumulation_steps"),
])
def test_bad_settings_are_refused(kwargs, match):
    params = db.params()
    before = {k: a.copy() for k, a in params.items()}
    with pytest.raises((TypeError, ValueError), match=match):
        fo.Adam(params, **kwargs)
    for k in params:
        assert params[k] is not None and np.array_equal(params[k], before[k])


def test_without_them_nothing_is_kept():
    opt = fo.Adam(db.params())
    assert opt.ema is None and opt.gradient_accumulation_steps == 1
    assert set(opt.state) == {"v", "s"}
    assert not any(k.startswith(("ema/", "grad_sum/")) or k == "accumulated"
                   for k in opt.state_dict())
