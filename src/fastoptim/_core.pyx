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
from libc.math cimport isfinite
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
    int fo_have_openmp()
    size_t fo_parallel_threshold()
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

def build_info():
    return {
        "openmp": bool(fo_have_openmp()),
        "parallel_threshold": fo_parallel_threshold(),
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


cdef bint _gather(Call *c, object parameters, object grads, object s0, object s1) except -1:
    """Fill `c` for the fast path; False sends the call to the fallback."""
    cdef PyObject *dicts[4]   # the dicts holding streams 1.. (grads, then state)
    dicts[1] = <PyObject *>grads
    dicts[2] = <PyObject *>s0
    dicts[3] = <PyObject *>s1
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


include "_objects.pxi"
