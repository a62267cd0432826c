# Fast paths for the optimizer objects (fastoptim.optim); included by _core.pyx.
#
# An optimizer object's parameters and state do not move between steps, so their
# data pointers are gathered once, when the object is built (ObjectPlan). A step
# then only looks up and checks each gradient, and makes one C call per dtype.
from cpython.ref cimport Py_INCREF, Py_XDECREF

cdef enum:
    OBJ_GD = 0
    OBJ_MOMENTUM = 1
    OBJ_ADAM = 2

# Below this many elements a step keeps the GIL: releasing and retaking it costs
# more than the update.
cdef size_t OBJ_NOGIL_MIN = 8192


cdef struct ObjGroup:
    int typenum           # NPY_FLOAT or NPY_DOUBLE
    Py_ssize_t k          # arrays of this dtype
    void **ptr            # ptr[s * k + i]: stream s (p, g, state...) of array i
    size_t *n


cdef class ObjectPlan:
    """The pointers of one optimizer's parameters and state, by dtype.

    run(grads, t, lr) returns False, having written nothing, when a gradient is
    missing or unusual (the caller then runs the NumPy fallback, which raises the
    right error or performs the update)."""
    cdef int algo, nstreams, ngroups
    cdef ObjGroup groups[2]
    cdef Py_ssize_t k
    cdef size_t total
    # per key, in the parameters' order
    cdef PyObject **dkeys        # borrowed from self._refs
    cdef PyObject **grads        # this step's gradients (borrowed)
    cdef int *group
    cdef Py_ssize_t *slot
    cdef int *ndim
    cdef cnp.npy_intp *dims      # NPY_MAXDIMS per key
    cdef bint *c_order
    cdef size_t *nbytes
    # byte ranges written by a step, sorted and disjoint
    cdef uintptr_t *wlo
    cdef uintptr_t *whi
    cdef Py_ssize_t nw
    cdef object _refs            # keeps every array and key alive
    cdef bint busy               # a step is running with the GIL released
    cdef public double beta, beta1, beta2, epsilon

    def __cinit__(self):
        self.dkeys = NULL
        self.wlo = NULL
        self.groups[0].ptr = NULL
        self.groups[1].ptr = NULL

    def __dealloc__(self):
        PyMem_Free(self.dkeys)
        PyMem_Free(self.wlo)
        PyMem_Free(self.groups[0].ptr)
        PyMem_Free(self.groups[1].ptr)

    cdef bint run(self, object grads, int64_t t, double lr) except -1:
        """One update (1 <= t <= 2**62 and lr checked by the caller); False,
        having written nothing, when a gradient cannot take the C path."""
        cdef Py_ssize_t i
        cdef PyObject *item
        cdef uintptr_t lo
        cdef ObjGroup *G
        if self.busy:
            raise RuntimeError("step() of one optimizer was called from two threads at once")
        if type(grads) is not dict:
            return False
        for i in range(self.k):
            item = PyDict_GetItem(grads, <object>self.dkeys[i])
            if item == NULL:
                return False
            if not self._grad_ok(item, i):
                return False
            lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>item)
            if self.nbytes[i] and self._written(lo, lo + self.nbytes[i]):
                return False
            G = &self.groups[self.group[i]]
            G.ptr[G.k + self.slot[i]] = <void *>lo
            self.grads[i] = item
        if self.total < OBJ_NOGIL_MIN:
            self._run(t, lr)
            return True
        # With the GIL released another thread could drop the last reference to
        # a gradient (e.g. clear the dict): hold one for the whole call.
        for i in range(self.k):
            Py_INCREF(<object>self.grads[i])
        self.busy = True
        try:
            with nogil:
                self._run(t, lr)
        finally:
            self.busy = False
            for i in range(self.k):
                Py_XDECREF(self.grads[i])
        return True

    cdef inline bint _grad_ok(self, PyObject *obj, Py_ssize_t i) noexcept:
        """Is `obj` an array the C path takes as the gradient of key i?"""
        return _fast_array(obj, self.groups[self.group[i]].typenum, self.ndim[i],
                           self.dims + i * cnp.NPY_MAXDIMS, self.c_order[i], False)

    cdef inline bint _written(self, uintptr_t lo, uintptr_t hi) noexcept:
        """Does [lo, hi) meet a range the step writes? (binary search: the last
        range starting below hi has the largest end of those that could meet it)"""
        cdef Py_ssize_t a = 0, b = self.nw, mid
        while a < b:
            mid = (a + b) // 2
            if self.wlo[mid] < hi:
                a = mid + 1
            else:
                b = mid
        return a > 0 and self.whi[a - 1] > lo

    cdef void _run(self, int64_t t, double lr) noexcept nogil:
        cdef int j
        cdef ObjGroup *G
        for j in range(self.ngroups):
            G = &self.groups[j]
            if self.algo == OBJ_GD:
                if G.typenum == cnp.NPY_FLOAT:
                    fo_gd_f32(G.k, <float **>G.ptr, <float **>(G.ptr + G.k), G.n, lr)
                else:
                    fo_gd_f64(G.k, <double **>G.ptr, <double **>(G.ptr + G.k), G.n, lr)
            elif self.algo == OBJ_MOMENTUM:
                if G.typenum == cnp.NPY_FLOAT:
                    fo_momentum_f32(G.k, <float **>G.ptr, <float **>(G.ptr + G.k),
                                    <float **>(G.ptr + 2 * G.k), G.n, self.beta, lr)
                else:
                    fo_momentum_f64(G.k, <double **>G.ptr, <double **>(G.ptr + G.k),
                                    <double **>(G.ptr + 2 * G.k), G.n, self.beta, lr)
            else:
                if G.typenum == cnp.NPY_FLOAT:
                    fo_adam_f32(G.k, <float **>G.ptr, <float **>(G.ptr + G.k),
                                <float **>(G.ptr + 2 * G.k), <float **>(G.ptr + 3 * G.k),
                                G.n, t, lr, self.beta1, self.beta2, self.epsilon)
                else:
                    fo_adam_f64(G.k, <double **>G.ptr, <double **>(G.ptr + G.k),
                                <double **>(G.ptr + 2 * G.k), <double **>(G.ptr + 3 * G.k),
                                G.n, t, lr, self.beta1, self.beta2, self.epsilon)


cdef class OptimizerBase:
    """The C backend's base of fastoptim.optim.Optimizer: its step, with the
    learning rate and plan in C fields so that a step costs one method call
    (optim._Stepper is the same step for the NumPy backend)."""
    cdef public object _t             # a Python int: steps taken
    cdef public double _lr
    cdef public object _schedule      # None, or a callable given the step count
    cdef public ObjectPlan _plan      # None: every step through the fallback

    def step(self, grads):
        """One update of every parameter from grads["d" + key], in place; then t += 1."""
        cdef object t = self._t + 1
        cdef double lr = self._lr
        if self._schedule is not None:
            lr = self._scheduled_lr(self._t)
        # Counts past 2**62 (restored by load_state_dict) go to the fallback,
        # which takes any Python int.
        if self._plan is None or t > 2**62 or not self._plan.run(grads, t, lr):
            self._fallback_update(grads, t, lr)
        self._t = t


cdef bint _obj_eligible(object a):
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(x)
    return ((typenum == cnp.NPY_FLOAT or typenum == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_ISALIGNED(x)
            and cnp.PyArray_ISWRITEABLE(x)
            and (cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_IS_F_CONTIGUOUS(x)))


def object_plan(str algo, list keys, list arrays):
    """An ObjectPlan for `arrays[i] = [p, state...]` of parameter keys[i], or None
    when an array cannot take the C path (the object then always uses the
    fallback). The caller has checked the arrays (writeable, not overlapping,
    state shaped and laid out like its parameter)."""
    algos = {"gd": OBJ_GD, "momentum": OBJ_MOMENTUM, "adam": OBJ_ADAM}
    if algo not in algos:  # no C kernel for it here: the fallback takes every step
        return None
    cdef ObjectPlan plan = ObjectPlan.__new__(ObjectPlan)
    plan.algo = algos[algo]
    plan.nstreams = 2 + (plan.algo == OBJ_MOMENTUM) + 2 * (plan.algo == OBJ_ADAM)
    cdef Py_ssize_t k = len(keys), i, j, s
    cdef list typenums = []
    cdef list counts = []
    cdef cnp.ndarray p, a
    cdef int g
    for row in arrays:
        if len(row) != plan.nstreams - 1:
            raise ValueError(f"{algo}: expected {plan.nstreams - 1} arrays per key")
        for x in row:
            if not _obj_eligible(x):
                return None
        p = <cnp.ndarray>row[0]
        if cnp.PyArray_TYPE(p) not in typenums:
            typenums.append(cnp.PyArray_TYPE(p))
            counts.append(0)
        counts[typenums.index(cnp.PyArray_TYPE(p))] += 1

    plan.k = k
    plan.total = 0
    plan.ngroups = len(typenums)
    plan._refs = (list(keys), ["d" + key for key in keys], [list(row) for row in arrays])
    # one allocation for the per-key tables
    cdef size_t per_key = (2 * sizeof(PyObject *) + sizeof(int) + sizeof(Py_ssize_t)
                           + sizeof(int) + cnp.NPY_MAXDIMS * sizeof(cnp.npy_intp)
                           + sizeof(bint) + sizeof(size_t))
    cdef char *mem = <char *>PyMem_Malloc(k * per_key + 1)
    if mem == NULL:
        raise MemoryError()
    plan.dkeys = <PyObject **>mem
    plan.grads = plan.dkeys + k
    plan.dims = <cnp.npy_intp *>(plan.grads + k)
    plan.nbytes = <size_t *>(plan.dims + k * cnp.NPY_MAXDIMS)
    plan.slot = <Py_ssize_t *>(plan.nbytes + k)
    plan.group = <int *>(plan.slot + k)
    plan.ndim = plan.group + k
    plan.c_order = <bint *>(plan.ndim + k)
    cdef Py_ssize_t kg
    for j in range(plan.ngroups):
        kg = counts[j]
        plan.groups[j].typenum = typenums[j]
        plan.groups[j].k = 0
        plan.groups[j].ptr = <void **>PyMem_Malloc(
            kg * (plan.nstreams * sizeof(void *) + sizeof(size_t)) + 1)
        if plan.groups[j].ptr == NULL:
            raise MemoryError()
        plan.groups[j].n = <size_t *>(plan.groups[j].ptr + plan.nstreams * kg)

    cdef list written = []
    cdef ObjGroup *G
    cdef uintptr_t lo
    for i in range(k):
        p = <cnp.ndarray>arrays[i][0]
        plan.dkeys[i] = <PyObject *>plan._refs[1][i]
        plan.grads[i] = NULL
        g = typenums.index(cnp.PyArray_TYPE(p))
        G = &plan.groups[g]
        kg = counts[g]
        plan.group[i] = g
        plan.slot[i] = G.k
        plan.ndim[i] = cnp.PyArray_NDIM(p)
        for j in range(plan.ndim[i]):
            plan.dims[i * cnp.NPY_MAXDIMS + j] = cnp.PyArray_DIMS(p)[j]
        plan.c_order[i] = cnp.PyArray_IS_C_CONTIGUOUS(p)
        plan.nbytes[i] = <size_t>cnp.PyArray_NBYTES(p)
        G.n[G.k] = <size_t>cnp.PyArray_SIZE(p)
        plan.total += G.n[G.k]
        for s in range(plan.nstreams - 1):
            a = <cnp.ndarray>arrays[i][s]
            lo = <uintptr_t>cnp.PyArray_DATA(a)
            G.ptr[(0 if s == 0 else s + 1) * kg + G.k] = <void *>lo
            if cnp.PyArray_NBYTES(a):
                written.append((lo, lo + <size_t>cnp.PyArray_NBYTES(a)))
        G.ptr[kg + G.k] = NULL  # the gradient, set by each step
        G.k += 1

    written.sort()
    cdef list merged = []
    for lo_, hi_ in written:
        if merged and lo_ <= merged[len(merged) - 1][1]:
            merged[len(merged) - 1][1] = max(merged[len(merged) - 1][1], hi_)
        else:
            merged.append([lo_, hi_])
    plan.nw = len(merged)
    plan.wlo = <uintptr_t *>PyMem_Malloc(2 * plan.nw * sizeof(uintptr_t) + 1)
    if plan.wlo == NULL:
        raise MemoryError()
    plan.whi = plan.wlo + plan.nw
    for j in range(plan.nw):
        plan.wlo[j] = merged[j][0]
        plan.whi[j] = merged[j][1]
    return plan
