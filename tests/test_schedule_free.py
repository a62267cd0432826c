"""Schedule-Free AdamW and SGD: 100 steps against an independent float64
transcription of the reference implementation (optimizer_db.Reference: the
reference's step, its weights, its lerp), the evaluation point, and the switch
between the two modes (eval()/train(), evaluation(), step() refused in eval
mode, the mode in state dicts, checkpoints and pickles). Runs in whichever
backend the suite runs in."""
import pickle

import numpy as np
import pytest

import fastoptim as fo
import optimizer_db as db

SF_CASES = [c for c in db.CASES if c.cls.startswith("ScheduleFree")]


@pytest.mark.parametrize("case", SF_CASES, ids=repr)
def test_one_hundred_steps_match_the_reference_to_1e12(case):
    """float64, 100 steps: every parameter element within 1e-12 relative of the
    reference's after every step, and the evaluation point x after the last."""
    params, grads = db.problem(np.float64, seed=sum(map(ord, case.id)), steps=100)
    ref = db.Reference(case, params)
    opt = case.make(params)
    for t, g in enumerate(grads, 1):
        opt.step(g)
        ref.step(g)
        for k in params:
            np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-12, atol=0,
                                       err_msg=f"{case.id} {k} after step {t}")
    assert opt.weight_sum == pytest.approx(ref.weight_sum, rel=1e-15)
    assert opt.lr_max == ref.lr_max
    opt.eval()
    for k in params:
        np.testing.assert_allclose(params[k], ref.eval_point(k), rtol=1e-12, atol=0,
                                   err_msg=f"{case.id} eval {k}")


def test_the_reference_comparison_can_fail():
    """A wrong interpolation (beta1 0.8 against the reference's 0.9) is seen."""
    case = next(c for c in SF_CASES if c.id == "ScheduleFreeAdamW")
    params, grads = db.problem(np.float64, seed=1, steps=5)
    ref = db.Reference(case, params)
    opt = fo.ScheduleFreeAdamW(params, **dict(case.kwargs, beta1=0.8))
    for g in grads:
        opt.step(g)
        ref.step(g)
    assert not np.allclose(params["W1"], ref.p["W1"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [fo.ScheduleFreeAdamW, fo.ScheduleFreeSGD])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_eval_and_train_switch_the_arrays(cls, dtype):
    params, grads = db.problem(dtype, seed=2, steps=3)
    opt = cls(params, learning_rate=0.01, weight_decay=0.01)
    for g in grads:
        opt.step(g)
    b = opt.beta1 if cls is fo.ScheduleFreeAdamW else opt.momentum
    y = {k: a.copy() for k, a in params.items()}
    z = opt.state["z"]
    arrays = dict(params)
    opt.eval()
    assert opt.eval_mode and all(params[k] is arrays[k] for k in params)  # in place
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for k in params:
        np.testing.assert_allclose(params[k], (y[k] - (1 - b) * z["d" + k]) / b, **tol)
    opt.eval()  # again: nothing changes
    x = {k: a.copy(order="K") for k, a in params.items()}
    opt.eval()
    db.assert_same({("p", k): a for k, a in params.items()},
                   {("p", k): a for k, a in x.items()}, "a second eval()")
    opt.train()
    assert not opt.eval_mode
    for k in params:  # back to y, up to the rounding of the two interpolations
        np.testing.assert_allclose(params[k], y[k], **tol)
    assert opt.step(grads[0]) is True


@pytest.mark.parametrize("accumulate", [1, 2])
def test_step_in_eval_mode_is_refused_and_changes_nothing(accumulate):
    params, grads = db.problem(np.float32, seed=3, steps=2)
    opt = fo.ScheduleFreeAdamW(params, gradient_accumulation_steps=accumulate)
    for g in grads[:1] * accumulate:
        opt.step(g)
    opt.eval()
    before, sd = db.snapshot(opt, params), opt.state_dict()
    with pytest.raises(RuntimeError, match="eval mode.*train()"):
        opt.step(grads[1])
    db.assert_same(db.snapshot(opt, params), before, "after a refused step")
    assert opt.state_dict().keys() == sd.keys() and opt.t == 1


def test_evaluation_context_manager():
    params, grads = db.problem(np.float64, seed=4, steps=2)
    opt = fo.ScheduleFreeSGD(params, learning_rate=0.1)
    for g in grads:  # (after one step y = z = x)
        opt.step(g)
    y = {k: a.copy() for k, a in params.items()}
    with opt.evaluation():
        assert opt.eval_mode
        x = {k: a.copy() for k, a in params.items()}
    assert not opt.eval_mode
    assert not np.array_equal(x["W1"], y["W1"])
    np.testing.assert_allclose(params["W1"], y["W1"], rtol=1e-14)
    opt.eval()
    with opt.evaluation():  # entered in eval mode: left in eval mode
        pass
    assert opt.eval_mode


def test_nothing_to_switch_before_the_first_step():
    params = db.params()
    before = {k: a.copy() for k, a in params.items()}
    opt = fo.ScheduleFreeAdamW(params)
    opt.eval()
    opt.train()
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


def test_z_starts_at_the_parameters_of_the_first_step():
    """As the reference clones z at its first step: parameters changed between
    construction and the first step (a checkpoint of parameters only) are kept."""
    grads = db.grads(np.float64, steps=3)
    params = db.params(np.float64)
    opt = fo.ScheduleFreeAdamW(params, learning_rate=0.01)
    fo.load_checkpoint  # noqa: B018 - the use case: loading parameters into the arrays
    for k, a in db.params(np.float64, seed=5).items():
        params[k][...] = a
    fresh_params = db.params(np.float64, seed=5)
    fresh = fo.ScheduleFreeAdamW(fresh_params, learning_rate=0.01)
    for g in grads:
        opt.step(g)
        fresh.step(g)
    db.assert_same(db.snapshot(opt, params), db.snapshot(fresh, fresh_params))


@pytest.mark.parametrize("cls", [fo.ScheduleFreeAdamW, fo.ScheduleFreeSGD])
def test_a_checkpoint_saved_in_eval_mode_resumes_bitwise(cls, tmp_path):
    """Saved in eval mode (the parameters hold x, the state dict says so), loaded
    into a fresh object: it is in eval mode, train() and more steps give the
    bits of a run that never stopped (and switched at the same point)."""
    grads = db.grads(np.float32, steps=8)
    kwargs = dict(learning_rate=0.01, warmup_steps=2, weight_decay=0.01)
    straight_params = db.params(np.float32)
    straight = cls(straight_params, **kwargs)
    for g in grads[:4]:
        straight.step(g)
    straight.eval()
    fo.save_checkpoint(tmp_path / "eval.npz", straight_params, straight)
    straight.train()
    for g in grads[4:]:
        straight.step(g)

    fresh_params = db.params(np.float32, seed=9)
    fresh = cls(fresh_params, **kwargs)
    fo.load_checkpoint(tmp_path / "eval.npz", fresh_params, fresh)
    assert fresh.eval_mode and fresh.state_dict()["eval_mode"] is True
    with pytest.raises(RuntimeError, match="eval mode"):
        fresh.step(grads[4])
    fresh.train()
    for g in grads[4:]:
        fresh.step(g)
    db.assert_same(db.snapshot(fresh, fresh_params), db.snapshot(straight, straight_params))


def test_loading_a_train_mode_state_dict_leaves_eval_mode():
    params, grads = db.problem(np.float64, seed=6, steps=2)
    opt = fo.ScheduleFreeAdamW(params)
    opt.step(grads[0])
    sd = opt.state_dict()
    assert "eval_mode" not in sd
    opt.eval()
    x = {k: a.copy() for k, a in params.items()}
    opt.load_state_dict(sd)
    assert not opt.eval_mode
    for k in params:  # the parameters are the caller's: untouched
        np.testing.assert_array_equal(params[k], x[k])
    assert opt.step(grads[1]) is True


def test_pickle_keeps_the_mode():
    params, grads = db.problem(np.float64, seed=7, steps=1)
    opt = fo.ScheduleFreeSGD(params, learning_rate=0.1)
    opt.step(grads[0])
    opt.eval()
    twin = pickle.loads(pickle.dumps(opt))
    assert twin.eval_mode
    for k in params:
        np.testing.assert_array_equal(twin.parameters[k], params[k])


@pytest.mark.parametrize("kwargs,match", [
    (dict(beta1=0.0), "beta1 must be in \\(0, 1\\)"), (dict(beta1=1.0), "beta1"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(warmup_steps=2.5), "warmup_steps"),
    (dict(r=-1.0), "r must"), (dict(weight_lr_power=float("nan")), "weight_lr_power"),
])
def test_bad_settings_are_refused(kwargs, match):
    params = db.params()
    before = {k: a.copy() for k, a in params.items()}
    with pytest.raises((TypeError, ValueError), match=match):
        fo.ScheduleFreeAdamW(params, **kwargs)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    with pytest.raises(ValueError, match="momentum"):
        fo.ScheduleFreeSGD(params, momentum=0.0)
