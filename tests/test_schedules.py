"""Learning-rate schedules (fastoptim.schedules) against their formulas written
out independently here, the course's functions, and torch where installed."""
import math

import numpy as np
import pytest

import fastoptim as fo
from fastoptim import schedules as S

STEPS = list(range(0, 50)) + [999, 1000, 1001, 2500, 10**6]


# The course's functions, as its notebook writes them.
def course_update_lr(learning_rate0, epoch_num, decay_rate):
    return 1 / (1 + decay_rate * epoch_num) * learning_rate0


def course_schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000):
    return 1 / (1 + decay_rate * np.floor(epoch_num / time_interval)) * learning_rate0


@pytest.mark.parametrize("lr0,rate", [(0.0007, 1.0), (0.1, 0.3), (0.01, 0.0)])
def test_update_lr_is_the_course_function(lr0, rate):
    sched = S.UpdateLR(lr0, rate)
    for n in STEPS:
        assert sched(n) == course_update_lr(lr0, n, rate), n
        assert sched(n) == fo.update_lr(lr0, n, rate), n


@pytest.mark.parametrize("lr0,rate,interval", [(0.1, 1.0, 1000), (0.0007, 0.3, 7), (0.5, 2.0, 1)])
def test_schedule_lr_decay_is_the_course_function(lr0, rate, interval):
    sched = S.ScheduleLRDecay(lr0, rate, interval)
    for n in STEPS:
        assert sched(n) == course_schedule_lr_decay(lr0, n, rate, interval), n
        assert sched(n) == fo.schedule_lr_decay(lr0, n, rate, interval), n
    assert S.ScheduleLRDecay(lr0, rate).time_interval == 1000


def test_exponential_and_step_decay():
    exp = S.ExponentialDecay(0.2, 0.95)
    slow = S.ExponentialDecay(0.2, 0.5, decay_steps=4)
    step = S.StepDecay(0.3, step_size=10, gamma=0.5)
    for n in STEPS:
        assert exp(n) == pytest.approx(0.2 * 0.95**n, rel=1e-14, abs=0)
        assert slow(n) == pytest.approx(0.2 * 0.5 ** (n / 4), rel=1e-14, abs=0)
        assert step(n) == pytest.approx(0.3 * 0.5 ** math.floor(n / 10), rel=1e-14, abs=0)
    assert S.StepDecay(1.0, 3)(3) == pytest.approx(0.1)


def test_cosine_decay_with_warmup():
    lr0, warm, total, floor = 0.01, 5, 25, 1e-4
    sched = S.CosineDecay(lr0, decay_steps=total, warmup_steps=warm, eta_min=floor)
    values = np.array([sched(n) for n in range(40)])
    expected = np.empty(40)
    for n in range(40):
        if n < warm:
            expected[n] = lr0 * n / warm
        elif n < total:
            expected[n] = floor + 0.5 * (lr0 - floor) * (1 + np.cos(np.pi * (n - warm) / (total - warm)))
        else:
            expected[n] = floor
    np.testing.assert_allclose(values, expected, rtol=1e-13, atol=1e-18)
    assert values[0] == 0.0 and values[warm] == lr0 and values[total] == floor
    assert np.all(np.diff(values[:warm + 1]) > 0)
    assert np.all(np.diff(values[warm:total + 1]) < 0)
    assert sched((warm + total) // 2) == pytest.approx((lr0 + floor) / 2)
    plain = S.CosineDecay(1.0, decay_steps=4)
    assert [plain(n) for n in range(6)] == pytest.approx([1, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                         0.5 - 0.5 * math.cos(math.pi / 4), 0, 0])


def test_against_torch_schedulers():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    steplr = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    mine = S.StepDecay(0.3, step_size=4, gamma=0.5)
    for n in range(20):
        assert mine(n) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), n
        opt.step()
        steplr.step()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    explr = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    mine = S.ExponentialDecay(0.2, 0.9)
    for n in range(20):
        assert mine(n) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), n
        opt.step()
        explr.step()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    mine = S.CosineDecay(0.2, decay_steps=10, eta_min=0.01)
    for n in range(11):
        assert mine(n) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), n
        opt.step()
        cos.step()


@pytest.mark.parametrize("make,exc,match", [
    (lambda: S.UpdateLR(-0.1, 1.0), ValueError, "learning_rate0"),
    (lambda: S.UpdateLR(0.1, float("nan")), ValueError, "decay_rate"),
    (lambda: S.UpdateLR("0.1", 1.0), TypeError, "learning_rate0"),
    (lambda: S.ScheduleLRDecay(0.1, 1.0, 0), ValueError, "time_interval"),
    (lambda: S.ExponentialDecay(0.1, 0.9, decay_steps=-2), ValueError, "decay_steps"),
    (lambda: S.StepDecay(0.1, 0), ValueError, "step_size"),
    (lambda: S.StepDecay(0.1, 2.5), TypeError, "step_size"),
    (lambda: S.StepDecay(0.1, 2, gamma=float("inf")), ValueError, "gamma"),
    (lambda: S.CosineDecay(0.1, 10, warmup_steps=11), ValueError, "warmup_steps"),
    (lambda: S.CosineDecay(0.1, 0), ValueError, "decay_steps"),
    (lambda: S.CosineDecay(0.1, 10, eta_min=-1.0), ValueError, "eta_min"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("step,exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                      ("3", TypeError)])
def test_bad_steps(step, exc):
    with pytest.raises(exc, match="step"):
        S.UpdateLR(0.1, 1.0)(step)


def test_numpy_integer_steps():
    assert S.StepDecay(1.0, 2, 0.5)(np.int64(5)) == 0.25


ALL = [S.UpdateLR(0.1, 0.5), S.ScheduleLRDecay(0.1, 0.5, 7), S.ExponentialDecay(0.1, 0.9, 3),
       S.StepDecay(0.1, 5, 0.3), S.CosineDecay(0.1, 100, 10, 0.001)]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_state_round_trip_equality_and_repr(sched, tmp_path):
    state = S.to_state(sched)
    np.savez(tmp_path / "s.npz", **state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        back = S.from_state(dict(npz))
    assert back == sched and back is not sched and hash(back) == hash(sched)
    assert [back(n) for n in range(30)] == [sched(n) for n in range(30)]
    assert eval(repr(sched), vars(S)) == sched
    assert sched != S.UpdateLR(0.2, 0.5)


def test_to_state_of_other_callables_is_none():
    assert S.to_state(lambda n: 0.1) is None


def test_from_state_errors():
    with pytest.raises(ValueError, match="unknown"):
        S.from_state({"schedule": "Linear"})
    with pytest.raises(KeyError, match="decay_rate"):
        S.from_state({"schedule": "UpdateLR", "learning_rate0": 0.1})


# --- the compiled step evaluates the built-in schedules itself ---------------------------

COMPILED = [
    S.UpdateLR(0.3, 0.07),
    S.ScheduleLRDecay(0.3, 0.5, time_interval=7),
    S.ScheduleLRDecay(0.3, 0.5, time_interval=2.5),   # no compiled form: called
    S.ExponentialDecay(0.3, 0.93, decay_steps=3),
    S.ExponentialDecay(0.3, 1.7, decay_steps=0.5),    # overflows: an error, as called
    S.StepDecay(0.3, step_size=5, gamma=0.6),
    S.CosineDecay(0.3, decay_steps=50, warmup_steps=7, eta_min=0.01),
    S.CosineDecay(0.3, decay_steps=3, warmup_steps=3),
]
COMPILED_STEPS = [0, 1, 2, 3, 5, 6, 7, 8, 13, 49, 50, 51, 999, 10**6 + 3, 2**40 + 1, 2**53 - 1,
                  2**53, 2**62 - 1]


@pytest.mark.parametrize("schedule", COMPILED, ids=repr)
def test_step_uses_exactly_the_schedules_value(schedule):
    """One GD step from W = 0 with dW = -1 leaves W = the learning rate used:
    it equals schedule(t) bitwise at every t, or the step raises as the
    schedule does (the compiled step evaluates built-in schedules without
    calling them)."""


    for n in COMPILED_STEPS:
        params = {"W": np.zeros(1)}
        opt = fo.GD(params, learning_rate=schedule)
        sd = opt.state_dict()
        sd["t"] = n
        opt.load_state_dict(sd)
        try:
            expected = schedule(n)
            fastoptim_checks = (expected >= 0.0 and math.isfinite(expected))
        except OverflowError:
            fastoptim_checks = False
        if not fastoptim_checks:
            with pytest.raises((ValueError, OverflowError)):
                opt.step({"dW": -np.ones(1)})
            assert params["W"][0] == 0.0 and opt.t == n
            continue
        opt.step({"dW": -np.ones(1)})
        assert params["W"][0] == expected, f"{schedule!r} at step {n}"
