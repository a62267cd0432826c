# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled backend: the same `update`, `grad_norm` and `Stepper` as _fallback.

Generic over the rules of csrc/rules.h: nothing here is written per optimizer.
Each call checks, cheaply and conservatively, that it can take the fast path
(dicts of aligned, native-order float32 or float64 arrays, contiguous in one
layout, shapes and dtypes matching, no written array sharing memory with
another array, valid scalars; or float16/bfloat16 parameters with gradients of
their dtype or float32 and float32 state), gathers every data pointer through
the NumPy C API, releases the GIL for large calls and makes one C call. Any other call goes
to _fallback, which validates it, raises the error or performs the update: both
backends raise identical errors and update the same arrays.
"""
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.math cimport M_PI, cos, hypot, isfinite, pow, sqrt
from libc.stdint cimport int64_t, uint16_t, uint64_t, uintptr_t
from libc.string cimport memset

import functools
import os

import numpy as np

from . import _fallback
from . import _validate as _check

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    enum:
        NPY_HALF      # float16
        NPY_USERDEF   # the first type number of dtypes registered at run time

cdef extern from "fastoptim.h" nogil:
    enum:
        FO_MAX_STATES
        FO_NSLOTS
        FO_SLOT_EMA
        FO_SLOT_KAHAN
        FO_SLOT_ABSMAX
        FO_MAX_HYPER
        FO_MAX_SCALARS
        FO_NUM_RULES
        FO_F32
        FO_F64
        FO_F16
        FO_BF16
        FO_FMT_NATIVE
        FO_FMT_F16
        FO_FMT_BF16
        FO_FMT_Q8
        FO_FMT_Q8_UNSIGNED
        FO_Q8_BLOCK
        FO_ROUND_NEAREST
        FO_ROUND_STOCHASTIC
        FO_ROUND_KAHAN
    ctypedef struct fo_formats:
        int p
        int g
        int state[FO_MAX_STATES]
        int rounding
        uint64_t seed
        const uint64_t *stream
    ctypedef struct fo_span:
        uintptr_t lo
        uintptr_t hi
        int written
    ctypedef struct fo_factors:
        const void *row
        const void *col
        const void *per
        size_t rows
        size_t cols
    ctypedef struct fo_step:
        int64_t t
        double lr
        double h[FO_MAX_HYPER]
        double scalars[FO_MAX_SCALARS]
        unsigned flags
        unsigned decay
        const double *weight_decay
        double grad_scale
        double ema_decay
        int sources
        size_t source_stride
        double source_scale
        const fo_factors *factors
        const fo_formats *formats
    int fo_init(int max_isa)
    int fo_isa_in_use()
    int fo_isa_supported()
    const char *fo_isa_name(int isa)
    void fo_set_num_threads(int n)
    int fo_get_num_threads()
    size_t fo_parallel_threshold(size_t elem_size)
    size_t fo_parallel_threshold_asleep(size_t elem_size)
    void fo_set_parallel_threshold(size_t elem_size, size_t awake, size_t asleep)
    const char *fo_compiler()
    const char *fo_kernel_flags()
    int fo_spans_disjoint(fo_span *s, size_t n)
    int fo_update(int rule, int dtype, size_t k, void **x, const size_t *n, fo_step *s)
    const char *fo_rule_info(int rule, int what)
    unsigned fo_rule_decay(int rule)
    double fo_norm(int dtype, size_t k, void **g, const size_t *n, int *nonfinite)
    int fo_ceiling(int dtype, int nstates, size_t k, void **x, const size_t *n)
    int fo_ceiling_formats(const fo_formats *f, int nstates, size_t k, void **x,
                           const size_t *n)
    void fo_to_float(int format, size_t n, const void *src, float *dst)
    void fo_from_float(int format, int rounding, uint64_t key, uint64_t first, size_t n,
                       const float *src, void *dst)
    uint64_t fo_rounding_key(uint64_t seed, int64_t t, uint64_t stream)
    void fo_q8_encode(int format, size_t n, const float *src, unsigned char *codes,
                      float *absmax)
    void fo_q8_decode(int format, size_t n, const unsigned char *codes, const float *absmax,
                      float *dst)
    const float *fo_q8_map(int format)
    const char *fo_formats_impl()
    int fo_set_bf16_instructions(int on)

cdef extern from "pool.h" nogil:
    int fo_pool_workers()
    const char *fo_pool_wait_name()
    const char *fo_pool_error()
    const char *fo_pool_threads_source()
    long fo_pool_spin_us()
    long fo_pool_pause_us()
    void fo_pool_set_spin_us(long us, long pause_us)
    void fo_pool_debug(int mode, long delay_us)
    void fo_pool_counters(unsigned long *worker_chunks, unsigned long *stale, int reset)

ISA_NAMES = ("baseline", "avx2", "avx512")
cdef int NSLOTS = FO_NSLOTS   # p, g, the state slots, the EMA, Kahan, block maxima (fastoptim.h)


def _dispatch_cap():
    """The cap FASTOPTIM_DISPATCH sets; a value that is not a level warns and
    is ignored (the compiled backend stays, at the best level the CPU has)."""
    cap = os.environ.get("FASTOPTIM_DISPATCH", "").strip().lower()
    if cap in ISA_NAMES:
        return ISA_NAMES.index(cap)
    if cap:
        import warnings
        warnings.warn(f"FASTOPTIM_DISPATCH={cap!r} is not one of {', '.join(ISA_NAMES)}; "
                      "ignored: using the best instruction set this CPU has",
                      RuntimeWarning, stacklevel=2)
    return len(ISA_NAMES) - 1


fo_init(_dispatch_cap())


# --- build and machine information ------------------------------------------

def isa_in_use():
    return fo_isa_name(fo_isa_in_use()).decode()

def isa_supported():
    """Every level this CPU and this build support, lowest first."""
    return list(ISA_NAMES[:fo_isa_supported() + 1])

def set_isa(name):
    """Switch the kernels to level `name` (capped at what the CPU supports);
    returns the level now in use. For tests and benchmarks."""
    return fo_isa_name(fo_init(ISA_NAMES.index(name))).decode()

def set_num_threads(int n):
    fo_set_num_threads(n)

def get_num_threads():
    return fo_get_num_threads()

def pool_info():
    """How threads are run: the pool, its wait policy and its serial thresholds."""
    cdef const char *err = fo_pool_error()
    return {
        "pool": ("fastoptim's own (POSIX threads): the calling thread takes part; fixed "
                 "chunks, each thread's own share first, then what the others left"),
        "threads_from": fo_pool_threads_source().decode(),
        "workers_started": fo_pool_workers(),
        "wait": (f"spin {fo_pool_spin_us()} us (pause {fo_pool_pause_us()} us, then yield), "
                 f"then sleep ({fo_pool_wait_name().decode()})"),
        "spin_us": fo_pool_spin_us(),
        "pause_us": fo_pool_pause_us(),
        "parallel_threshold": {"float32": fo_parallel_threshold(4),
                               "float64": fo_parallel_threshold(8)},
        "parallel_threshold_asleep": {"float32": fo_parallel_threshold_asleep(4),
                                      "float64": fo_parallel_threshold_asleep(8)},
        "pool_error": None if err == NULL else err.decode(),
    }

def set_parallel_threshold(dtype, size_t awake, size_t asleep):
    """Serial thresholds for float32 or float64 (benchmarks that measure them)."""
    fo_set_parallel_threshold(np.dtype(dtype).itemsize, awake, asleep)

def set_spin_us(long us, long pause_us=-1):
    """How long an idle worker spins before it sleeps, and for how much of that on
    the CPU's pause before it yields at each turn (benchmarks and tests)."""
    fo_pool_set_spin_us(us, pause_us)

_POOL_DEBUG = {"normal": 0, "late": 1, "stale": 2, "slow": 3, "never": 4, "no_start": 5}

def _pool_debug(mode="normal", long delay_us=0):
    """Tests only: make workers late, stale, slow, idle or unable to start
    (csrc/pool.h, fo_pool_debug)."""
    fo_pool_debug(_POOL_DEBUG[mode], delay_us)

def _pool_counters(bint reset=False):
    """Tests only: (chunks run by workers, claims abandoned by late workers)."""
    cdef unsigned long chunks = 0, stale = 0
    fo_pool_counters(&chunks, &stale, reset)
    return chunks, stale

def build_info():
    return {
        "parallel_threshold": {"float32": fo_parallel_threshold(4),
                               "float64": fo_parallel_threshold(8)},
        "compiler": fo_compiler().decode(),
        "kernel_flags": fo_kernel_flags().decode(),
    }


def formats_impl():
    """How 16-bit values are converted at the instruction set in use."""
    return fo_formats_impl().decode()


def _set_bf16_instructions(bint on):
    """Tests: use AVX-512 BF16's conversion where the CPU has it (True), or the
    portable one at the avx512 level (False); returns whether it is in use."""
    return bool(fo_set_bf16_instructions(on))


# --- the storage formats' element operations (tests of C against the NumPy twin) ---

def _to_float(int fmt, object bits):
    """16-bit values (uint16 bits, any shape) as float32 (fo_to_float)."""
    cdef cnp.ndarray src = np.ascontiguousarray(bits, dtype=np.uint16)
    cdef cnp.ndarray out = np.empty(src.size, np.float32)
    fo_to_float(fmt, <size_t>src.size, cnp.PyArray_DATA(src), <float *>cnp.PyArray_DATA(out))
    return out.reshape(np.shape(bits))


def _from_float(int fmt, object x, int rounding=FO_ROUND_NEAREST, uint64_t key=0,
                uint64_t first=0):
    """float32 values to 16-bit bits (fo_from_float): nearest, or stochastic
    with `key` from element number `first`."""
    cdef cnp.ndarray src = np.ascontiguousarray(x, dtype=np.float32)
    cdef cnp.ndarray out = np.empty(src.size, np.uint16)
    fo_from_float(fmt, rounding, key, first, <size_t>src.size, <float *>cnp.PyArray_DATA(src),
                  cnp.PyArray_DATA(out))
    return out.reshape(np.shape(x))


def _rounding_key(uint64_t seed, int64_t t, uint64_t stream):
    return fo_rounding_key(seed, t, stream)


def _q8_map(int fmt):
    """The 256 values of a dynamic map (FO_FMT_Q8 signed, FO_FMT_Q8_UNSIGNED)."""
    cdef const float *m = fo_q8_map(fmt)
    if m == NULL:
        raise ValueError(f"no map for format {fmt}")
    return np.array([m[j] for j in range(256)], dtype=np.float32)


def _q8_encode(int fmt, object x):
    """(codes, absmax) of a float32 vector, blocks of FO_Q8_BLOCK from element 0."""
    cdef cnp.ndarray src = np.ascontiguousarray(np.ravel(x), dtype=np.float32)
    cdef size_t n = src.size
    cdef cnp.ndarray codes = np.empty(n, np.uint8)
    cdef cnp.ndarray absmax = np.empty((n + FO_Q8_BLOCK - 1) // FO_Q8_BLOCK, np.float32)
    if fo_q8_map(fmt) == NULL:
        raise ValueError(f"no map for format {fmt}")
    fo_q8_encode(fmt, n, <float *>cnp.PyArray_DATA(src), <unsigned char *>cnp.PyArray_DATA(codes),
                 <float *>cnp.PyArray_DATA(absmax))
    return codes, absmax


def _q8_decode(int fmt, object codes, object absmax):
    cdef cnp.ndarray c = np.ascontiguousarray(np.ravel(codes), dtype=np.uint8)
    cdef cnp.ndarray a = np.ascontiguousarray(absmax, dtype=np.float32)
    cdef size_t n = c.size
    if a.size != (n + FO_Q8_BLOCK - 1) // FO_Q8_BLOCK:
        raise ValueError("one absmax per block")
    cdef cnp.ndarray out = np.empty(n, np.float32)
    if fo_q8_map(fmt) == NULL:
        raise ValueError(f"no map for format {fmt}")
    fo_q8_decode(fmt, n, <unsigned char *>cnp.PyArray_DATA(c), <float *>cnp.PyArray_DATA(a),
                 <float *>cnp.PyArray_DATA(out))
    return out


# --- the rule list (csrc/rules.h) ---------------------------------------------------

cdef enum Kind:
    K_BETA, K_FRACTION, K_EPS, K_NONNEG

cdef dict _KIND = {"beta": K_BETA, "fraction": K_FRACTION, "eps": K_EPS, "nonneg": K_NONNEG}

cdef struct RuleInfo:
    int nstates, nhyper, nscalars
    unsigned state_flag[FO_MAX_STATES]   # slot j present only with this flag (0: always)
    int hyper_kind[FO_MAX_HYPER]
    int scalar_kind[FO_MAX_SCALARS]
    unsigned valid_flags_mask

cdef RuleInfo _rules[FO_NUM_RULES]


def rule_info():
    """{name: (name, states, hyperparameters, flags, scalars)}: csrc/rules.h's
    strings, for the consistency test against _fallback.RULES."""
    return {fo_rule_info(r, 0).decode(): tuple(fo_rule_info(r, w).decode() for w in range(5))
            for r in range(FO_NUM_RULES)}


cdef dict _RULE_ID = {}


cdef _read_rules():
    cdef int r, j
    for r in range(FO_NUM_RULES):
        name, states, hyper, flags, scalars = (fo_rule_info(r, w).decode() for w in range(5))
        _RULE_ID[name] = r
        flag_names = flags.split()
        _rules[r].nstates = len(states.split())
        for j, s in enumerate(states.split()):
            _rules[r].state_flag[j] = (1u << flag_names.index(s.split(":")[1])) if ":" in s else 0
        _rules[r].nhyper = len(hyper.split())
        for j, h in enumerate(hyper.split()):
            _rules[r].hyper_kind[j] = _KIND[h.split(":")[1]]
        _rules[r].nscalars = len(scalars.split())
        for j, s in enumerate(scalars.split()):
            _rules[r].scalar_kind[j] = _KIND[s.split(":")[1]]
        _rules[r].valid_flags_mask = (1u << len(flag_names)) - 1


_read_rules()


cdef inline bint _kind_ok(int kind, double x) noexcept nogil:
    if kind == K_BETA:
        return 0.0 <= x < 1.0
    if kind == K_FRACTION:
        return 0.0 <= x <= 1.0
    if kind == K_EPS:
        return x >= 0.0
    return isfinite(x) and x >= 0.0


cdef inline bint _as_double(object x, double *out):
    """Python and NumPy real numbers; anything else goes to the fallback to be reported."""
    if isinstance(x, float) or type(x) is int or isinstance(x, (np.floating, np.integer)):
        try:
            out[0] = float(x)
        except OverflowError:
            return False
        return True
    return False


cdef inline bint _as_step(object t, int64_t *out):
    if type(t) is not int and isinstance(t, np.integer):
        t = int(t)
    if type(t) is int and 1 <= t <= 2**62:
        out[0] = t
        return True
    return False


cdef inline bint _as_lr(object x, double *out):
    return _as_double(x, out) and isfinite(out[0]) and out[0] >= 0.0


cdef bint _as_values(object values, int n, const int *kinds, double *out):
    """A tuple of n reals, each passing its kind's check."""
    cdef int j
    if type(values) is not tuple or len(<tuple>values) != n:
        return False
    for j in range(n):
        if not (_as_double((<tuple>values)[j], &out[j]) and _kind_ok(kinds[j], out[j])):
            return False
    return True


# --- the fast-path gather ------------------------------------------------------

cdef inline bint _fast_array(PyObject *obj, int typenum, int ndim, cnp.npy_intp *dims,
                             bint c_order, bint written) noexcept:
    if not cnp.PyArray_Check(<object>obj):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a)):
        return False
    if written and not cnp.PyArray_ISWRITEABLE(a):
        return False
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) if c_order else cnp.PyArray_IS_F_CONTIGUOUS(a)):
        return False
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    cdef int j
    for j in range(ndim):
        if d[j] != dims[j]:
            return False
    return True


cdef inline int _dtype_of(int typenum) noexcept nogil:
    """The arithmetic of arrays of this type: float64, else float32."""
    return FO_F64 if typenum == cnp.NPY_DOUBLE else FO_F32


# ml_dtypes' bfloat16 has a type number of its own, registered at run time: it is
# recognised by its name (as _fallback.is_bfloat16) the first time one is seen.
cdef int _BF16_TYPENUM = -1


cdef inline int _storage_of(int typenum) noexcept nogil:
    """FO_F32, FO_F64, FO_F16 or FO_BF16 (their storage), or -1."""
    if typenum == cnp.NPY_FLOAT:
        return FO_F32
    if typenum == cnp.NPY_DOUBLE:
        return FO_F64
    if typenum == NPY_HALF:
        return FO_F16
    if typenum == _BF16_TYPENUM and typenum >= 0:
        return FO_BF16
    return -1


cdef int _learn_bfloat16(cnp.ndarray a) except -1:
    global _BF16_TYPENUM
    cdef int typenum = cnp.PyArray_TYPE(a)
    if _BF16_TYPENUM < 0 and typenum >= NPY_USERDEF and _fallback.is_bfloat16(a.dtype):
        _BF16_TYPENUM = typenum
    return 0


# "W1" -> "dW1", kept so that each call does not build and hash new strings.
cdef dict _dkeys = {}

cdef inline object _dkey(str key):
    cdef PyObject *hit = PyDict_GetItem(_dkeys, key)
    if hit != NULL:
        return <object>hit
    if len(_dkeys) > 4096:
        _dkeys.clear()
    dkey = "d" + key
    _dkeys[key] = dkey
    return dkey


cdef struct Call:
    Py_ssize_t k          # number of parameters
    int typenum           # the parameters': NPY_FLOAT, NPY_DOUBLE, NPY_HALF, bfloat16
    int gtypenum          # the gradients' (a 16-bit parameter's: its own or NPY_FLOAT)
    int stypenum          # the state's (NPY_FLOAT for 16-bit parameters)
    void **x              # x[s * k + i]: slot s (p, g, state slots) of parameter i
    size_t *n
    PyObject **refs       # every array gathered, held until _free
    Py_ssize_t nrefs
    fo_span *spans        # the one allocation: spans, then x, refs and n
    Py_ssize_t nspans
    size_t total          # elements in all
    double *wd            # per-array weight decay, or NULL


cdef inline void _init(Call *c) noexcept:
    memset(c, 0, sizeof(Call))


cdef inline void _free(Call *c):
    cdef Py_ssize_t j
    for j in range(c.nrefs):
        Py_XDECREF(c.refs[j])
    PyMem_Free(c.spans)
    PyMem_Free(c.wd)


cdef bint _gather(Call *c, object parameters, object grads, tuple states) except -1:
    """Fill `c` for the fast path; False sends the call to the fallback.
    `states` holds one dict (or None, an absent slot) per state slot."""
    cdef PyObject *dicts[FO_NSLOTS]   # the dicts of slots 1.. (grads, then states)
    cdef Py_ssize_t ns = len(states), s
    if type(parameters) is not dict or type(grads) is not dict or ns > NSLOTS - 2:
        return False
    dicts[1] = <PyObject *>grads
    for s in range(ns):
        d = states[s]
        if d is not None and type(d) is not dict:
            return False
        dicts[2 + s] = <PyObject *>d if d is not None else NULL
    for s in range(ns, NSLOTS - 2):
        dicts[2 + s] = NULL
    cdef Py_ssize_t k = len(<dict>parameters)
    c.k = k
    if k == 0:
        return True
    # refs holds a reference to every array until _free: with the GIL released,
    # another thread could otherwise free an array mid-update.
    c.spans = <fo_span *>PyMem_Malloc(
        k * (NSLOTS * (sizeof(fo_span) + sizeof(void *) + sizeof(PyObject *)) + sizeof(size_t)))
    if c.spans == NULL:
        raise MemoryError()
    c.x = <void **>(c.spans + NSLOTS * k)
    c.refs = <PyObject **>(c.x + NSLOTS * k)
    c.n = <size_t *>(c.refs + NSLOTS * k)
    memset(c.x, 0, NSLOTS * k * sizeof(void *))

    cdef Py_ssize_t i = 0
    cdef int ndim
    cdef bint c_order
    cdef cnp.ndarray p
    cdef cnp.npy_intp *dims
    cdef PyObject *arr
    cdef object dkey
    cdef size_t nbytes
    cdef uintptr_t lo
    cdef int want, storage
    for key, value in (<dict>parameters).items():
        if type(key) is not str or not cnp.PyArray_Check(value):
            return False
        p = <cnp.ndarray>value
        if i == 0:
            _learn_bfloat16(p)
            c.typenum = cnp.PyArray_TYPE(p)
            storage = _storage_of(c.typenum)
            if storage < 0:
                return False
            c.stypenum = cnp.NPY_FLOAT if storage == FO_F16 or storage == FO_BF16 else c.typenum
            c.gtypenum = -1  # the first gradient's, when it may be float32
        ndim = cnp.PyArray_NDIM(p)
        dims = cnp.PyArray_DIMS(p)
        c_order = cnp.PyArray_IS_C_CONTIGUOUS(p)
        if not _fast_array(<PyObject *>p, c.typenum, ndim, dims, c_order, True):
            return False
        c.n[i] = <size_t>cnp.PyArray_SIZE(p)
        c.total += c.n[i]
        dkey = _dkey(<str>key)
        for s in range(NSLOTS):
            if s == 0:
                arr = <PyObject *>p
            elif dicts[s] == NULL:
                continue
            else:
                arr = PyDict_GetItem(<object>dicts[s], dkey)
                if arr == NULL:
                    return False
                if s == 1 and c.gtypenum < 0:
                    c.gtypenum = c.typenum
                    if (c.stypenum != c.typenum and cnp.PyArray_Check(<object>arr)
                            and cnp.PyArray_TYPE(<cnp.ndarray>arr) == cnp.NPY_FLOAT):
                        c.gtypenum = cnp.NPY_FLOAT
                want = c.gtypenum if s == 1 else c.stypenum
                if not _fast_array(arr, want, ndim, dims, c_order, s != 1):
                    return False
            nbytes = <size_t>cnp.PyArray_NBYTES(<cnp.ndarray>arr)
            Py_INCREF(<object>arr)
            c.refs[c.nrefs] = arr
            c.nrefs += 1
            lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>arr)
            c.x[s * k + i] = <void *>lo
            c.spans[c.nspans].lo = lo
            c.spans[c.nspans].hi = lo + nbytes
            c.spans[c.nspans].written = s != 1
            c.nspans += 1
        i += 1
    if i != k:  # the dict changed size while we read it
        return False
    return fo_spans_disjoint(c.spans, c.nspans) == 1


cdef bint _decay(Call *c, object parameters, object weight_decay) except -1:
    """Per-array weight decay into c.wd (left NULL when it is zero everywhere):
    one real for all, or a dict with exactly the parameters' keys."""
    cdef double x
    cdef Py_ssize_t i = 0
    cdef PyObject *item
    cdef bint any_decay = False
    if type(weight_decay) is not dict:
        if not (_as_double(weight_decay, &x) and _kind_ok(K_NONNEG, x)):
            return False
        if x == 0.0 or c.k == 0:
            return True
        c.wd = <double *>PyMem_Malloc(c.k * sizeof(double))
        if c.wd == NULL:
            raise MemoryError()
        for i in range(c.k):
            c.wd[i] = x
        return True
    if len(<dict>weight_decay) != c.k:
        return False
    if c.k == 0:
        return True
    c.wd = <double *>PyMem_Malloc(c.k * sizeof(double))
    if c.wd == NULL:
        raise MemoryError()
    for key in <dict>parameters:  # the order _gather used
        if i >= c.k:
            return False
        item = PyDict_GetItem(<dict>weight_decay, key)
        if item == NULL or not (_as_double(<object>item, &x) and _kind_ok(K_NONNEG, x)):
            return False
        c.wd[i] = x
        any_decay = any_decay or x != 0.0
        i += 1
    if i != c.k:
        return False
    if not any_decay:
        PyMem_Free(c.wd)
        c.wd = NULL
    return True


# Below this many elements a call keeps the GIL: releasing and retaking it costs
# more than the update.
cdef size_t NOGIL_MIN = 8192


# --- dict-level calls --------------------------------------------------------------

def update(rule, parameters, grads, states, t, learning_rate, hyper, *, flags=0,
           weight_decay=0.0, decay=0, grad_scale=1.0, scalars=(), names=None,
           state_names=None):
    """One step of `rule` over dicts of arrays, in place: _fallback.update's
    contract. Returns the new scalar state (a tuple)."""
    cdef PyObject *hit = PyDict_GetItem(_RULE_ID, rule) if type(rule) is str else NULL
    cdef int r, j
    cdef fo_step st
    cdef fo_formats fmt
    cdef Call c
    cdef RuleInfo *info
    cdef unsigned f = 0
    cdef int rc, dtype
    if (hit != NULL and type(flags) is int and type(decay) is int and 0 <= decay < 4096
            and type(states) is tuple and type(hyper) is tuple and type(scalars) is tuple):
        r = <int><object>hit
        info = &_rules[r]
        f = <unsigned>flags if 0 <= flags < 64 else ~0u
        if (_as_step(t, &st.t) and _as_lr(learning_rate, &st.lr)
                and _as_values(hyper, info.nhyper, info.hyper_kind, st.h)
                and _as_values(scalars, info.nscalars, info.scalar_kind, st.scalars)
                and _as_double(grad_scale, &st.grad_scale) and isfinite(st.grad_scale)
                and (f & ~info.valid_flags_mask) == 0
                and len(<tuple>states) == info.nstates and _states_match(info, states, f)):
            st.flags = f
            st.decay = <unsigned>decay
            st.ema_decay = 0.0
            st.sources = 1
            st.factors = NULL
            st.formats = NULL
            _init(&c)
            try:
                if (_gather(&c, parameters, grads, states)
                        and _decay(&c, parameters, weight_decay)):
                    st.weight_decay = c.wd
                    # no arrays: the rule still checks its flags and decay style and
                    # advances its scalar state
                    dtype = _dtype_of(c.typenum) if c.k else FO_F64
                    if c.k and c.stypenum != c.typenum:
                        # 16-bit parameters: float32 arithmetic and state, rounded to nearest
                        memset(&fmt, 0, sizeof(fmt))
                        fmt.p = _storage_of(c.typenum)
                        fmt.g = fmt.p if c.gtypenum == c.typenum else FO_FMT_NATIVE
                        fmt.rounding = FO_ROUND_NEAREST
                        st.formats = &fmt
                    if c.total < NOGIL_MIN:
                        rc = fo_update(r, dtype, c.k, c.x, c.n, &st)
                    else:
                        with nogil:
                            rc = fo_update(r, dtype, c.k, c.x, c.n, &st)
                    if rc == 0:
                        return tuple(st.scalars[j] for j in range(info.nscalars))
            finally:
                _free(&c)
    # (no closure here: Cython would give every call, the fast ones too, a scope object)
    return _fallback.update(rule, parameters, grads, states, t, learning_rate, hyper,
                            flags=flags, weight_decay=weight_decay, decay=decay,
                            grad_scale=grad_scale, scalars=scalars, names=names,
                            state_names=state_names, checked=functools.partial(
                                _warn_numpy_call, rule, parameters, grads, states,
                                state_names, t))


def _warn_numpy_call(rule, parameters, grads, states, state_names, t):
    """update's inputs are valid and nothing is written yet: say why its step is NumPy's."""
    _check.warn_numpy_step(f"this {rule} step", _check.numpy_call_reason(
        parameters, grads, states, state_names or _fallback.RULES[rule].states, t))


cdef bint _states_match(RuleInfo *info, tuple states, unsigned f):
    """Is each state slot given exactly when the flags need it?"""
    cdef int j
    cdef unsigned need
    for j in range(info.nstates):
        need = info.state_flag[j]
        if (states[j] is not None) != (need == 0 or (f & need) != 0):
            return False
    return True


def grad_norm(parameters, grads):
    """(the global norm of the gradients, all elements finite), in a fixed order
    (the same for any thread count), right for any finite values."""
    cdef Call c
    cdef int bad = 0, dtype
    cdef double norm = 0.0
    _init(&c)
    try:
        if not _gather(&c, parameters, grads, ()):
            return _fallback.grad_norm(parameters, grads)
        if c.k:
            dtype = _storage_of(c.gtypenum)
            if c.total < NOGIL_MIN:
                norm = fo_norm(dtype, c.k, c.x + c.k, c.n, &bad)
            else:
                with nogil:
                    norm = fo_norm(dtype, c.k, c.x + c.k, c.n, &bad)
    finally:
        _free(&c)
    return norm, not bad


def ceiling(parameters, grads, *states):
    """The traffic of an update that reads g and reads and writes p and up to four
    state dicts, with trivial arithmetic: x += g for each (benchmarks only).
    Takes the fast path's inputs only."""
    cdef Call c
    cdef int ns = len(states)
    if ns > FO_MAX_STATES + 1:
        raise ValueError(f"ceiling takes at most {FO_MAX_STATES + 1} state dicts")
    _init(&c)
    try:
        if not _gather(&c, parameters, grads, tuple(states)) or c.stypenum != c.typenum:
            raise ValueError("ceiling takes contiguous float32/float64 arrays only")
        if c.k:
            if c.total < NOGIL_MIN:
                fo_ceiling(_dtype_of(c.typenum), ns, c.k, c.x, c.n)
            else:
                with nogil:
                    fo_ceiling(_dtype_of(c.typenum), ns, c.k, c.x, c.n)
    finally:
        _free(&c)


include "_stepper.pxi"
