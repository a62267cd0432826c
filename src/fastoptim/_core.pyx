# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled backend: same functions and signatures as _fallback.

Each call checks, cheaply and conservatively, that it can take the fast path
(dicts of aligned, native-order float32 or float64 arrays, contiguous in one
layout, shapes and dtypes matching, no written array sharing memory with
another array, valid scalars), gathers every data pointer through the NumPy C
API, releases the GIL and makes one C call for the whole dict. Any other call
goes to _fallback, which validates it, raises the error or performs the update:
both backends raise identical errors and update the same arrays.
"""
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.math cimport isfinite, sqrt
from libc.stdint cimport int64_t, uintptr_t

import os

import numpy as np

from . import _fallback

cnp.import_array()

cdef extern from "fastoptim.h" nogil:
    ctypedef struct fo_span:
        uintptr_t lo
        uintptr_t hi
        int written
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
    void fo_gd_f32(size_t k, float **p, float **g, size_t *n, double lr)
    void fo_gd_f64(size_t k, double **p, double **g, size_t *n, double lr)
    void fo_momentum_f32(size_t k, float **p, float **g, float **v, size_t *n,
                         double beta, double lr)
    void fo_momentum_f64(size_t k, double **p, double **g, double **v, size_t *n,
                         double beta, double lr)
    void fo_adam_f32(size_t k, float **p, float **g, float **m, float **v, size_t *n,
                     int64_t t, double lr, double beta1, double beta2, double eps)
    void fo_adam_f64(size_t k, double **p, double **g, double **m, double **v, size_t *n,
                     int64_t t, double lr, double beta1, double beta2, double eps)
    void fo_ceiling_adam_f32(size_t k, float **p, float **g, float **m, float **v, size_t *n)
    void fo_ceiling_adam_f64(size_t k, double **p, double **g, double **m, double **v,
                             size_t *n)

    # the family (fastoptim.h)
    ctypedef struct fo_sgd_opts:
        double lr, momentum, dampening
        int nesterov, first, course
        double grad_scale
        const double *weight_decay
    ctypedef struct fo_adam_opts:
        int64_t t
        double lr, beta1, beta2, eps
        int decoupled
        double grad_scale
        const double *weight_decay
    ctypedef struct fo_adagrad_opts:
        int64_t t
        double lr, lr_decay, eps
        double grad_scale
        const double *weight_decay
    ctypedef struct fo_rmsprop_opts:
        double lr, alpha, eps, momentum
        double grad_scale
        const double *weight_decay
    ctypedef struct fo_lion_opts:
        double lr, beta1, beta2
        double grad_scale
        const double *weight_decay
    void fo_sgd_f32(size_t k, float **p, float **g, float **b, size_t *n, const fo_sgd_opts *o)
    void fo_sgd_f64(size_t k, double **p, double **g, double **b, size_t *n,
                    const fo_sgd_opts *o)
    void fo_adamx_f32(size_t k, float **p, float **g, float **m, float **v, float **vmax,
                      size_t *n, const fo_adam_opts *o)
    void fo_adamx_f64(size_t k, double **p, double **g, double **m, double **v, double **vmax,
                      size_t *n, const fo_adam_opts *o)
    double fo_nadam_f32(size_t k, float **p, float **g, float **m, float **v, size_t *n,
                        const fo_adam_opts *o, double momentum_decay, double mu_product)
    double fo_nadam_f64(size_t k, double **p, double **g, double **m, double **v, size_t *n,
                        const fo_adam_opts *o, double momentum_decay, double mu_product)
    void fo_radam_f32(size_t k, float **p, float **g, float **m, float **v, size_t *n,
                      const fo_adam_opts *o)
    void fo_radam_f64(size_t k, double **p, double **g, double **m, double **v, size_t *n,
                      const fo_adam_opts *o)
    void fo_adamax_f32(size_t k, float **p, float **g, float **m, float **u, size_t *n,
                       const fo_adam_opts *o)
    void fo_adamax_f64(size_t k, double **p, double **g, double **m, double **u, size_t *n,
                       const fo_adam_opts *o)
    void fo_adagrad_f32(size_t k, float **p, float **g, float **s, size_t *n,
                        const fo_adagrad_opts *o)
    void fo_adagrad_f64(size_t k, double **p, double **g, double **s, size_t *n,
                        const fo_adagrad_opts *o)
    void fo_rmsprop_f32(size_t k, float **p, float **g, float **sq, float **ga, float **b,
                        size_t *n, const fo_rmsprop_opts *o)
    void fo_rmsprop_f64(size_t k, double **p, double **g, double **sq, double **ga, double **b,
                        size_t *n, const fo_rmsprop_opts *o)
    void fo_lion_f32(size_t k, float **p, float **g, float **m, size_t *n, const fo_lion_opts *o)
    void fo_lion_f64(size_t k, double **p, double **g, double **m, size_t *n,
                     const fo_lion_opts *o)
    double fo_sumsq_f32(size_t k, float **g, size_t *n, int *nonfinite)
    double fo_sumsq_f64(size_t k, double **g, size_t *n, int *nonfinite)
    void fo_ceiling_f32(size_t k, float **p, float **g, float **s1, float **s2, float **s3,
                        size_t *n)
    void fo_ceiling_f64(size_t k, double **p, double **g, double **s1, double **s2,
                        double **s3, size_t *n)

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


def _dispatch_cap():
    cap = os.environ.get("FASTOPTIM_DISPATCH", "").strip().lower()
    if not cap:
        return len(ISA_NAMES) - 1
    if cap not in ISA_NAMES:
        raise ImportError(
            f"FASTOPTIM_DISPATCH={cap!r}: expected one of {', '.join(ISA_NAMES)}")
    return ISA_NAMES.index(cap)


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


# --- the fast-path gather ------------------------------------------------------

cdef struct Call:
    Py_ssize_t k          # number of parameters
    int nstreams          # p, g, then the state streams
    int typenum           # NPY_FLOAT or NPY_DOUBLE
    void **ptr            # ptr[s * k + i]: stream s of parameter i
    size_t *n
    Py_ssize_t nrefs      # arrays held in ptr's second half (see _gather)
    fo_span *spans        # the one allocation: spans, then ptr, then n
    size_t total          # elements in all
    double *wd            # per-array weight decay (the family), or NULL


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


cdef bint _gather(Call *c, object parameters, object grads, object s0, object s1,
                  object s2=None, object s3=None) except -1:
    """Fill `c` for the fast path; False sends the call to the fallback.
    Streams 2.. come from s0, s1, ... (the first c.nstreams - 2 of them)."""
    cdef PyObject *dicts[6]   # the dicts holding streams 1.. (grads, then state)
    dicts[1] = <PyObject *>grads
    dicts[2] = <PyObject *>s0
    dicts[3] = <PyObject *>s1
    dicts[4] = <PyObject *>s2
    dicts[5] = <PyObject *>s3
    if type(parameters) is not dict:
        return False
    cdef int s
    for s in range(1, c.nstreams):
        if type(<object>dicts[s]) is not dict:
            return False
    cdef Py_ssize_t k = len(<dict>parameters)
    c.k = k
    if k == 0:
        return True
    # ptr's second half holds a reference to every array until _free: with the
    # GIL released, another thread could otherwise free an array mid-update.
    c.spans = <fo_span *>PyMem_Malloc(
        c.nstreams * k * (sizeof(fo_span) + 2 * sizeof(void *)) + k * sizeof(size_t))
    if c.spans == NULL:
        raise MemoryError()
    c.ptr = <void **>(c.spans + c.nstreams * k)
    c.n = <size_t *>(c.ptr + 2 * c.nstreams * k)

    cdef Py_ssize_t i = 0
    cdef int ndim
    cdef bint c_order
    cdef cnp.ndarray p
    cdef cnp.npy_intp *dims
    cdef PyObject *arr
    cdef object dkey
    cdef size_t nbytes
    cdef uintptr_t lo
    for key, value in (<dict>parameters).items():
        if type(key) is not str or not cnp.PyArray_Check(value):
            return False
        p = <cnp.ndarray>value
        if i == 0:
            c.typenum = cnp.PyArray_TYPE(p)
            if c.typenum != cnp.NPY_FLOAT and c.typenum != cnp.NPY_DOUBLE:
                return False
        ndim = cnp.PyArray_NDIM(p)
        dims = cnp.PyArray_DIMS(p)
        c_order = cnp.PyArray_IS_C_CONTIGUOUS(p)
        if not _fast_array(<PyObject *>p, c.typenum, ndim, dims, c_order, True):
            return False
        c.n[i] = <size_t>cnp.PyArray_SIZE(p)
        c.total += c.n[i]
        nbytes = c.n[i] * <size_t>cnp.PyArray_ITEMSIZE(p)
        dkey = _dkey(<str>key)
        for s in range(c.nstreams):
            if s == 0:
                arr = <PyObject *>p
            else:
                arr = PyDict_GetItem(<object>dicts[s], dkey)
                if arr == NULL or not _fast_array(arr, c.typenum, ndim, dims, c_order, s != 1):
                    return False
            Py_INCREF(<object>arr)
            c.ptr[c.nstreams * k + c.nrefs] = <void *>arr
            c.nrefs += 1
            lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>arr)
            c.ptr[s * k + i] = <void *>lo
            c.spans[s * k + i].lo = lo
            c.spans[s * k + i].hi = lo + nbytes
            c.spans[s * k + i].written = s != 1
        i += 1
    if i != k:  # the dict changed size while we read it
        return False
    return fo_spans_disjoint(c.spans, c.nstreams * k) == 1


cdef inline void _free(Call *c):
    cdef Py_ssize_t j
    if c.spans != NULL:
        for j in range(c.nrefs):
            Py_XDECREF(<PyObject *>c.ptr[c.nstreams * c.k + j])
    PyMem_Free(c.spans)
    PyMem_Free(c.wd)


# Below this many elements a call keeps the GIL: releasing and retaking it costs
# more than the update.
cdef size_t NOGIL_MIN = 8192


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


cdef inline bint _lr_ok(double x):
    return isfinite(x) and x >= 0.0

cdef inline bint _beta_ok(double x):
    return 0.0 <= x < 1.0


# --- the updates ---------------------------------------------------------------
# Each update: scalars checked, arrays gathered, then one C call (without the GIL
# for large calls). Whatever the fast path does not take goes to _fallback.

cdef void _gd(Call *c, double lr) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_gd_f32(c.k, <float **>c.ptr, <float **>(c.ptr + c.k), c.n, lr)
    else:
        fo_gd_f64(c.k, <double **>c.ptr, <double **>(c.ptr + c.k), c.n, lr)


cdef void _momentum(Call *c, double beta, double lr) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_momentum_f32(c.k, <float **>c.ptr, <float **>(c.ptr + c.k),
                        <float **>(c.ptr + 2 * c.k), c.n, beta, lr)
    else:
        fo_momentum_f64(c.k, <double **>c.ptr, <double **>(c.ptr + c.k),
                        <double **>(c.ptr + 2 * c.k), c.n, beta, lr)


cdef void _adam(Call *c, int64_t t, double lr, double b1, double b2,
                double eps) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_adam_f32(c.k, <float **>c.ptr, <float **>(c.ptr + c.k),
                    <float **>(c.ptr + 2 * c.k), <float **>(c.ptr + 3 * c.k), c.n,
                    t, lr, b1, b2, eps)
    else:
        fo_adam_f64(c.k, <double **>c.ptr, <double **>(c.ptr + c.k),
                    <double **>(c.ptr + 2 * c.k), <double **>(c.ptr + 3 * c.k), c.n,
                    t, lr, b1, b2, eps)


cdef void _ceiling(Call *c) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_ceiling_adam_f32(c.k, <float **>c.ptr, <float **>(c.ptr + c.k),
                            <float **>(c.ptr + 2 * c.k), <float **>(c.ptr + 3 * c.k), c.n)
    else:
        fo_ceiling_adam_f64(c.k, <double **>c.ptr, <double **>(c.ptr + c.k),
                            <double **>(c.ptr + 2 * c.k), <double **>(c.ptr + 3 * c.k), c.n)


cdef inline void _init(Call *c, int nstreams) noexcept:
    c.nstreams = nstreams
    c.k = 0
    c.total = 0
    c.spans = NULL
    c.nrefs = 0
    c.wd = NULL


def gd(parameters, grads, learning_rate):
    """p -= learning_rate * g"""
    cdef double lr
    cdef Call c
    if not (_as_double(learning_rate, &lr) and _lr_ok(lr)):
        return _fallback.gd(parameters, grads, learning_rate)
    _init(&c, 2)
    try:
        if not _gather(&c, parameters, grads, None, None):
            return _fallback.gd(parameters, grads, learning_rate)
        if c.total < NOGIL_MIN:
            _gd(&c, lr)
        else:
            with nogil:
                _gd(&c, lr)
    finally:
        _free(&c)


def momentum(parameters, grads, v, beta, learning_rate):
    """v = beta*v + (1-beta)*g;  p -= learning_rate * v"""
    cdef double b, lr
    cdef Call c
    if not (_as_double(beta, &b) and _beta_ok(b)
            and _as_double(learning_rate, &lr) and _lr_ok(lr)):
        return _fallback.momentum(parameters, grads, v, beta, learning_rate)
    _init(&c, 3)
    try:
        if not _gather(&c, parameters, grads, v, None):
            return _fallback.momentum(parameters, grads, v, beta, learning_rate)
        if c.total < NOGIL_MIN:
            _momentum(&c, b, lr)
        else:
            with nogil:
                _momentum(&c, b, lr)
    finally:
        _free(&c)


def adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon):
    """m = b1*m + (1-b1)*g;  s = b2*s + (1-b2)*g*g;
    p -= lr * (m/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps)"""
    cdef double lr, b1, b2, eps
    cdef int64_t step
    cdef Call c
    if not (_as_step(t, &step)
            and _as_double(learning_rate, &lr) and _lr_ok(lr)
            and _as_double(beta1, &b1) and _beta_ok(b1)
            and _as_double(beta2, &b2) and _beta_ok(b2)
            and _as_double(epsilon, &eps) and eps >= 0.0):
        return _fallback.adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon)
    _init(&c, 4)
    try:
        if not _gather(&c, parameters, grads, v, s):
            return _fallback.adam(parameters, grads, v, s, t, learning_rate, beta1, beta2,
                                  epsilon)
        if c.total < NOGIL_MIN:
            _adam(&c, step, lr, b1, b2, eps)
        else:
            with nogil:
                _adam(&c, step, lr, b1, b2, eps)
    finally:
        _free(&c)


def ceiling_adam(parameters, grads, v, s):
    """The Adam step's memory traffic with trivial arithmetic (benchmarks only):
    m += g; s += g; p += g. Takes the fast path's inputs only."""
    cdef Call c
    _init(&c, 4)
    try:
        if not _gather(&c, parameters, grads, v, s):
            raise ValueError("ceiling_adam takes contiguous float32/float64 arrays only")
        if c.total < NOGIL_MIN:
            _ceiling(&c)
        else:
            with nogil:
                _ceiling(&c)
    finally:
        _free(&c)



# --- the family ---------------------------------------------------------------------
# Same pattern: scalars checked, arrays gathered (optional state dicts only when
# their option is on), per-array weight decay read, one C call. Anything else
# goes to _fallback, which raises the error or performs the update.

cdef inline bint _nonneg_ok(double x):
    return isfinite(x) and x >= 0.0

cdef inline bint _as_flag(object x, int *out):
    if x is True or x is False or isinstance(x, np.bool_):
        out[0] = 1 if x else 0
        return True
    return False

cdef inline bint _as_lr(object x, double *out):
    return _as_double(x, out) and _lr_ok(out[0])

cdef inline bint _as_beta(object x, double *out):
    return _as_double(x, out) and _beta_ok(out[0])

cdef inline bint _as_eps(object x, double *out):
    return _as_double(x, out) and out[0] >= 0.0

cdef inline bint _as_nonneg(object x, double *out):
    return _as_double(x, out) and _nonneg_ok(out[0])

cdef inline bint _as_scale(object x, double *out):
    return _as_double(x, out) and isfinite(out[0])


cdef bint _decay(Call *c, object parameters, object weight_decay) except -1:
    """Per-array weight decay into c.wd (left NULL when it is zero everywhere):
    one real for all, or a dict with exactly the parameters' keys."""
    cdef double x
    cdef Py_ssize_t i = 0
    cdef PyObject *item
    cdef bint any_decay = False
    if type(weight_decay) is not dict:
        if not _as_nonneg(weight_decay, &x):
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
        if item == NULL or not _as_nonneg(<object>item, &x):
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


cdef inline void **_sp(Call *c, int s) noexcept nogil:
    """Stream s's pointers, or NULL for an absent stream (s < 0)."""
    return c.ptr + s * c.k if s >= 0 else NULL


cdef void _sgd(Call *c, int sb, fo_sgd_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_sgd_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, sb), c.n, o)
    else:
        fo_sgd_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, sb), c.n, o)


def sgd(parameters, grads, momentum_buffer, t, learning_rate, momentum, dampening, nesterov,
        weight_decay=0.0, grad_scale=1.0, course=False):
    """b = mu*b + (1-dampening)*gi (torch: b = gi at t == 1);
    u = gi + mu*b if nesterov (course: (1-dampening)*gi + mu*b) else b;  p -= lr*u.
    momentum_buffer None: p -= lr*gi."""
    cdef fo_sgd_opts o
    cdef int64_t step
    cdef Call c
    args = (parameters, grads, momentum_buffer, t, learning_rate, momentum, dampening,
            nesterov, weight_decay, grad_scale, course)
    if not (_as_step(t, &step) and _as_lr(learning_rate, &o.lr)
            and _as_beta(momentum, &o.momentum)
            and _as_double(dampening, &o.dampening) and 0.0 <= o.dampening <= 1.0
            and _as_flag(nesterov, &o.nesterov) and _as_scale(grad_scale, &o.grad_scale)
            and _as_flag(course, &o.course)
            and (momentum_buffer is not None or not o.nesterov)):
        return _fallback.sgd(*args)
    o.first = step == 1 and not o.course
    cdef bint has_b = momentum_buffer is not None
    _init(&c, 2 + has_b)
    try:
        if not (_gather(&c, parameters, grads, momentum_buffer, None)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.sgd(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _sgd(&c, 2 if has_b else -1, &o)
        else:
            with nogil:
                _sgd(&c, 2 if has_b else -1, &o)
    finally:
        _free(&c)


cdef void _adamx(Call *c, int sm, fo_adam_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_adamx_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2),
                     <float **>_sp(c, 3), <float **>_sp(c, sm), c.n, o)
    else:
        fo_adamx_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                     <double **>_sp(c, 3), <double **>_sp(c, sm), c.n, o)


cdef inline bint _adam_opts(fo_adam_opts *o, object t, object learning_rate, object beta1,
                            object beta2, object epsilon, object grad_scale):
    return (_as_step(t, &o.t) and _as_lr(learning_rate, &o.lr) and _as_beta(beta1, &o.beta1)
            and _as_beta(beta2, &o.beta2) and _as_eps(epsilon, &o.eps)
            and _as_scale(grad_scale, &o.grad_scale))


def adam_ext(parameters, grads, v, s, max_s, t, learning_rate, beta1, beta2, epsilon,
             weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """Adam (weight decay as L2) or AdamW (decoupled), amsgrad when max_s is given:
    max_s = max(max_s, s), used in place of s."""
    cdef fo_adam_opts o
    cdef Call c
    args = (parameters, grads, v, s, max_s, t, learning_rate, beta1, beta2, epsilon,
            weight_decay, decoupled, grad_scale)
    if not (_adam_opts(&o, t, learning_rate, beta1, beta2, epsilon, grad_scale)
            and _as_flag(decoupled, &o.decoupled)):
        return _fallback.adam_ext(*args)
    cdef bint ams = max_s is not None
    _init(&c, 4 + ams)
    try:
        if not (_gather(&c, parameters, grads, v, s, max_s)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.adam_ext(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _adamx(&c, 4 if ams else -1, &o)
        else:
            with nogil:
                _adamx(&c, 4 if ams else -1, &o)
    finally:
        _free(&c)


cdef double _nadam(Call *c, fo_adam_opts *o, double md, double prod) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        return fo_nadam_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2),
                            <float **>_sp(c, 3), c.n, o, md, prod)
    return fo_nadam_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                        <double **>_sp(c, 3), c.n, o, md, prod)


def nadam(parameters, grads, v, s, t, mu_product, learning_rate, beta1, beta2, epsilon,
          momentum_decay, weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """NAdam (torch's): returns mu_product * mu_t, the product to pass next step."""
    cdef fo_adam_opts o
    cdef double md, prod
    cdef Call c
    args = (parameters, grads, v, s, t, mu_product, learning_rate, beta1, beta2, epsilon,
            momentum_decay, weight_decay, decoupled, grad_scale)
    if not (_adam_opts(&o, t, learning_rate, beta1, beta2, epsilon, grad_scale)
            and _as_flag(decoupled, &o.decoupled) and _as_nonneg(momentum_decay, &md)
            and _as_double(mu_product, &prod) and 0.0 <= prod <= 1.0):
        return _fallback.nadam(*args)
    _init(&c, 4)
    try:
        if not (_gather(&c, parameters, grads, v, s)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.nadam(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            prod = _nadam(&c, &o, md, prod)
        else:
            with nogil:
                prod = _nadam(&c, &o, md, prod)
    finally:
        _free(&c)
    return prod


cdef void _radam(Call *c, fo_adam_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_radam_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2),
                     <float **>_sp(c, 3), c.n, o)
    else:
        fo_radam_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                     <double **>_sp(c, 3), c.n, o)


def radam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon,
          weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """RAdam (torch's): rectified once rho_t > 5, epsilon on the uncorrected root."""
    cdef fo_adam_opts o
    cdef Call c
    args = (parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon, weight_decay,
            decoupled, grad_scale)
    if not (_adam_opts(&o, t, learning_rate, beta1, beta2, epsilon, grad_scale)
            and _as_flag(decoupled, &o.decoupled)):
        return _fallback.radam(*args)
    _init(&c, 4)
    try:
        if not (_gather(&c, parameters, grads, v, s)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.radam(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _radam(&c, &o)
        else:
            with nogil:
                _radam(&c, &o)
    finally:
        _free(&c)


cdef void _adamax(Call *c, fo_adam_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_adamax_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2),
                      <float **>_sp(c, 3), c.n, o)
    else:
        fo_adamax_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                      <double **>_sp(c, 3), c.n, o)


def adamax(parameters, grads, v, exp_inf, t, learning_rate, beta1, beta2, epsilon,
           weight_decay=0.0, grad_scale=1.0):
    """m = b1*m + (1-b1)*gi;  exp_inf = max(b2*exp_inf, |gi| + eps);
    p -= lr/(1-b1^t) * m/exp_inf."""
    cdef fo_adam_opts o
    cdef Call c
    args = (parameters, grads, v, exp_inf, t, learning_rate, beta1, beta2, epsilon, weight_decay,
            grad_scale)
    if not _adam_opts(&o, t, learning_rate, beta1, beta2, epsilon, grad_scale):
        return _fallback.adamax(*args)
    o.decoupled = 0
    _init(&c, 4)
    try:
        if not (_gather(&c, parameters, grads, v, exp_inf)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.adamax(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _adamax(&c, &o)
        else:
            with nogil:
                _adamax(&c, &o)
    finally:
        _free(&c)


cdef void _adagrad(Call *c, fo_adagrad_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_adagrad_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2), c.n, o)
    else:
        fo_adagrad_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                       c.n, o)


def adagrad(parameters, grads, sum_, t, learning_rate, lr_decay, epsilon, weight_decay=0.0,
            grad_scale=1.0):
    """sum += gi*gi;  p -= lr/(1 + (t-1)*lr_decay) * gi/(sqrt(sum) + eps)."""
    cdef fo_adagrad_opts o
    cdef Call c
    args = (parameters, grads, sum_, t, learning_rate, lr_decay, epsilon, weight_decay,
            grad_scale)
    if not (_as_step(t, &o.t) and _as_lr(learning_rate, &o.lr)
            and _as_nonneg(lr_decay, &o.lr_decay) and _as_eps(epsilon, &o.eps)
            and _as_scale(grad_scale, &o.grad_scale)):
        return _fallback.adagrad(*args)
    _init(&c, 3)
    try:
        if not (_gather(&c, parameters, grads, sum_, None)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.adagrad(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _adagrad(&c, &o)
        else:
            with nogil:
                _adagrad(&c, &o)
    finally:
        _free(&c)


cdef void _rmsprop(Call *c, int sga, int sb, fo_rmsprop_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_rmsprop_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2),
                       <float **>_sp(c, sga), <float **>_sp(c, sb), c.n, o)
    else:
        fo_rmsprop_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2),
                       <double **>_sp(c, sga), <double **>_sp(c, sb), c.n, o)


def rmsprop(parameters, grads, square_avg, grad_avg, momentum_buffer, learning_rate, alpha,
            epsilon, momentum, weight_decay=0.0, grad_scale=1.0):
    """sq = alpha*sq + (1-alpha)*gi*gi;  centered (grad_avg given): ga = alpha*ga +
    (1-alpha)*gi, d = sqrt(sq - ga*ga) + eps, else d = sqrt(sq) + eps;  with a
    momentum_buffer: b = momentum*b + gi/d, p -= lr*b, else p -= lr*gi/d."""
    cdef fo_rmsprop_opts o
    cdef Call c
    args = (parameters, grads, square_avg, grad_avg, momentum_buffer, learning_rate, alpha,
            epsilon, momentum, weight_decay, grad_scale)
    if not (_as_lr(learning_rate, &o.lr) and _as_beta(alpha, &o.alpha)
            and _as_eps(epsilon, &o.eps) and _as_beta(momentum, &o.momentum)
            and _as_scale(grad_scale, &o.grad_scale)):
        return _fallback.rmsprop(*args)
    cdef bint centered = grad_avg is not None, has_b = momentum_buffer is not None
    cdef int sga = 3 if centered else -1
    cdef int sb = (3 + centered) if has_b else -1
    _init(&c, 3 + centered + has_b)
    try:
        if not (_gather(&c, parameters, grads, square_avg,
                        grad_avg if centered else momentum_buffer, momentum_buffer)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.rmsprop(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _rmsprop(&c, sga, sb, &o)
        else:
            with nogil:
                _rmsprop(&c, sga, sb, &o)
    finally:
        _free(&c)


cdef void _lion(Call *c, fo_lion_opts *o) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        fo_lion_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1), <float **>_sp(c, 2), c.n, o)
    else:
        fo_lion_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1), <double **>_sp(c, 2), c.n, o)


def lion(parameters, grads, v, learning_rate, beta1, beta2, weight_decay=0.0, grad_scale=1.0):
    """p *= 1 - lr*wd;  p -= lr * sign(b1*v + (1-b1)*gi) (sign(0) = 0);
    v = b2*v + (1-b2)*gi."""
    cdef fo_lion_opts o
    cdef Call c
    args = (parameters, grads, v, learning_rate, beta1, beta2, weight_decay, grad_scale)
    if not (_as_lr(learning_rate, &o.lr) and _as_beta(beta1, &o.beta1)
            and _as_beta(beta2, &o.beta2) and _as_scale(grad_scale, &o.grad_scale)):
        return _fallback.lion(*args)
    _init(&c, 3)
    try:
        if not (_gather(&c, parameters, grads, v, None)
                and _decay(&c, parameters, weight_decay)):
            return _fallback.lion(*args)
        o.weight_decay = c.wd
        if c.total < NOGIL_MIN:
            _lion(&c, &o)
        else:
            with nogil:
                _lion(&c, &o)
    finally:
        _free(&c)


cdef double _sumsq(Call *c, int *bad) noexcept nogil:
    if c.typenum == cnp.NPY_FLOAT:
        return fo_sumsq_f32(c.k, <float **>_sp(c, 1), c.n, bad)
    return fo_sumsq_f64(c.k, <double **>_sp(c, 1), c.n, bad)


def grad_norm(parameters, grads):
    """(sqrt(sum of g*g over every gradient), all elements finite), the sum in
    double in a fixed order (the same for any thread count)."""
    cdef Call c
    cdef int bad = 0
    cdef double total = 0.0
    _init(&c, 2)
    try:
        if not _gather(&c, parameters, grads, None, None):
            return _fallback.grad_norm(parameters, grads)
        if c.k:
            if c.total < NOGIL_MIN:
                total = _sumsq(&c, &bad)
            else:
                with nogil:
                    total = _sumsq(&c, &bad)
    finally:
        _free(&c)
    return sqrt(total), not bad


cdef void _ceiling_n(Call *c) noexcept nogil:
    cdef int ns = c.nstreams
    if c.typenum == cnp.NPY_FLOAT:
        fo_ceiling_f32(c.k, <float **>c.ptr, <float **>_sp(c, 1),
                       <float **>_sp(c, 2 if ns > 2 else -1), <float **>_sp(c, 3 if ns > 3 else -1),
                       <float **>_sp(c, 4 if ns > 4 else -1), c.n)
    else:
        fo_ceiling_f64(c.k, <double **>c.ptr, <double **>_sp(c, 1),
                       <double **>_sp(c, 2 if ns > 2 else -1),
                       <double **>_sp(c, 3 if ns > 3 else -1),
                       <double **>_sp(c, 4 if ns > 4 else -1), c.n)


def ceiling(parameters, grads, *states):
    """The traffic of an update that reads g and reads and writes p and up to three
    state dicts, with trivial arithmetic: x += g for each (benchmarks only).
    Takes the fast path's inputs only."""
    cdef Call c
    if len(states) > 3:
        raise ValueError("ceiling takes at most three state dicts")
    st = list(states) + [None] * (3 - len(states))
    _init(&c, 2 + len(states))
    try:
        if not _gather(&c, parameters, grads, st[0], st[1], st[2]):
            raise ValueError("ceiling takes contiguous float32/float64 arrays only")
        if c.total < NOGIL_MIN:
            _ceiling_n(&c)
        else:
            with nogil:
                _ceiling_n(&c)
    finally:
        _free(&c)

include "_objects.pxi"
