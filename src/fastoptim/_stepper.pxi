# The optimizer objects' step (fastoptim.optimizers.Optimizer); included by _core.pyx.
#
# An optimizer object's parameters and state do not move between steps, so their
# data pointers are gathered once, by dtype (_bind). A step then only looks up
# and checks each gradient, measures the global norm when clipping or skipping
# needs it, and makes one C call per dtype. Settings (hyperparameters, flags,
# weight decay, clipping) are copied into C fields when they change (_configure).
#
# A group of 16-bit parameters, or with bfloat16 or 8-bit state, passes its
# streams' formats (fo_formats), read from its arrays' dtypes at _bind.
#
# A class whose step has a NumPy part (a "phase": Muon's orthogonalization,
# Adafactor's row and column statistics) binds with phase=True: the step then
# measures the norm, calls the object's _phase_step with the gradients and the
# scale, and makes the C calls. Arrays the rule does not take (takes[i] False:
# the phase updates them) are in the norm but not in the rule's update.

DEF MAX_GROUPS = 4        # float32, float64, float16, bfloat16 parameters

cdef struct Group:
    int dtype             # the arithmetic: FO_F32 or FO_F64
    int ptypenum          # the parameters' type number
    Py_ssize_t k          # arrays of this dtype
    void **x              # x[s * k + i]: slot s (p, g, state slots, ...) of array i
    size_t *n
    size_t *un            # elements the rule updates: n, or 0 (an array it does not take)
    double *wd            # per array (NULL: no weight decay in this group)
    uint64_t *stream      # per array: its key's index (stochastic rounding)
    bint staged           # fmt applies (a stream is not in the group's dtype)
    bint kahan            # every array has a Kahan compensation
    fo_formats fmt        # fmt.g is set per step from the gradients' dtype
    int gtypenum          # this step's gradients' type number
    fo_factors *factors   # per array (NULL: none in this group)


cdef class Stepper:
    """The C backend's base of fastoptim.optimizers.Optimizer: its step, with
    the settings and pointers in C fields so that a step costs one method call
    (_fallback.Stepper is the same step for the NumPy backend)."""
    cdef public object _t             # a Python int: steps taken
    cdef public double _lr
    cdef object schedule              # None, or a callable given the step count
    cdef int sched_kind               # its compiled form (0: none, call it)
    cdef double sched[4]
    cdef public object last_grad_norm
    cdef int rule                     # -1: no plan, every step through _step_numpy
    cdef fo_step args
    cdef int nscalars
    cdef double sc[FO_MAX_SCALARS]
    cdef double max_norm              # < 0: no clipping
    cdef bint skip, maximize
    cdef double ema_decay             # with an EMA slot
    cdef bint ema_warmup
    cdef int ngroups
    cdef Group groups[MAX_GROUPS]
    cdef Py_ssize_t k
    cdef size_t total
    # per key, in the parameters' order
    cdef PyObject **dkeys             # borrowed from self._refs
    cdef PyObject **grads             # this step's gradients (borrowed)
    cdef int *group
    cdef Py_ssize_t *slot
    cdef int *ndim
    cdef cnp.npy_intp *dims           # NPY_MAXDIMS per key
    cdef bint *c_order
    cdef size_t *nbytes
    # byte ranges written by a step, sorted and disjoint
    cdef uintptr_t *wlo
    cdef uintptr_t *whi
    cdef Py_ssize_t nw
    cdef object _refs                 # keeps every array and key alive
    cdef bint busy                    # a step is running with the GIL released
    cdef double norm                  # the last norm pass's result
    cdef bint phase                   # call _phase_step between the norm and the update

    def __cinit__(self):
        self.rule = -1
        self.max_norm = -1.0
        self.dkeys = NULL
        self.wlo = NULL
        cdef int j
        for j in range(MAX_GROUPS):
            self.groups[j].x = NULL
            self.groups[j].factors = NULL
        self.ngroups = 0

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        cdef int j
        PyMem_Free(self.dkeys)
        PyMem_Free(self.wlo)
        for j in range(MAX_GROUPS):
            PyMem_Free(self.groups[j].x)
            PyMem_Free(self.groups[j].factors)
            self.groups[j].x = NULL
            self.groups[j].factors = NULL
        self.dkeys = NULL
        self.wlo = NULL
        self.ngroups = 0
        self.rule = -1

    # --- the plan -------------------------------------------------------------------

    @property
    def _compiled(self):
        """Does a step take the compiled path (when its gradients do)?"""
        return self.rule >= 0

    def _unbind(self):
        """Drop the pointers: every step takes _step_numpy."""
        self._release()
        self._refs = None

    def _bind(self, str rule, list keys, list rows, tuple unsigned=(), takes=None,
              bint phase=False):
        """Gather the pointers of `rows[i] = [p, state slot 0, ..., the EMA, the
        Kahan compensation, the block maxima of slots 0, 1, 2]` (None for an
        absent slot; a shorter row leaves the rest absent) of parameter keys[i],
        by dtype. A state array of uint16 holds bfloat16 bits, one of uint8
        8-bit codes (with its block maxima; the signed map, or the unsigned one
        where unsigned[j] is true). Returns False (every step then takes
        _step_numpy) when an array cannot take the C path. The caller has
        checked the arrays (writeable, not overlapping, state shaped and laid
        out like its parameter). takes[i] False: the rule leaves key i to the
        phase (its gradient still counts in the norm); phase: call
        _phase_step(grads, scale, t, lr) before the rule's update."""
        self._release()
        self._refs = None
        self.phase = phase
        cdef Py_ssize_t k = len(keys), i, j, s
        cdef list typenums = []
        cdef list counts = []
        cdef cnp.ndarray p, a
        cdef int g, storage
        for row in rows:
            if len(row) > NSLOTS - 1:
                return False
            for x in row:
                if x is not None and not _obj_eligible(x):
                    return False
            p = <cnp.ndarray>row[0]
            _learn_bfloat16(p)
            if _storage_of(cnp.PyArray_TYPE(p)) < 0:
                return False
            if cnp.PyArray_TYPE(p) not in typenums:
                typenums.append(cnp.PyArray_TYPE(p))
                counts.append(0)
            counts[typenums.index(cnp.PyArray_TYPE(p))] += 1
        # every group's formats, from its arrays' dtypes (None: not a C group)
        cdef list formats = [_group_formats(t, [r for r in rows if r[0].dtype.num == t], unsigned)
                             for t in typenums]
        if any(f is None for f in formats):
            return False

        self.k = k
        self.total = 0
        self._refs = (list(keys), ["d" + key for key in keys], [list(row) for row in rows])
        # one allocation for the per-key tables
        cdef size_t per_key = (2 * sizeof(PyObject *) + sizeof(int) + sizeof(Py_ssize_t)
                               + sizeof(int) + cnp.NPY_MAXDIMS * sizeof(cnp.npy_intp)
                               + sizeof(bint) + sizeof(size_t))
        cdef char *mem = <char *>PyMem_Malloc(k * per_key + 1)
        if mem == NULL:
            raise MemoryError()
        self.dkeys = <PyObject **>mem
        self.grads = self.dkeys + k
        self.dims = <cnp.npy_intp *>(self.grads + k)
        self.nbytes = <size_t *>(self.dims + k * cnp.NPY_MAXDIMS)
        self.slot = <Py_ssize_t *>(self.nbytes + k)
        self.group = <int *>(self.slot + k)
        self.ndim = self.group + k
        self.c_order = <bint *>(self.ndim + k)
        cdef Py_ssize_t kg
        cdef Group *G
        for j in range(len(typenums)):
            kg = counts[j]
            G = &self.groups[j]
            G.dtype = _dtype_of(typenums[j])
            G.ptypenum = typenums[j]
            G.k = 0
            G.x = <void **>PyMem_Malloc(
                kg * (NSLOTS * sizeof(void *) + sizeof(uint64_t) + 2 * sizeof(size_t)
                      + sizeof(double)) + 1)
            if G.x == NULL:
                raise MemoryError()
            memset(G.x, 0, kg * NSLOTS * sizeof(void *))
            G.stream = <uint64_t *>(G.x + NSLOTS * kg)
            G.n = <size_t *>(G.stream + kg)
            G.un = G.n + kg
            G.wd = NULL
            G.factors = NULL
            memset(&G.fmt, 0, sizeof(fo_formats))
            G.fmt.p, state, G.staged, G.kahan = formats[j]
            for s in range(FO_MAX_STATES):
                G.fmt.state[s] = state[s]
            G.fmt.stream = G.stream
            G.gtypenum = -1
            self.ngroups = j + 1

        cdef list written = []
        cdef uintptr_t lo
        for i in range(k):
            p = <cnp.ndarray>rows[i][0]
            self.dkeys[i] = <PyObject *>self._refs[1][i]
            self.grads[i] = NULL
            g = typenums.index(cnp.PyArray_TYPE(p))
            G = &self.groups[g]
            kg = counts[g]
            self.group[i] = g
            self.slot[i] = G.k
            self.ndim[i] = cnp.PyArray_NDIM(p)
            for j in range(self.ndim[i]):
                self.dims[i * cnp.NPY_MAXDIMS + j] = cnp.PyArray_DIMS(p)[j]
            self.c_order[i] = cnp.PyArray_IS_C_CONTIGUOUS(p)
            self.nbytes[i] = <size_t>cnp.PyArray_NBYTES(p)
            G.n[G.k] = <size_t>cnp.PyArray_SIZE(p)
            G.stream[G.k] = <uint64_t>i
            G.un[G.k] = G.n[G.k] if takes is None or takes[i] else 0
            self.total += G.n[G.k]
            for s in range(len(rows[i])):
                if rows[i][s] is None:
                    continue
                a = <cnp.ndarray>rows[i][s]
                lo = <uintptr_t>cnp.PyArray_DATA(a)
                G.x[(0 if s == 0 else s + 1) * kg + G.k] = <void *>lo
                if cnp.PyArray_NBYTES(a):
                    written.append((lo, lo + <size_t>cnp.PyArray_NBYTES(a)))
            G.k += 1

        written.sort()
        cdef list merged = []
        for lo_, hi_ in written:
            if merged and lo_ <= merged[len(merged) - 1][1]:
                merged[len(merged) - 1][1] = max(merged[len(merged) - 1][1], hi_)
            else:
                merged.append([lo_, hi_])
        self.nw = len(merged)
        self.wlo = <uintptr_t *>PyMem_Malloc(2 * self.nw * sizeof(uintptr_t) + 1)
        if self.wlo == NULL:
            raise MemoryError()
        self.whi = self.wlo + self.nw
        for j in range(self.nw):
            self.wlo[j] = merged[j][0]
            self.whi[j] = merged[j][1]
        self.rule = _RULE_ID[rule]
        self.nscalars = _rules[self.rule].nscalars
        return True

    def _configure(self, tuple hyper, unsigned flags, unsigned decay, list weight_decay,
                   max_norm, bint skip, bint maximize, double ema_decay=0.0,
                   bint ema_warmup=False, int rounding=FO_ROUND_NEAREST, object seed=0):
        """Copy the settings (checked by the caller) into C fields: the rule's
        hyperparameters and flags, the decay style, the weight decay of each key
        (in the parameters' order), clipping, the non-finite skip, maximize, the
        moving average's decay and warmup, and how 16-bit parameters are
        written back (fo_rounding, with the stochastic rounding's seed)."""
        cdef int j
        cdef Py_ssize_t i
        cdef Group *G
        cdef fo_step probe
        self.max_norm = -1.0 if max_norm is None else <double>max_norm
        self.skip = skip
        self.maximize = maximize
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        if self.rule < 0:
            return
        for j in range(len(hyper)):
            self.args.h[j] = <double>hyper[j]
        self.args.flags = flags
        self.args.decay = decay
        self.args.grad_scale = 1.0
        self.args.t = 1
        self.args.lr = 0.0
        self.args.weight_decay = NULL
        if self.args.sources < 1:
            self.args.sources = 1
            self.args.source_scale = 1.0
        for j in range(self.ngroups):
            G = &self.groups[j]
            if G.fmt.p != FO_FMT_NATIVE:
                if rounding == FO_ROUND_KAHAN and not G.kahan:
                    raise ValueError("Kahan summation needs a compensation array per parameter")
                G.fmt.rounding = rounding
                G.fmt.seed = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        probe = self.args
        probe.formats = NULL
        if fo_update(self.rule, FO_F64, 0, NULL, NULL, &probe) != 0:
            raise ValueError(f"rule {fo_rule_info(self.rule, 0).decode()}: flags {flags} or "
                             f"decay {decay} not compiled")
        has_decay = any(weight_decay)
        for j in range(self.ngroups):
            G = &self.groups[j]
            G.wd = <double *>(G.un + G.k) if has_decay else NULL
        if has_decay:
            for i in range(self.k):
                G = &self.groups[self.group[i]]
                G.wd[self.slot[i]] = <double>weight_decay[i]

    def _bind_factors(self, list factors):
        """The factored state of each key (in the parameters' order): None, or
        (row, col, per, rows, cols) as fo_factors says (fastoptim.h): three
        C-contiguous vectors of the parameter's dtype and the matrices' shape in
        memory order. Returns False (the caller then unbinds) for a vector the C
        path does not take."""
        cdef Py_ssize_t i, j
        cdef Group *G
        cdef cnp.ndarray a
        cdef void *ptr[3]
        if self.rule < 0:
            return False
        for j in range(self.ngroups):
            G = &self.groups[j]
            PyMem_Free(G.factors)
            G.factors = <fo_factors *>PyMem_Malloc(G.k * sizeof(fo_factors) + 1)
            if G.factors == NULL:
                raise MemoryError()
            memset(G.factors, 0, G.k * sizeof(fo_factors))
        refs = []
        for i in range(self.k):
            if factors[i] is None:
                continue
            G = &self.groups[self.group[i]]
            typenum = cnp.NPY_FLOAT if G.dtype == FO_F32 else cnp.NPY_DOUBLE
            for j in range(3):
                a = factors[i][j]
                if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(a) != typenum
                        or not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a)):
                    return False
                refs.append(a)
                ptr[j] = cnp.PyArray_DATA(a)
            G.factors[self.slot[i]].row = ptr[0]
            G.factors[self.slot[i]].col = ptr[1]
            G.factors[self.slot[i]].per = ptr[2]
            G.factors[self.slot[i]].rows = <size_t>factors[i][3]
            G.factors[self.slot[i]].cols = <size_t>factors[i][4]
        self._refs = self._refs + (refs,)
        return True

    def _configure_sources(self, int sources, size_t stride, double scale):
        """Gradients of `sources` sources (data parallelism): each step's
        gradient of array i is the sum, in order, of `sources` arrays of the
        gradient's shape and dtype, `stride` elements apart in memory (the first
        the array given to step), times `scale`. The caller guarantees that the
        memory of every source is valid for the whole of each step."""
        if sources < 1:
            raise ValueError(f"sources must be >= 1, got {sources}")
        self.args.sources = sources
        self.args.source_stride = stride
        self.args.source_scale = scale

    @property
    def _scalars(self):
        """The rule's scalar state (e.g. NAdam's mu_product), a tuple."""
        return tuple(self.sc[j] for j in range(self.nscalars))

    @_scalars.setter
    def _scalars(self, values):
        cdef int j
        self.nscalars = len(values)
        for j in range(self.nscalars):
            self.sc[j] = <double>values[j]

    @property
    def _schedule(self):
        """None, or the learning-rate schedule: a callable given the step count."""
        return self.schedule

    @_schedule.setter
    def _schedule(self, value):
        cdef int j
        self.schedule = value
        self.sched_kind = 0
        form = getattr(value, "compiled_form", None)
        form = form() if form is not None else None
        if form is not None:
            kind, params = form
            for j in range(len(params)):
                self.sched[j] = <double>params[j]
            self.sched_kind = kind

    # --- the step -------------------------------------------------------------------

    def step(self, grads):
        """One update of every parameter from grads["d" + key], in place; then
        t += 1. Returns False, having changed nothing, when skip_nonfinite is set
        and a gradient holds an Inf or NaN; True otherwise."""
        cdef object t = self._t + 1
        cdef double lr = self._lr
        cdef int done
        if self.schedule is not None:
            lr = -1.0
            if self.sched_kind and type(self._t) is int and self._t < 2**53:
                lr = _schedule_lr(self.sched_kind, self.sched, <int64_t>self._t)
            if not (isfinite(lr) and lr >= 0.0):
                lr = self._scheduled_lr(self._t)  # the schedule itself, and its errors
        # Counts past 2**62 (restored by load_state_dict) go to the NumPy step,
        # which takes any Python int.
        if self.rule < 0 or t > 2**62:
            return self._step_numpy(grads, t, lr, True)
        done = self._run(grads, t, lr)
        if done < 0:
            return self._step_numpy(grads, t, lr, True)
        if done:
            self._t = t
        return done == 1

    cdef int _run(self, object grads, int64_t t, double lr) except -2:
        """One update (1 <= t <= 2**62 and lr checked by the caller): 1 done, 0
        skipped (a non-finite gradient with skip_nonfinite), -1 (nothing written)
        when a gradient cannot take the C path."""
        cdef Py_ssize_t i
        cdef PyObject *item
        cdef uintptr_t lo
        cdef Group *G
        if self.busy:
            raise RuntimeError("step() of one optimizer was called from two threads at once")
        if type(grads) is not dict:
            return -1
        cdef int j
        for j in range(self.ngroups):
            self.groups[j].gtypenum = -1
        for i in range(self.k):
            item = PyDict_GetItem(grads, <object>self.dkeys[i])
            if item == NULL or not self._grad_ok(item, i):
                return -1
            lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>item)
            if self.nbytes[i] and self._written(
                    lo, lo + <size_t>cnp.PyArray_NBYTES(<cnp.ndarray>item)):
                return -1
            G = &self.groups[self.group[i]]
            G.x[G.k + self.slot[i]] = <void *>lo
            self.grads[i] = item
        for j in range(self.ngroups):
            G = &self.groups[j]
            G.fmt.g = FO_FMT_NATIVE if G.gtypenum == cnp.NPY_FLOAT or G.gtypenum == cnp.NPY_DOUBLE \
                else _storage_of(G.gtypenum)
            if G.fmt.g != FO_FMT_NATIVE and self.args.sources > 1:
                return -1  # 16-bit gradients of several sources: the NumPy step
        self.args.t = t
        self.args.lr = lr
        self.args.ema_decay = self.ema_decay
        if self.ema_warmup:  # (1 + t)/(10 + t) until it reaches the decay (_fallback's)
            self.args.ema_decay = min(self.ema_decay, (1.0 + t) / (10.0 + t))
        cdef int done
        if self.phase:
            done = self._run_phase(t, lr)
        elif self.total < NOGIL_MIN:
            done = self._update()
        else:
            # With the GIL released another thread could drop the last reference
            # to a gradient (e.g. clear the dict): hold one for the whole call.
            for i in range(self.k):
                Py_INCREF(<object>self.grads[i])
            self.busy = True
            try:
                with nogil:
                    done = self._update()
            finally:
                self.busy = False
                for i in range(self.k):
                    Py_XDECREF(self.grads[i])
        if self.max_norm >= 0.0 or self.skip:
            self.last_grad_norm = self.norm
        return done

    cdef int _run_phase(self, object t, double lr) except -2:
        """_update with the phase between its two halves (the GIL held for it)."""
        cdef Py_ssize_t i
        cdef int done
        cdef bint release = self.total >= NOGIL_MIN
        for i in range(self.k):
            Py_INCREF(<object>self.grads[i])
        self.busy = True
        try:
            if release:
                with nogil:
                    done = self._measure()
            else:
                done = self._measure()
            if done:
                self._phase_step([<object>self.grads[i] for i in range(self.k)],
                                 self.args.grad_scale, t, lr)
                if release:
                    with nogil:
                        self._apply()
                else:
                    self._apply()
        finally:
            self.busy = False
            for i in range(self.k):
                Py_XDECREF(self.grads[i])
        return done

    cdef int _update(self) noexcept nogil:
        """The norm pass when clipping or skipping needs it, then the update of
        every dtype group with the same scalars in and out."""
        if not self._measure():
            return 0
        self._apply()
        return 1

    cdef int _measure(self) noexcept nogil:
        """The norm pass when clipping or skipping needs it; sets the gradients'
        scale. 0: skip the step (a non-finite gradient with skip_nonfinite)."""
        cdef int j, bad = 0, g_bad
        cdef double total = 0.0, coef, scale = 1.0
        cdef Group *G
        if self.max_norm >= 0.0 or self.skip:
            # each dtype group's norm, combined in order: _fallback.norm's
            for j in range(self.ngroups):
                G = &self.groups[j]
                g_bad = 0
                total = hypot(total, fo_norm(_storage_of(G.gtypenum), G.k, G.x + G.k, G.n,
                                             &g_bad))
                bad = bad | g_bad
            self.norm = total
            if self.skip and bad:
                return 0
            if self.max_norm >= 0.0:
                # torch's clip_grad_norm_ rule; a NaN norm (a NaN gradient, not
                # skipped) leaves the scale at 1, so the NaN reaches only the
                # elements it touches.
                coef = self.max_norm / (total + 1e-6)
                if coef < 1.0:
                    scale = coef
        self.args.grad_scale = -scale if self.maximize else scale
        return 1

    cdef void _apply(self) noexcept nogil:
        """The update of every dtype group with the same scalars in and out."""
        cdef int i, j
        cdef Group *G
        for j in range(self.ngroups):
            G = &self.groups[j]
            for i in range(self.nscalars):
                self.args.scalars[i] = self.sc[i]
            self.args.weight_decay = G.wd
            self.args.formats = &G.fmt if G.staged or G.fmt.g != FO_FMT_NATIVE else NULL
            self.args.factors = G.factors
            fo_update(self.rule, G.dtype, G.k, G.x, G.un, &self.args)
        for i in range(self.nscalars):
            self.sc[i] = self.args.scalars[i]

    cdef inline bint _grad_ok(self, PyObject *obj, Py_ssize_t i) noexcept:
        """Is `obj` an array the C path takes as the gradient of key i? Its
        parameter's dtype, or float32 for a 16-bit parameter; the first
        gradient of a group decides for the others in this step."""
        cdef Group *G = &self.groups[self.group[i]]
        cdef int typenum
        if G.gtypenum < 0:
            if not cnp.PyArray_Check(<object>obj):
                return False
            typenum = cnp.PyArray_TYPE(<cnp.ndarray>obj)
            if typenum != G.ptypenum and not (G.fmt.p != FO_FMT_NATIVE
                                              and typenum == cnp.NPY_FLOAT):
                return False
            G.gtypenum = typenum
        return _fast_array(obj, G.gtypenum, self.ndim[i], self.dims + i * cnp.NPY_MAXDIMS,
                           self.c_order[i], False)

    def _ceiling(self, grads):
        """Benchmarks: the memory traffic of one step over this object's own
        arrays with trivial arithmetic (each group's streams in their formats:
        fo_ceiling_formats; fo_ceiling for float64). It overwrites the
        parameters and state with meaningless values. Returns False when the
        gradients cannot take the C path."""
        cdef Py_ssize_t i
        cdef int j, nstates
        cdef PyObject *item
        cdef Group *G
        if self.rule < 0 or type(grads) is not dict:
            return False
        for j in range(self.ngroups):
            self.groups[j].gtypenum = -1
        for i in range(self.k):
            item = PyDict_GetItem(grads, <object>self.dkeys[i])
            if item == NULL or not self._grad_ok(item, i):
                return False
            G = &self.groups[self.group[i]]
            G.x[G.k + self.slot[i]] = cnp.PyArray_DATA(<cnp.ndarray>item)
        for j in range(self.ngroups):
            G = &self.groups[j]
            G.fmt.g = FO_FMT_NATIVE if G.gtypenum == cnp.NPY_FLOAT or G.gtypenum == cnp.NPY_DOUBLE \
                else _storage_of(G.gtypenum)
            nstates = 0
            while nstates < FO_MAX_STATES and G.k and G.x[(2 + nstates) * G.k] != NULL:
                nstates += 1
            with nogil:
                if G.dtype == FO_F32:
                    fo_ceiling_formats(&G.fmt, FO_MAX_STATES, G.k, G.x, G.n)
                else:
                    fo_ceiling(G.dtype, nstates, G.k, G.x, G.n)
        return True

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


cdef bint _obj_eligible(object a):
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a
    _learn_bfloat16(x)
    cdef int typenum = cnp.PyArray_TYPE(x)
    return ((_storage_of(typenum) >= 0 or typenum == cnp.NPY_UBYTE
             or typenum == cnp.NPY_USHORT)
            and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_ISALIGNED(x)
            and cnp.PyArray_ISWRITEABLE(x)
            and (cnp.PyArray_IS_C_CONTIGUOUS(x) or cnp.PyArray_IS_F_CONTIGUOUS(x)))


cdef object _group_formats(int typenum, list rows, tuple unsigned):
    """(parameter format, state formats, staged, every array has a Kahan
    compensation) of the arrays whose parameters have this type number, from
    the dtypes of their state (float32: in the call's dtype; uint16: bfloat16;
    uint8: 8-bit codes, with float32 block maxima), or None when the C path
    cannot take them (state in another dtype, float64 parameters with stored
    state, formats that differ between arrays of one slot)."""
    cdef int storage = _storage_of(typenum)
    cdef bint p16 = storage == FO_F16 or storage == FO_BF16
    cdef int native = cnp.NPY_DOUBLE if storage == FO_F64 else cnp.NPY_FLOAT
    state = [FO_FMT_NATIVE] * FO_MAX_STATES
    kinds = [set() for _ in range(FO_MAX_STATES)]
    kahan = True
    for row in rows:
        row = list(row) + [None] * (NSLOTS - 1 - len(row))
        for j in range(FO_MAX_STATES):
            a = row[1 + j]
            if a is None:
                continue
            am = row[FO_SLOT_ABSMAX - 1 + j]
            t = a.dtype.num
            if t == native:
                if am is not None:
                    return None
                kinds[j].add("native")
            elif storage != FO_F64 and t == cnp.NPY_USHORT and am is None:
                kinds[j].add("bf16")
            elif (storage != FO_F64 and t == cnp.NPY_UBYTE and am is not None
                  and am.dtype.num == cnp.NPY_FLOAT
                  and am.size == (a.size + FO_Q8_BLOCK - 1) // FO_Q8_BLOCK):
                kinds[j].add("q8")
            else:
                return None
        ema = row[FO_SLOT_EMA - 1]
        if ema is not None and ema.dtype.num != native:
            return None
        comp = row[FO_SLOT_KAHAN - 1]
        if comp is not None and (not p16 or comp.dtype.num != typenum):
            return None
        kahan = kahan and comp is not None
    for j in range(FO_MAX_STATES):
        if "bf16" in kinds[j]:
            if len(kinds[j]) > 1:
                return None
            state[j] = FO_FMT_BF16
        elif "q8" in kinds[j]:  # arrays below the 8-bit threshold keep float32
            state[j] = FO_FMT_Q8_UNSIGNED if j < len(unsigned) and unsigned[j] else FO_FMT_Q8
    staged = p16 or any(f != FO_FMT_NATIVE for f in state)
    return (storage if p16 else FO_FMT_NATIVE), tuple(state), staged, kahan


cdef double _schedule_lr(int kind, const double *a, int64_t n) noexcept:
    """The learning rate at step n of a fastoptim.schedules schedule, from its
    compiled_form(): the same double operations, in the same order, as its
    _value (bitwise equal; tests/test_schedules.py checks it)."""
    cdef double x = <double>n
    if kind == 1:    # UpdateLR(learning_rate0, decay_rate)
        return 1.0 / (1.0 + a[1] * x) * a[0]
    if kind == 2:    # ScheduleLRDecay(learning_rate0, decay_rate, integer time_interval)
        return 1.0 / (1.0 + a[1] * <double>(n // <int64_t>a[2])) * a[0]
    if kind == 3:    # ExponentialDecay(learning_rate0, decay_rate, decay_steps)
        return a[0] * pow(a[1], x / a[2])
    if kind == 4:    # StepDecay(learning_rate0, step_size, gamma)
        return a[0] * pow(a[2], <double>(n // <int64_t>a[1]))
    if kind == 5:    # CosineDecay(learning_rate0, decay_steps, warmup_steps, eta_min)
        if n < <int64_t>a[2]:
            return a[0] * x / a[2]
        if n >= <int64_t>a[1]:
            return a[3]
        return a[3] + (a[0] - a[3]) * 0.5 * (
            1.0 + cos(M_PI * (<double>(n - <int64_t>a[2]) / <double>(<int64_t>a[1] - <int64_t>a[2]))))
    return -1.0
