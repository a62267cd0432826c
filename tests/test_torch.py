"""The optimizer family against torch.optim's for-loop implementations
(foreach=False), 12 steps on random problems, every option, every element of
the parameters and of the state torch keeps, float32 and float64, in whichever
backend the suite runs in. Skipped without torch; test_family_reference.py
checks the same cases against a NumPy reference that always runs."""
import contextlib

import numpy as np
import pytest

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
