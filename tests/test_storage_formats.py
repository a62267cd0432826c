"""Storage formats (issue 13) on the optimizer objects: 16-bit parameters
(float16, bfloat16) with nearest, Kahan or stochastic write-back, bfloat16 and
8-bit block-wise state. Checked here:

- every class whose step is elementwise takes them, and its compiled step
  gives the NumPy step's bits at every instruction set and thread count
  (Schedule-Free's eval()/train() included);
- the classes whose step is not (LAMB and Adafactor reduce over whole arrays,
  Muon has a NumPy phase, Adafactor a factored state) refuse each setting with
  an error naming the class and the argument, before anything changes; so
  does DataParallel;
- the 8-bit quantizer against a brute-force search over the 256 codes of the
  dynamic maps, built here from Dettmers et al.'s definition;
- 16-bit parameters and bfloat16 state against a float64 reference (Adam).
"""
import numpy as np
import pytest

import fastoptim
import optimizer_db as db
from fastoptim import _fallback

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)

try:
    from fastoptim import _core
except ImportError:
    _core = None

# The classes whose step is not elementwise (a reduction over whole arrays, a
# NumPy phase, a factored state): named here, not derived from the code.
NOT_ELEMENTWISE = {"LAMB", "Adafactor", "Muon"}
ELEMENTWISE = [info for info in db.INFOS if info.name not in NOT_ELEMENTWISE]

# (id, parameter dtype, gradient dtype, settings)
CONFIGS = [
    ("bf16-nearest", BF16, BF16, {}),
    ("bf16-f32grad-stochastic", BF16, np.dtype(np.float32),
     {"stochastic_rounding": True, "seed": 7}),
    ("f16-kahan", F16, F16, {"kahan_summation": True}),
    ("f16-state16", F16, F16, {"state_bits": 16}),
    ("f32-state16", np.dtype(np.float32), np.dtype(np.float32), {"state_bits": 16}),
    ("f32-state8", np.dtype(np.float32), np.dtype(np.float32),
     {"state_bits": 8, "min_8bit_size": 300}),
    ("bf16-state8-kahan", BF16, BF16,
     {"state_bits": 8, "min_8bit_size": 0, "kahan_summation": True}),
    # the EMA follows the parameters as stored (each write-back), and an
    # accumulated gradient is summed in float32 before the staged update
    ("bf16-ema-stochastic", BF16, BF16, {"ema_decay": 0.9, "stochastic_rounding": True, "seed": 5}),
    ("f16-ema-kahan-accumulate", F16, F16,
     {"ema_decay": 0.99, "kahan_summation": True, "gradient_accumulation_steps": 2}),
    ("bf16-ema-state16", BF16, BF16, {"ema_decay": 0.5, "state_bits": 16}),
]
# W2 crosses many 8-bit blocks and the parallel threshold, and ends mid-block;
# W1 is Fortran-ordered
SHAPES = {"W1": (6, 5), "b1": (6, 1), "W2": (300, 141), "b2": (300,)}


def _problem(pdtype, gdtype, seed, steps=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(np.float32).astype(pdtype)
              for k, s in SHAPES.items()}
    params["W1"] = np.asfortranarray(params["W1"])
    grads = [{"d" + k: (0.1 * rng.standard_normal(s)).astype(np.float32).astype(gdtype)
              for k, s in SHAPES.items()} for _ in range(steps)]
    for g in grads:   # in its parameter's layout, as the C path takes it
        g["dW1"] = np.asfortranarray(g["dW1"])
    return params, grads


def _no_fallback(opt):
    """Make a step that would go to the NumPy fallback fail instead: the
    comparisons below are of the compiled step."""
    def fallback(*args):
        raise AssertionError("the step went to the NumPy fallback")
    opt._step_numpy = fallback


def _run(info, settings, params, grads, numpy_step):
    opt = info.make(params, **settings)
    if numpy_step:
        opt._unbind()
    else:
        assert opt._compiled
        _no_fallback(opt)
    out = []
    for g in grads:
        opt.step(g)
    if hasattr(opt, "eval"):   # Schedule-Free: the evaluation point, then back
        opt.eval()
        out.append(db.snapshot(opt, params))
        opt.train()
        opt.step(grads[0])
    out.append(db.snapshot(opt, params))
    return opt, out


@pytest.mark.skipif(_core is None or fastoptim.BACKEND != "c",
                    reason="compares the compiled step with the NumPy step")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c[0])
@pytest.mark.parametrize("info", ELEMENTWISE, ids=repr)
def test_compiled_equals_numpy_bitwise(info, config):
    """Parameters, every state array (codes, block maxima, compensation), the
    scalar state and the norm: the same bits from both steps."""
    cid, pdtype, gdtype, settings = config
    settings = dict(settings, max_grad_norm=1.0)
    start, grads = _problem(pdtype, gdtype, seed=len(cid) + len(info.name))
    ref, expected = _run(info, settings, db.copy(start), grads, numpy_step=True)
    moments = set(ref.state) - {"z", "kahan_comp", "ema", "grad_sum"}  # z: an iterate
    if settings.get("state_bits") == 8 and moments:
        assert any(a.dtype == np.uint8 for d in ref.state.values() for a in d.values())
    before = (_core.isa_in_use(), _core.get_num_threads())
    try:
        for isa in _core.isa_supported():
            _core.set_isa(isa)
            # avx512: with and without AVX-512 BF16's conversion (where the CPU has it)
            for bf16_insn in (True, False) if isa == "avx512" else (True,):
                _core._set_bf16_instructions(bf16_insn)
                for threads in (1, 2):
                    _core.set_num_threads(threads)
                    opt, actual = _run(info, settings, db.copy(start), grads, numpy_step=False)
                    what = f"{info.name} {cid} isa={isa} bf16_insn={bf16_insn} threads={threads}"
                    for a, e in zip(actual, expected):
                        db.assert_same(a, e, what)
                    assert opt.last_grad_norm == ref.last_grad_norm, what
                    assert opt.state_dict().keys() == ref.state_dict().keys(), what
    finally:
        _core.set_isa(before[0])
        _core._set_bf16_instructions(True)
        _core.set_num_threads(before[1])


@pytest.mark.parametrize("info", ELEMENTWISE, ids=repr)
def test_state_dict_resume_is_bitwise(info):
    """8-bit state with bfloat16 parameters: a state dict taken mid-run resumes
    into a new object bitwise (codes and block maxima included)."""
    start, grads = _problem(BF16, BF16, seed=3, steps=4)
    settings = {"state_bits": 8, "min_8bit_size": 0, "stochastic_rounding": True, "seed": 5}
    params = db.copy(start)
    opt = info.make(params, **settings)
    for g in grads:
        opt.step(g)
    params2 = db.copy(start)
    first = info.make(params2, **settings)
    for g in grads[:2]:
        first.step(g)
    sd = first.state_dict()
    params3 = db.copy(params2)
    resumed = info.make(params3, **settings)
    resumed.load_state_dict(sd)
    for g in grads[2:]:
        resumed.step(g)
    db.assert_same(db.snapshot(resumed, params3), db.snapshot(opt, params), info.name)


# --- refusals --------------------------------------------------------------------------

REFUSED_SETTINGS = [
    ({"state_bits": 8}, np.float32, ValueError, "state_bits"),
    ({"state_bits": 16}, np.float32, ValueError, "state_bits"),
    ({"kahan_summation": True}, np.float32, ValueError, "kahan_summation"),
    ({"stochastic_rounding": True}, np.float32, ValueError, "stochastic_rounding"),
    ({}, BF16, TypeError, "parameters['W1']"),
    ({}, F16, TypeError, "parameters['W1']"),
]


@pytest.mark.parametrize("settings,dtype,error,named", REFUSED_SETTINGS,
                         ids=lambda x: repr(x)[:30])
@pytest.mark.parametrize("name", sorted(NOT_ELEMENTWISE))
def test_not_elementwise_classes_refuse(name, settings, dtype, error, named):
    """The error names the class and the argument; the parameter dict and its
    arrays are left as they were."""
    params = db.params(np.float32)
    params = {k: a.astype(dtype) for k, a in params.items()}
    saved = {k: (a, a.copy(order="K")) for k, a in params.items()}
    with pytest.raises(error) as exc:
        db.BY_NAME[name].make(params, **settings)
    assert name in str(exc.value) and named in str(exc.value)
    assert params.keys() == saved.keys()
    for k, (a, copy) in saved.items():
        assert params[k] is a
        assert np.array_equal(np.ravel(a, "K").view(np.uint8), np.ravel(copy, "K").view(np.uint8))


@pytest.mark.parametrize("info", ELEMENTWISE, ids=repr)
def test_elementwise_classes_take_every_setting(info):
    params = {k: a.astype(BF16) for k, a in db.params(np.float32).items()}
    info.make(params, state_bits=8, min_8bit_size=0, kahan_summation=True)


@pytest.mark.parametrize("rule", ["lamb", "adafactor"])
def test_dict_update_of_a_reduction_refuses_16bit(rule):
    """The dict-level update: a rule with a reduction refuses 16-bit parameters
    before anything is written (the C driver stages elementwise rules only)."""
    r = _fallback.RULES[rule]
    p = {"a": np.ones(5, np.float32), "b": np.ones(5, BF16)}
    g = {"da": np.ones(5, np.float32), "db": np.ones(5, BF16)}
    states = tuple({"da": np.zeros(5, np.float32), "db": np.zeros(5, np.float32)}
                   for _ in r.states)
    before = {k: a.copy() for k, a in p.items()}
    hyper = tuple({"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6, "decay_rate": 0.8,
                   "epsilon1": 1e-30, "epsilon2": 1e-3, "d": 1.0}[h] for h in r.hyper)
    update = _core.update if _core is not None and fastoptim.BACKEND == "c" \
        else _fallback.update
    with pytest.raises(TypeError, match=f"{rule}.*parameters\\['b'\\]"):
        update(rule, p, g, states, 1, 0.01, hyper, scalars=(1.0,) * len(r.scalars))
    for k in p:
        assert np.array_equal(p[k].view(np.uint8), before[k].view(np.uint8))


# --- the quantizer ---------------------------------------------------------------------

def _dynamic_map(signed):
    """Dettmers et al. 2022's dynamic map (bitsandbytes' create_dynamic_map,
    8 bits, 7 exponent bits), transcribed: for exponent i = 0..6, the means of
    neighbouring points of linspace(0.1, 1, 2**i + 1) (signed; unsigned:
    2**(i+1) + 1) times 10**(i - 6), with their negatives when signed; 0 and 1.
    Computed in float64, rounded once to float32."""
    data = [0.0, 1.0]
    for i in range(7):
        items = (2**i if signed else 2 ** (i + 1)) + 1
        b = np.linspace(0.1, 1.0, items)
        means = (b[:-1] + b[1:]) / 2.0 * 10.0 ** (i - 6)
        data += list(means) + (list(-means) if signed else [])
    assert len(data) == 256
    return np.sort(np.array(data, np.float64)).astype(np.float32)


@pytest.mark.parametrize("fmt", [_fallback.FMT_Q8, _fallback.FMT_Q8_UNSIGNED])
def test_maps_are_dettmers(fmt):
    expected = _dynamic_map(fmt == _fallback.FMT_Q8)
    np.testing.assert_array_max_ulp(_fallback.dynamic_map(fmt == _fallback.FMT_Q8), expected, 1)
    if _core is not None and fastoptim.BACKEND == "c":
        assert np.array_equal(_core._q8_map(fmt), _fallback.dynamic_map(fmt == _fallback.FMT_Q8))


def _brute_force(x, table):
    """The code whose value is nearest to each x (float64 distances over all
    256 codes); a tie goes to the smaller magnitude."""
    t = table.astype(np.float64)
    d = np.abs(x.astype(np.float64)[:, None] - t[None, :])
    best = d.min(axis=1, keepdims=True)
    ties = np.where(d == best, np.abs(t)[None, :], np.inf)
    return ties.argmin(axis=1)


@pytest.mark.parametrize("fmt", [_fallback.FMT_Q8, _fallback.FMT_Q8_UNSIGNED])
def test_quantizer_is_the_nearest_code(fmt):
    signed = fmt == _fallback.FMT_Q8
    table = _fallback.dynamic_map(signed)
    rng = np.random.default_rng(11)
    t64 = table.astype(np.float64)
    mids = (t64[1:] + t64[:-1]) / 2
    # values spread over the map's decades, the codes themselves, their
    # neighbours and the midpoints between codes
    spread = rng.choice([-1, 1] if signed else [1], 6000) * 10.0 ** rng.uniform(-8, 0, 6000)
    special = np.concatenate([t64, mids, np.nextafter(mids.astype(np.float32), 2),
                              np.nextafter(mids.astype(np.float32), -2), [0.0, 1.0]])
    if not signed:
        special = special[special >= 0]
    x = np.concatenate([spread, special]).astype(np.float32)
    x = x[: x.size // 256 * 256]
    # put each block's maximum at 1 so that the scaled values are x themselves
    blocks = x.reshape(-1, 256).copy()
    blocks[:, 0] = 1.0
    x = blocks.ravel()
    codes, absmax = _fallback.q8_encode(x, fmt)
    assert np.array_equal(absmax, np.ones(x.size // 256, np.float32))
    expected = _brute_force(x, table)
    bad = np.flatnonzero(codes != expected)
    assert bad.size == 0, f"x={x[bad[0]]!r}: code {codes[bad[0]]}, nearest {expected[bad[0]]}"
    assert codes[x == 0].tolist() == [127 if signed else 0] * int((x == 0).sum())
    if _core is not None and fastoptim.BACKEND == "c":
        c_codes, c_absmax = _core._q8_encode(fmt, x)
        assert np.array_equal(c_codes, codes) and np.array_equal(c_absmax, absmax)
        scaled = (rng.standard_normal(5000) * 10.0 ** rng.uniform(-6, 3, 5000))
        if not signed:
            scaled = np.abs(scaled)
        scaled = scaled.astype(np.float32)
        c_codes, c_absmax = _core._q8_encode(fmt, scaled)
        np_codes, np_absmax = _fallback.q8_encode(scaled, fmt)
        assert np.array_equal(c_codes, np_codes) and np.array_equal(c_absmax, np_absmax)


# --- against a float64 reference -------------------------------------------------------

def _adam64(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g.astype(np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("pdtype", [BF16, F16], ids=str)
def test_one_adam_step_of_16bit_parameters_against_float64(pdtype):
    """One step from 16-bit values: float32 arithmetic rounded once, so the
    result is the float64 update rounded to the format, or its neighbour."""
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(4096).astype(np.float32).astype(pdtype)
    g = rng.standard_normal(4096).astype(np.float32)
    params = {"W": p0.copy()}
    fastoptim.Adam(params, learning_rate=1e-2).step({"dW": g})
    expected = _adam64(p0, [g], lr=1e-2).astype(np.float32).astype(pdtype)
    ours = params["W"].astype(np.float32).view(np.int32).astype(np.int64)
    ref = expected.astype(np.float32).view(np.int32).astype(np.int64)
    shift = 16 if pdtype == BF16 else 13
    assert np.abs((ours >> shift) - (ref >> shift)).max() <= 1


def test_kahan_and_stochastic_track_float32_where_nearest_stalls():
    """Updates far below bfloat16's resolution: round to nearest never moves
    the parameters; Kahan summation and stochastic rounding follow the float32
    trajectory (within bfloat16's resolution and a few percent)."""
    n, steps = 4096, 200
    p0 = np.ones(n, np.float32)
    grads = [{"dW": np.full(n, 1.0, np.float32)} for _ in range(steps)]
    results = {}
    for name, settings in [("nearest", {}), ("kahan", {"kahan_summation": True}),
                           ("stochastic", {"stochastic_rounding": True, "seed": 1})]:
        params = {"W": p0.astype(BF16)}
        opt = fastoptim.SGD(params, learning_rate=1e-4, **settings)
        for g in grads:
            opt.step(g)
        results[name] = params["W"].astype(np.float64)
    exact = 1.0 - 1e-4 * steps   # 0.98
    assert np.all(results["nearest"] == 1.0)
    assert np.abs(results["kahan"] - exact).max() <= 2**-7
    assert abs(results["stochastic"].mean() - exact) < 0.1 * (1.0 - exact)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_issue_13_float16_cases_stay_finite(dtype):
    """The issue's examples: a zero gradient, then one of 1e-3, on a 16-bit
    parameter with the dict API: finite, as in float32."""
    for grad in (0.0, 1e-3):
        P = {"W": np.array([1.0], dtype)}
        v, s = fastoptim.initialize_adam(P)
        assert v["dW"].dtype == np.float32
        fastoptim.update_parameters_with_adam(P, {"dW": np.array([grad], dtype)}, v, s, 1, 0.001)
        assert np.isfinite(P["W"].astype(np.float32)).all()
        expected = np.float32(1.0 - 0.001 * (1.0 if grad else 0.0))
        assert abs(np.float32(P["W"][0]) - expected) <= 2**-8


@pytest.mark.parametrize("name", ["AdamW", "ScheduleFreeAdamW"])
def test_checkpoint_of_bfloat16_and_8bit_state_resumes_bitwise(tmp_path, name):
    """save_checkpoint / load_checkpoint with bfloat16 parameters, 8-bit state
    and a Kahan compensation (bfloat16 stored as uint16 bits in the file):
    resuming in a new process's objects gives the uninterrupted run's bits."""
    info = db.BY_NAME[name]
    start, grads = _problem(BF16, BF16, seed=9, steps=4)
    settings = {"state_bits": 8, "min_8bit_size": 0, "kahan_summation": True}
    params = db.copy(start)
    opt = info.make(params, **settings)
    for g in grads:
        opt.step(g)
    first_params = db.copy(start)
    first = info.make(first_params, **settings)
    for g in grads[:2]:
        first.step(g)
    path = tmp_path / "run.npz"
    fastoptim.save_checkpoint(path, first_params, first)
    with np.load(path) as archive:   # no pickled objects, no bfloat16 dtype in the file
        assert all(archive[k].dtype != object and archive[k].dtype.kind != "V"
                   for k in archive.files)
    resumed_params = db.copy(start)
    resumed = info.make(resumed_params, **settings)
    fastoptim.load_checkpoint(path, resumed_params, resumed)
    assert resumed_params["W1"].dtype == BF16
    for g in grads[2:]:
        resumed.step(g)
    db.assert_same(db.snapshot(resumed, resumed_params), db.snapshot(opt, params), name)


def _write_back_values():
    """float32 values for the 16-bit write-back: ties and near-ties of both
    formats, both zeros, float32 and float16 subnormals, the overflow
    boundaries, the largest float32, infinities, NaNs with payloads, and random
    bit patterns of every exponent; 16*k + 5 of them, so that the vector loops
    and their scalar tails both run."""
    rng = np.random.default_rng(13)
    special = [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11,
               2**-14, 2**-24, 2**-25, 3 * 2**-25, 1e-40, -1e-40, 2**-126, 65504.0,
               65519.99, 65520.0, -65520.0, 3.3895e38, 3.4028235e38, np.inf, -np.inf]
    bits = [0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FA12345, 0x7F7FFFFF, 0x7F7F8000,
            0x00007FFF, 0x80008000, 0x3F808000, 0x3F818000, 0x33000000, 0x477FF000]
    x = np.concatenate([np.array(special, np.float32), np.array(bits, np.uint32).view(np.float32),
                        rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        (rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000)).astype(np.float32)])
    return x[:16 * (x.size // 16) - 11]


@pytest.mark.skipif(_core is None or fastoptim.BACKEND != "c",
                    reason="compares the compiled step with the NumPy step")
@pytest.mark.parametrize("rounding", [{}, {"kahan_summation": True},
                                      {"stochastic_rounding": True, "seed": 3}],
                         ids=["nearest", "kahan", "stochastic"])
@pytest.mark.parametrize("pdtype", [BF16, F16], ids=str)
def test_write_back_of_every_float32_class_is_bitwise(pdtype, rounding):
    """SGD with learning rate 1 from zero parameters and a float32 gradient -x
    writes x itself back to 16 bits: the vector and scalar paths of every
    instruction set give the NumPy twin's bits (parameters and Kahan
    compensation), special values included; round to nearest is also checked
    against an independent cast (NumPy's float16; ml_dtypes' bfloat16 on
    normal numbers, where the two bfloat16 rules agree)."""
    x = _write_back_values()
    grads = {"dW": -x}

    def run(numpy_step):
        params = {"W": np.zeros(x.size, pdtype)}
        opt = fastoptim.SGD(params, learning_rate=1.0, **rounding)
        if numpy_step:
            opt._unbind()
        with np.errstate(all="ignore"):
            opt.step(grads)
        comp = opt.state.get("kahan_comp", {}).get("dW")
        assert (comp is not None) == bool(rounding.get("kahan_summation"))
        return params["W"].view(np.uint16).copy(), None if comp is None else comp.view(np.uint16).copy()

    expected = run(True)
    if not rounding:
        with np.errstate(all="ignore"):
            y = np.float32(0.0) - np.float32(1.0) * grads["dW"]   # the float32 update: x, but +0 for -0
            cast = y.astype(pdtype)
        ok = ~np.isnan(x) & ((pdtype == F16) | (np.abs(x) >= 2**-126))
        np.testing.assert_array_equal(expected[0][ok], cast.view(np.uint16)[ok])
    before = (_core.isa_in_use(), _core.get_num_threads())
    try:
        for isa in _core.isa_supported():
            _core.set_isa(isa)
            for bf16_insn in (True, False):
                _core._set_bf16_instructions(bf16_insn)
                actual = run(False)
                for a, e, what in zip(actual, expected, ("parameters", "compensation")):
                    if e is not None:
                        bad = np.flatnonzero(a != e)
                        assert bad.size == 0, (isa, bf16_insn, what, x[bad[:5]], a[bad[:5]], e[bad[:5]])
    finally:
        _core.set_isa(before[0])
        _core._set_bf16_instructions(True)
