"""The optimizer family against torch.optim's for-loop implementations
(foreach=False), 12 steps on random problems, every option, every element of
the parameters and of the state torch keeps, float32 and float64, in whichever
backend the suite runs in. Skipped without torch; test_family_reference.py
checks the same cases against a NumPy reference that always runs."""
import contextlib

import fastoptim

import numpy as np
import pytest

from _helpers import in_layouts
from optimizer_db import SHAPES, STEPS, TORCH_CASES, problem

torch = pytest.importorskip("torch")

# Both sides round differently (torch's lerp, addcdiv and scalar tensors against
# our prepared scalars); a dozen steps of O(1) values stay within these.
TOL = {np.float64: dict(rtol=1e-11, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}


@contextlib.contextmanager
def default_dtype(dtype):
    """torch keeps NAdam's mu_product and the step counts in the default dtype."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def torch_run(case, params, grads):
    """torch's parameters (and state by our names) after each step."""
    tensors = {k: torch.tensor(np.array(a), requires_grad=True) for k, a in params.items()}
    wd = case.weight_decays()
    groups = {}
    for k, x in wd.items():
        groups.setdefault(x, []).append(tensors[k])
    param_groups = [{"params": ts, "weight_decay": x} for x, ts in groups.items()]
    opt = getattr(torch.optim, case.torch_cls)(param_groups, foreach=False, **case.torch_kwargs)
    history = []
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(np.array(g["d" + k]))
        if case.clip is not None:
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), case.clip, foreach=False)
        opt.step()
        params_now = {k: t.detach().numpy().copy() for k, t in tensors.items()}
        state = {ours: {"d" + k: opt.state[tensors[k]][theirs].numpy().copy() for k in tensors}
                 for ours, theirs in case.states}
        history.append((params_now, state))
    mu_product = None
    if case.torch_cls == "NAdam":
        mu_product = float(opt.state[tensors["W1"]]["mu_product"])
    return history, mu_product


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=repr)
def test_matches_torch(case, dtype):
    params, grads = problem(dtype, seed=sum(map(ord, case.id)))
    with default_dtype(dtype):
        expected, mu_product = torch_run(case, params, grads)
    opt = case.make(params)
    for t, (g, (p_t, state_t)) in enumerate(zip(grads, expected), 1):
        assert opt.step(g) is True
        for k in SHAPES:
            np.testing.assert_allclose(params[k], p_t[k], **TOL[dtype],
                                       err_msg=f"{case.id}: parameters[{k!r}], step {t}")
        for name, d in state_t.items():
            for dk, a in d.items():
                np.testing.assert_allclose(opt.state[name][dk], a, **TOL[dtype],
                                           err_msg=f"{case.id}: {name}[{dk!r}], step {t}")
    assert opt.t == STEPS
    if mu_product is not None:
        assert opt.mu_product == pytest.approx(mu_product, rel=1e-14 if dtype == np.float64
                                               else 1e-6)


def test_momentum_state_is_torch_buffer_scaled():
    """The course's v is (1 - beta) times torch's momentum buffer."""
    case = next(c for c in TORCH_CASES if c.id == "Momentum-nesterov=True")
    params, grads = problem(np.float64, 5)
    with default_dtype(np.float64):
        tensors = {k: torch.tensor(np.array(a), requires_grad=True) for k, a in params.items()}
        opt_t = torch.optim.SGD(list(tensors.values()), foreach=False, **case.torch_kwargs)
        opt = case.make(params)
        for g in grads:
            for k, t in tensors.items():
                t.grad = torch.tensor(g["d" + k])
            opt_t.step()
            opt.step(g)
    for k, t in tensors.items():
        buf = opt_t.state[t]["momentum_buffer"].numpy()
        np.testing.assert_allclose(opt.state["v"]["d" + k], (1 - 0.9) * buf, rtol=1e-12)


# --- Muon: torch.optim.Muon for the matrices, torch.optim.AdamW for the rest ----------

MUON_CASES = [c for c in __import__("optimizer_db").CASES if c.cls == "Muon"]


@contextlib.contextmanager
def newton_schulz_in_float():
    """torch.optim.Muon's orthogonalization in the gradient's own dtype: its
    ``grad.bfloat16()`` becomes a copy (a comparison at float precision)."""
    saved = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = saved


def torch_muon_run(case, params, grads):
    h = case.hyper
    tensors = {k: torch.tensor(np.array(a), requires_grad=True) for k, a in params.items()}
    wd = case.weight_decays()
    optimizers = []
    for muon in (True, False):
        groups = {}
        for k, t in tensors.items():
            if bool(h["muon"](k)) == muon:
                groups.setdefault(wd[k], []).append(t)
        param_groups = [{"params": ts, "weight_decay": x} for x, ts in groups.items()]
        if muon:
            optimizers.append(torch.optim.Muon(
                param_groups, lr=h["lr"], momentum=h["momentum"], nesterov=h["nesterov"],
                adjust_lr_fn="match_rms_adamw" if h["match"] else None))
        else:
            optimizers.append(torch.optim.AdamW(param_groups, lr=h["lr"], foreach=False,
                                                maximize=h["maximize"]))
    history = []
    for g in grads:
        for k, t in tensors.items():
            grad = torch.tensor(np.array(g["d" + k]))
            # torch's Muon has no maximize: ascend by descending on -g
            t.grad = -grad if h["maximize"] and h["muon"](k) else grad
        if case.clip is not None:
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), case.clip, foreach=False)
        for opt in optimizers:
            opt.step()
        state = {}
        for k, t in tensors.items():
            st = (optimizers[0] if h["muon"](k) else optimizers[1]).state[t]
            pairs = ((("momentum_buffer", "momentum_buffer"),) if h["muon"](k) else
                     (("v", "exp_avg"), ("s", "exp_avg_sq")))
            for ours, theirs in pairs:
                state.setdefault(ours, {})["d" + k] = st[theirs].numpy().copy()
        history.append(({k: t.detach().numpy().copy() for k, t in tensors.items()}, state))
    return history


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", MUON_CASES, ids=repr)
def test_muon_matches_torch(case, dtype):
    """With torch's orthogonalization in float (its bfloat16 cast made a copy):
    parameters and state within the family's tolerances, every step."""
    params, grads = problem(dtype, seed=sum(map(ord, case.id)))
    with default_dtype(dtype), newton_schulz_in_float():
        expected = torch_muon_run(case, params, grads)
    opt = case.make(params)
    assert opt.muon_keys == [k for k in SHAPES if case.hyper["muon"](k)]
    for t, (g, (p_t, state_t)) in enumerate(zip(grads, expected), 1):
        assert opt.step(g) is True
        for k in SHAPES:
            np.testing.assert_allclose(params[k], p_t[k], **TOL[dtype],
                                       err_msg=f"{case.id}: parameters[{k!r}], step {t}")
        for name, d in state_t.items():
            for dk, a in d.items():
                np.testing.assert_allclose(opt.state[name][dk], a, **TOL[dtype],
                                           err_msg=f"{case.id}: {name}[{dk!r}], step {t}")


def test_muon_against_torchs_bfloat16_iteration():
    """torch.optim.Muon as it is (the iteration in bfloat16, 8 bits of mantissa)
    against fastoptim's float32 iteration: each step's update of a Muon matrix
    agrees to bfloat16's precision, and the trajectories stay together."""
    case = next(c for c in MUON_CASES if c.id == "Muon")
    params, grads = problem(np.float32, seed=11)
    with default_dtype(np.float32):
        expected = torch_muon_run(case, params, grads)
    opt = case.make(params)
    before = {k: a.copy() for k, a in params.items()}
    for t, (g, (p_t, _)) in enumerate(zip(grads, expected), 1):
        opt.step(g)
        for k in ("W1", "W2"):
            ours, theirs = params[k] - before[k], p_t[k] - before[k]
            # the orthogonalized update has entries of O(1/sqrt(n)): bfloat16's
            # relative 2**-8 per product, over five iterations
            assert np.linalg.norm(ours - theirs) <= 0.05 * np.linalg.norm(theirs), (k, t)
            before[k] = p_t[k].copy()
            params[k][...] = p_t[k]  # follow torch's trajectory: compare single steps


# --- Adafactor beyond the database's matrices: vectors, scalars, 3-D and 4-D,
# Fortran order (the last two dimensions factored, as torch) ---------------------------

ADAFACTOR_SHAPES = {"v": (7,), "W": (5, 4), "T": (3, 4, 5), "K": (2, 3, 3, 2), "s": (),
                    "F": (6, 4), "G": (3, 4, 5)}


@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")  # G: NumPy's layout
def test_adafactor_shapes_match_torch(dtype, clip):
    rng = np.random.default_rng(12)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in ADAFACTOR_SHAPES.items()}
    params["F"] = np.asfortranarray(params["F"])
    params["G"] = np.asfortranarray(params["G"])  # a layout the kernel leaves to NumPy
    grads = [in_layouts({"d" + k: rng.standard_normal(s).astype(dtype)
                         for k, s in ADAFACTOR_SHAPES.items()}, params) for _ in range(STEPS)]
    with default_dtype(dtype):
        tensors = {k: torch.tensor(np.array(a), requires_grad=True) for k, a in params.items()}
        ref = torch.optim.Adafactor(list(tensors.values()), lr=0.02, weight_decay=0.1,
                                    foreach=False)
        opt = fastoptim.Adafactor(params, learning_rate=0.02, weight_decay=0.1,
                                  max_grad_norm=clip)
        for t, g in enumerate(grads, 1):
            for k, x in tensors.items():
                x.grad = torch.tensor(np.array(g["d" + k]))
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(list(tensors.values()), clip, foreach=False)
            ref.step()
            opt.step(g)
            for k, x in tensors.items():
                np.testing.assert_allclose(params[k], x.detach().numpy(), **TOL[dtype],
                                           err_msg=f"{k} step {t}")
                for name in ("row_var", "col_var", "variance"):
                    if name in ref.state[x]:
                        np.testing.assert_allclose(opt.state[name]["d" + k],
                                                   ref.state[x][name].numpy(), **TOL[dtype],
                                                   err_msg=f"{name} of {k}, step {t}")
