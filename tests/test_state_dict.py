"""State dicts and checkpoints over the test database: every setting a state
dict restores reaches the step (both backends, through load_state_dict and
through load_checkpoint), and every scalar of a state dict is validated on
load, with nothing changed when it is refused."""
import numpy as np
import pytest

import fastoptim as fo
import optimizer_db as db

SETTINGS = [(info, name) for info in db.INFOS for name in info.settings]


def _config(info, setting, which):
    saved, other, *extra = info.settings[setting]
    kwargs = dict(extra[0]) if extra else {}
    kwargs[setting] = saved if which == "saved" else other
    return kwargs


def _run(info, kwargs, grads, dtype):
    params = db.params(dtype)
    opt = info.make(params, **kwargs)
    for g in grads:
        opt.step(g)
    return params, opt


@pytest.mark.parametrize("via", ["load_state_dict", "load_checkpoint"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info,setting", SETTINGS, ids=[f"{i.name}-{s}" for i, s in SETTINGS])
def test_restored_settings_reach_the_step(info, setting, dtype, via, tmp_path):
    """Four steps with the saved value, a restore into an object built with
    another value, four more steps == eight steps with the saved value, bitwise."""
    grads = db.grads(dtype, steps=8)
    saved, other = _config(info, setting, "saved"), _config(info, setting, "other")
    straight_params, straight = _run(info, saved, grads, dtype)
    # the two values give different runs, so a value left behind would show
    other_params, other_opt = _run(info, other, grads, dtype)
    with pytest.raises(AssertionError):
        db.assert_same(db.snapshot(other_opt, other_params), db.snapshot(straight, straight_params))

    params, opt = _run(info, saved, grads[:4], dtype)
    fresh_params = db.params(dtype, seed=9)
    fresh = info.make(fresh_params, **other)
    if via == "load_state_dict":
        for k in fresh_params:
            fresh_params[k][...] = params[k]
        fresh.load_state_dict(opt.state_dict())
    else:
        fo.save_checkpoint(tmp_path / "run.npz", params, opt)
        fo.load_checkpoint(tmp_path / "run.npz", fresh_params, fresh)
    for g in grads[4:]:
        fresh.step(g)
    db.assert_same(db.snapshot(fresh, fresh_params), db.snapshot(straight, straight_params),
                   f"{info.name} {setting} restored by {via}")


def test_momentum_beta_restored_by_load_state_dict():
    """The smallest case: beta 0.5 restored into an object built with 0.9."""
    saved = fo.Momentum({"W": np.ones(1)}, 0.1, beta=0.5)
    params = {"W": np.ones(1)}
    opt = fo.Momentum(params, 0.1, beta=0.9)
    opt.load_state_dict(saved.state_dict())
    assert opt.beta == 0.5
    opt.step({"dW": np.ones(1)})
    assert params["W"][0] == 1.0 - 0.1 * (0.5 * 0.0 + 0.5 * 1.0) == 0.95


BAD = [(info, key, value) for info in db.INFOS for key, values in info.all_bad_scalars().items()
       for value in values]


@pytest.mark.parametrize("info,key,value", BAD,
                         ids=[f"{i.name}-{k}={v!r}" for i, k, v in BAD])
def test_bad_scalar_is_refused_and_changes_nothing(info, key, value):
    source_params = db.params()
    source = info.make(source_params)
    source.step(db.grads(steps=1)[0])
    sd = source.state_dict()
    sd[key] = value

    params = db.params(seed=4)
    opt = info.make(params, learning_rate=0.05)
    opt.step(db.grads(steps=1, seed=7)[0])
    before, before_sd = db.snapshot(opt, params), opt.state_dict()
    match = r"state_dict is for|state_dict\['optimizer'\]" if key == "optimizer" else key
    with pytest.raises((TypeError, ValueError), match=match):
        opt.load_state_dict(sd)
    db.assert_same(db.snapshot(opt, params), before, f"{info.name} after a bad {key}")
    after_sd = opt.state_dict()
    assert after_sd.keys() == before_sd.keys()
    for k, v in before_sd.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(after_sd[k], v, err_msg=k)
        else:
            assert after_sd[k] == v, k
