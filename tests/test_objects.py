"""The family's optimizer objects: the fused extras (non-finite skip, global-norm
clipping), per-key weight decay, checkpoints and exact resume, errors, and the
course classes' options reducing exactly to the plain updates. Runs in
whichever backend the suite runs in."""
import math
import os

import numpy as np
import pytest

import fastoptim
import fastoptim as fam
from fastoptim import optimizers as optim

from optimizer_db import CASES, SHAPES, problem

# one configuration per class, with its state-changing options on
RICH = {
    "GD": dict(),
    "Momentum": dict(beta=0.8, nesterov=True),
    "Adam": dict(weight_decay={"W1": 0.1, "b1": 0.0, "W2": 0.2, "b2": 0.0}, amsgrad=True),
    "AdamW": dict(weight_decay=0.1, weight_decay_mask=lambda k: k.startswith("W"),
                  amsgrad=True, maximize=True),
    "SGD": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    "RMSprop": dict(momentum=0.5, centered=True, weight_decay=0.01),
    "Adagrad": dict(lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01),
    "Adamax": dict(weight_decay=0.01),
    "NAdam": dict(weight_decay=0.01, decoupled_weight_decay=True),
    "RAdam": dict(weight_decay=0.01, decoupled_weight_decay=True),
    "Lion": dict(weight_decay=0.1, learning_rate=0.01),
}
NAMES = sorted(RICH)


def make(name, params, **extra):
    return getattr(fam, name)(params, **dict(RICH[name], **extra))


def snapshot(opt, params):
    out = {("p", k): a.copy(order="K") for k, a in params.items()}
    for name, d in opt.state.items():
        out.update({(name, k): a.copy(order="K") for k, a in d.items()})
    return out


def assert_same(a, b, msg=""):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.ravel(a[k], "K").view(np.uint8),
                                      np.ravel(b[k], "K").view(np.uint8), err_msg=f"{msg} {k}")


# --- the non-finite skip ------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_step_is_skipped_and_changes_nothing(name, bad):
    params, grads = problem(np.float32, 7, steps=6)
    clean_params, _ = problem(np.float32, 7, steps=0)
    opt = make(name, params, skip_nonfinite=True)
    clean = make(name, clean_params)
    for g in grads[:3]:
        assert opt.step(g) is True
        clean.step(g)
    before = snapshot(opt, params)
    poisoned = {k: a.copy(order="K") for k, a in grads[3].items()}
    poisoned["dW2"][1, 2] = bad
    assert opt.step(poisoned) is False
    assert opt.t == 3
    assert_same(snapshot(opt, params), before, "after the skipped step")
    assert not math.isfinite(opt.last_grad_norm)
    # the skipped step leaves no trace: the run continues as if it never came
    for g in grads[4:]:
        assert opt.step(g) is True
        clean.step(g)
    assert_same(snapshot(opt, params), snapshot(clean, clean_params))
    assert opt.t == clean.t == 5


def test_without_skip_nan_reaches_only_its_elements():
    params, grads = problem(np.float64, 8, steps=2)
    opt = fam.AdamW(params, max_grad_norm=0.5)
    g = {k: a.copy(order="K") for k, a in grads[0].items()}
    g["dW1"][2, 3] = np.nan
    assert opt.step(g) is True
    assert np.isnan(params["W1"][2, 3])
    assert np.isnan(params["W1"]).sum() == 1
    assert all(np.isfinite(params[k]).all() for k in ("b1", "W2", "b2"))


# --- clipping -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_fused_clipping_equals_clipping_the_gradients_first(name, dtype):
    """The scale applied inside the update equals scaling the gradients by the
    clip coefficient (rounded to the dtype) and stepping without clipping: bitwise."""
    params, grads = problem(dtype, 11, scale=3.0)
    ref_params, _ = problem(dtype, 11, steps=0)
    opt = make(name, params, max_grad_norm=1.0)
    ref = make(name, ref_params)
    for g in grads:
        flat = np.concatenate([a.ravel().astype(np.float64) for a in g.values()])
        opt.step(g)
        assert opt.last_grad_norm == pytest.approx(math.sqrt(math.fsum(flat * flat)), rel=1e-13)
        coef = 1.0 / (opt.last_grad_norm + 1e-6)
        assert coef < 1.0
        ref.step({k: a * coef for k, a in g.items()})
        assert_same(snapshot(opt, params), snapshot(ref, ref_params), name)


@pytest.mark.parametrize("name", NAMES)
def test_clipping_below_the_threshold_changes_nothing(name):
    params, grads = problem(np.float32, 12)
    ref_params, _ = problem(np.float32, 12, steps=0)
    opt = make(name, params, max_grad_norm=1e6)
    ref = make(name, ref_params)
    for g in grads:
        opt.step(g)
        ref.step(g)
    assert_same(snapshot(opt, params), snapshot(ref, ref_params))


# --- the course's classes, options off ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kwargs", [("GD", {}), ("Momentum", dict(beta=0.8)),
                                         ("Adam", dict(beta1=0.8, beta2=0.99))])
def test_extended_course_classes_reduce_to_the_plain_ones(name, kwargs, dtype):
    """With no option on, and on the fused path with a clip that never binds,
    GD, Momentum and Adam step exactly as fastoptim.optim's."""
    p1, grads = problem(dtype, 13)
    p2, _ = problem(dtype, 13, steps=0)
    p3, _ = problem(dtype, 13, steps=0)
    plain = getattr(optim, name)(p1, 0.05, **kwargs)
    same = getattr(fam, name)(p2, 0.05, **kwargs)
    fused = getattr(fam, name)(p3, 0.05, max_grad_norm=1e9, **kwargs)
    for g in grads:
        plain.step(g)
        same.step(g)
        fused.step(g)
    assert_same(snapshot(plain, p1), snapshot(same, p2))
    assert_same(snapshot(plain, p1), snapshot(fused, p3))


# --- per-key weight decay ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax",
                                  "NAdam", "RAdam", "Lion"])
def test_no_decay_on_biases(name):
    """A mask, a dict and a callable give bitwise the same run; the masked keys
    move exactly as without weight decay, the others differ."""
    runs = []
    for wd in (dict(weight_decay=0.3, weight_decay_mask=lambda k: k.startswith("W")),
               dict(weight_decay=0.3, weight_decay_mask={"W1": True, "b1": False,
                                                         "W2": True, "b2": False}),
               dict(weight_decay={"W1": 0.3, "b1": 0.0, "W2": 0.3, "b2": 0.0}),
               dict(weight_decay=lambda k: 0.3 if k[0] == "W" else 0.0),
               dict(weight_decay=0.0)):
        params, grads = problem(np.float64, 14)
        opt = getattr(fam, name)(params, learning_rate=0.01, **wd)
        for g in grads:
            opt.step(g)
        runs.append(params)
    for other in runs[1:4]:
        assert_same(runs[0], other)
    for k in ("b1", "b2"):
        np.testing.assert_array_equal(runs[0][k], runs[4][k])
    for k in ("W1", "W2"):
        assert not np.allclose(runs[0][k], runs[4][k], rtol=1e-9, atol=0)


def test_weight_decay_property_and_changes():
    params, grads = problem(np.float64, 15)
    opt = fam.AdamW(params, weight_decay=0.1, weight_decay_mask=lambda k: k != "b1")
    assert opt.weight_decay == {"W1": 0.1, "b1": 0.0, "W2": 0.1, "b2": 0.1}
    opt.weight_decay = 0.2  # the mask still applies
    assert opt.weight_decay == {"W1": 0.2, "b1": 0.0, "W2": 0.2, "b2": 0.2}
    opt2 = fam.AdamW(problem(np.float64, 15, steps=0)[0], weight_decay=0.05)
    assert opt2.weight_decay == 0.05
    assert fam.Adamax(problem(np.float64, 1, steps=0)[0]).weight_decay == 0.0
    with pytest.raises(AttributeError, match="no weight decay"):
        fam.GD(problem(np.float64, 1, steps=0)[0]).weight_decay = 0.1


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(weight_decay={"W1": 0.1}), KeyError, "'b1'"),
    (dict(weight_decay=dict.fromkeys(SHAPES, 0.1) | {"W9": 0.1}), KeyError, "'W9'"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(weight_decay=lambda k: -1.0 if k == "b2" else 0.0), ValueError, "'b2'"),
    (dict(weight_decay_mask={"W1": True}), KeyError, "'b1'"),
    (dict(weight_decay_mask=lambda k: 1), TypeError, "weight_decay_mask"),
    (dict(amsgrad=1), TypeError, "amsgrad"),
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=float("inf")), ValueError, "max_grad_norm"),
    (dict(skip_nonfinite="yes"), TypeError, "skip_nonfinite"),
    (dict(beta1=1.0), ValueError, "beta1"),
])
def test_constructor_errors_change_nothing(kwargs, exc, match):
    params, _ = problem(np.float32, 16, steps=0)
    originals = dict(params)
    with pytest.raises(exc, match=match):
        fam.AdamW(params, **kwargs)
    assert all(params[k] is originals[k] for k in params)


@pytest.mark.parametrize("cls,kwargs,match", [
    ("SGD", dict(nesterov=True), "nesterov"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
    ("SGD", dict(momentum=1.0), "momentum"),
    ("RMSprop", dict(alpha=1.0), "alpha"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("NAdam", dict(momentum_decay=-1.0), "momentum_decay"),
    ("Lion", dict(beta2=-0.1), "beta2"),
    ("Momentum", dict(nesterov="no"), "nesterov"),
])
def test_option_errors(cls, kwargs, match):
    params, _ = problem(np.float32, 17, steps=0)
    originals = dict(params)
    with pytest.raises((ValueError, TypeError), match=match):
        getattr(fam, cls)(params, **kwargs)
    assert all(params[k] is originals[k] for k in params)


def test_momentum_needs_a_buffer_from_construction():
    params, grads = problem(np.float32, 18)
    opt = fam.SGD(params)
    with pytest.raises(ValueError, match="momentum"):
        opt.momentum = 0.9
    opt = fam.SGD(problem(np.float32, 18, steps=0)[0], momentum=0.9)
    opt.momentum = 0.0  # the buffer is kept, unused, as torch keeps it
    opt.step(grads[0])
    assert opt.momentum == 0.0


def test_bad_step_changes_nothing():
    params, grads = problem(np.float32, 19)
    opt = fam.NAdam(params, max_grad_norm=1.0, skip_nonfinite=True)
    opt.step(grads[0])
    before = snapshot(opt, params)
    mu = opt.mu_product
    bad = {k: a for k, a in grads[1].items() if k != "db2"}
    with pytest.raises(KeyError, match="db2"):
        opt.step(bad)
    assert_same(snapshot(opt, params), before)
    assert opt.t == 1 and opt.mu_product == mu


# --- checkpoints ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_resume_is_exact(name, tmp_path):
    """20 steps straight equal 10 steps, a checkpoint, a load into fresh
    objects and 10 more steps: bitwise."""
    params, grads = problem(np.float32, 20, steps=20)
    opt = make(name, params, max_grad_norm=2.0)
    for g in grads:
        opt.step(g)

    first, _ = problem(np.float32, 20, steps=0)
    opt1 = make(name, first, max_grad_norm=2.0)
    for g in grads[:10]:
        opt1.step(g)
    path = tmp_path / "ckpt.npz"
    fastoptim.save_checkpoint(path, first, opt1)
    fresh, _ = problem(np.float32, 99, steps=0)
    opt2 = make(name, fresh, max_grad_norm=2.0)
    fastoptim.load_checkpoint(path, fresh, opt2)
    assert opt2.t == 10
    for g in grads[10:]:
        opt2.step(g)
    assert_same(snapshot(opt2, fresh), snapshot(opt, params), name)
    if name == "NAdam":
        assert opt2.mu_product == opt.mu_product


def test_state_dict_holds_options_and_per_key_decay():
    params, grads = problem(np.float64, 21)
    opt = make("Adam", params)
    opt.step(grads[0])
    sd = opt.state_dict()
    assert sd["amsgrad"] is True and "maximize" not in sd  # defaults are left out
    assert sd["weight_decay/W2"] == 0.2 and "weight_decay" not in sd
    assert set(k for k in sd if k.startswith("max_s/")) == {"max_s/d" + k for k in SHAPES}


@pytest.mark.parametrize("name,kwargs", [("GD", {}), ("Momentum", {}), ("Adam", {})])
def test_plain_configuration_saves_what_optim_saves(name, kwargs, tmp_path):
    """Options at their defaults add nothing to the state dict, so checkpoints
    move both ways between fastoptim.optim's classes and these."""
    p1, grads = problem(np.float32, 25)
    p2, _ = problem(np.float32, 25, steps=0)
    plain = getattr(optim, name)(p1)
    ours = getattr(fam, name)(p2)
    for g in grads[:3]:
        plain.step(g)
        ours.step(g)
    sd_plain, sd_ours = plain.state_dict(), ours.state_dict()
    assert sd_plain.keys() == sd_ours.keys()
    fastoptim.save_checkpoint(tmp_path / "a.npz", p1, plain)
    fresh, _ = problem(np.float32, 26, steps=0)
    back = getattr(fam, name)(fresh)
    fastoptim.load_checkpoint(tmp_path / "a.npz", fresh, back)
    for g in grads[3:]:
        plain.step(g)
        back.step(g)
    assert_same(snapshot(plain, p1), snapshot(back, fresh))
    getattr(optim, name)(problem(np.float32, 27, steps=0)[0]).load_state_dict(sd_ours)


def test_load_without_options_turns_them_off():
    params, grads = problem(np.float64, 28)
    opt = fam.AdamW(params, weight_decay=0.3, maximize=True)
    plain = fam.AdamW(problem(np.float64, 28, steps=0)[0], weight_decay=0.0)
    plain.step(grads[0])
    opt.load_state_dict(plain.state_dict())
    assert opt.weight_decay == 0.0 and opt.options["maximize"] is False


def test_load_checks_structural_options():
    params, grads = problem(np.float64, 22)
    opt = fam.Adam(params, amsgrad=True)
    opt.step(grads[0])
    sd = opt.state_dict()
    other = fam.Adam(problem(np.float64, 22, steps=0)[0])
    with pytest.raises(ValueError, match="amsgrad"):
        other.load_state_dict(sd)
    assert other.t == 0
    with pytest.raises(ValueError, match="'Adam', not 'AdamW'"):
        fam.AdamW(problem(np.float64, 22, steps=0)[0], amsgrad=True).load_state_dict(sd)
    sgd = fam.SGD(problem(np.float64, 22, steps=0)[0], momentum=0.9)
    sgd.step(grads[0])
    with pytest.raises(KeyError, match="momentum_buffer"):
        fam.SGD(problem(np.float64, 22, steps=0)[0]).load_state_dict(sgd.state_dict())


def test_load_restores_flags_and_decay():
    params, grads = problem(np.float64, 23)
    opt = fam.AdamW(params, weight_decay={"W1": 0.3, "b1": 0.0, "W2": 0.1, "b2": 0.0},
                    maximize=True)
    opt.step(grads[0])
    other = fam.AdamW(problem(np.float64, 23, steps=0)[0])
    other.load_state_dict(opt.state_dict())
    assert other.options == {"amsgrad": False, "maximize": True}
    assert other.weight_decay == opt.weight_decay


def test_hyperparameters_change_between_steps():
    p1, grads = problem(np.float64, 24)
    p2, _ = problem(np.float64, 24, steps=0)
    a = fam.Adamax(p1, beta1=0.9)
    b = fam.Adamax(p2, beta1=0.9)
    a.step(grads[0])
    b.step(grads[0])
    a.beta1 = 0.5
    assert a.beta1 == 0.5 and a.state_dict()["beta1"] == 0.5
    a.step(grads[1])
    b.step(grads[1])
    assert not np.array_equal(p1["W1"], p2["W1"])
    with pytest.raises(ValueError, match="beta1"):
        a.beta1 = 1.0


def test_cases_cover_every_class():
    assert {c.cls for c in CASES} == set(fam.optimizers.__all__) - {"Optimizer"}


# --- the design: one declaration per optimizer ---------------------------------------------

import copy as _copy  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import optimizer_db as db  # noqa: E402
from fastoptim import _fallback  # noqa: E402

try:
    from fastoptim import _core
except ImportError:
    _core = None


@pytest.mark.skipif(_core is None, reason="compares with the compiled extension")
def test_the_rule_list_is_one_list():
    """csrc/rules.h's rows and the NumPy twins name the same states,
    hyperparameters (with their checks), flags and scalar state, in order."""
    c_rules = _core.rule_info()
    assert list(c_rules) == list(_fallback.RULES)
    for name, rule in _fallback.RULES.items():
        assert c_rules[name] == rule.info, name


def test_every_declaration_names_its_rules_parameters():
    for info in db.INFOS:
        d = info.cls.declaration
        rule = _fallback.RULES[d.rule]
        assert info.cls._rule is rule
        for flag in rule.flags:  # each flag is set by an option, a hyperparameter or fixed
            if flag in ("average",) and "average" not in d.fixed_flags:
                continue
        for name in d.hyperparameters:
            assert name in info.cls.__signature__.parameters
        for section in ("Parameters", "Raises", "References"):
            assert f"\n{section}\n" in info.cls.__doc__, f"{info.name}: no {section}"


def test_import_loads_no_demo_or_benchmark_and_numpy_backend_no_extension():
    code = ("import sys, fastoptim; "
            "print(sorted(m for m in sys.modules if m.startswith('fastoptim')))")
    for backend in ("numpy", ""):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "FASTOPTIM_BACKEND": backend})
        assert out.returncode == 0, out.stderr
        loaded = eval(out.stdout)  # noqa: S307 - our own printout
        assert not any(m.startswith(("fastoptim.demo", "fastoptim.benchmarks")) for m in loaded)
        if backend == "numpy":
            assert "fastoptim._core" not in loaded


BITWISE = [c for info in db.INFOS for c in info.configs]


@pytest.mark.skipif(_core is None or fastoptim.BACKEND != "c",
                    reason="compares the compiled step with the NumPy step")
@pytest.mark.parametrize("case", BITWISE, ids=repr)
def test_compiled_step_equals_numpy_step_bitwise(case):
    """Every configuration of the test database, float32 and float64 arrays in one
    optimizer, at every instruction-set level and 1 or 2 threads: the compiled
    step and the NumPy step give the same bits (parameters, state, scalar state,
    the norm)."""
    rng = np.random.default_rng(sum(map(ord, case.id)))
    shapes = {"W1": (6, 5), "b1": (6, 1), "W2": (700, 60), "b2": (4, 1)}
    start = {k: rng.standard_normal(s).astype(np.float64 if k == "b1" else np.float32)
             for k, s in shapes.items()}
    grads = [{"d" + k: rng.standard_normal(a.shape).astype(a.dtype) for k, a in start.items()}
             for _ in range(3)]
    numpy_params = {k: a.copy() for k, a in start.items()}
    ref = case.make(numpy_params)
    ref._unbind()
    for g in grads:
        ref.step(g)
    before = (_core.isa_in_use(), _core.get_num_threads())
    try:
        for isa in _core.isa_supported():
            _core.set_isa(isa)
            for threads in (1, 2):
                _core.set_num_threads(threads)
                params = {k: a.copy() for k, a in start.items()}
                opt = case.make(params)
                assert opt._compiled
                for g in grads:
                    opt.step(g)
                what = f"{case.id} isa={isa} threads={threads}"
                db.assert_same(db.snapshot(opt, params), db.snapshot(ref, numpy_params), what)
                assert opt.last_grad_norm == ref.last_grad_norm, what
                assert opt.state_dict().get("mu_product") == ref.state_dict().get("mu_product")
    finally:
        _core.set_isa(before[0])
        _core.set_num_threads(before[1])


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_pickle_and_deepcopy(info, arena):
    """A pickled or deep-copied optimizer steps exactly as the original; the
    copy updates the copied parameter arrays, so arrays pickled together with
    it (an estimator's coefficients) stay shared."""
    grads = db.grads(np.float32, steps=4)
    params = db.params(np.float32)
    opt = info.make(params, arena=arena, max_grad_norm=3.0,
                    learning_rate=fastoptim.schedules.ExponentialDecay(0.01, 0.9))
    for g in grads[:2]:
        opt.step(g)
    estimator = {"coefs": params, "optimizer": opt}
    for clone in (pickle.loads(pickle.dumps(estimator)), _copy.deepcopy(estimator)):
        twin, twin_params = clone["optimizer"], clone["coefs"]
        assert all(twin.parameters[k] is twin_params[k] for k in twin_params)
        assert twin.learning_rate == opt.learning_rate and twin.t == opt.t
        db.assert_same(db.snapshot(twin, twin_params), db.snapshot(opt, params), "copied")
    for g in grads[2:]:
        opt.step(g)
        twin.step(g)
    db.assert_same(db.snapshot(twin, twin_params), db.snapshot(opt, params), info.name)
    assert not np.shares_memory(twin_params["W1"], params["W1"])


def test_a_second_optimizer_on_the_same_dict_is_not_silent():
    """Building another optimizer on a dict whose arrays live in a first one's
    arena (a notebook cell run twice) warns, and the first refuses to step:
    its steps would no longer reach the dict."""
    params = db.params()
    first = fastoptim.Adam(params)
    first.step(db.grads(steps=1)[0])
    with pytest.warns(RuntimeWarning, match="takes the parameters over"):
        second = fastoptim.Adam(params)
    with pytest.raises(RuntimeError, match="taken over"):
        first.step(db.grads(steps=1)[0])
    assert second.step(db.grads(steps=1)[0])
    assert all(params[k] is second.parameters[k] for k in params)
    with warnings.catch_warnings():  # arrays of one's own, or arena=False: no warning
        warnings.simplefilter("error")
        fastoptim.SGD(db.params())
        fastoptim.SGD(db.params(), arena=False)
