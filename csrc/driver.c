/* Run-time dispatch and the multi-array driver.
 *
 * Dispatch: kernels.c is compiled once per instruction set; fo_init() asks the
 * CPU (cpuid, through the compiler's builtin) which sets it supports and points
 * `kern` at the best table, capped by the caller. Non-x86 builds carry only the
 * portable table.
 *
 * Driver: one call updates k arrays by one rule. Small calls run serially: waking a thread
 * team costs a few microseconds, more than it saves below the threshold. Larger
 * calls split the total work (all arrays laid end to end) into one contiguous
 * range per thread, with range ends on 64-byte multiples of element index. */
#include <math.h>
#include <stdlib.h>

#include "fastoptim.h"
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FO_ATFORK 1
#endif
#endif

/* Elements per call below which a single thread does the work. Measured for
 * Adam on the development machine (1 vs 2 threads, threads idle between calls
 * as in a training loop): two threads start to win at about 32K float32 or 8K
 * float64 elements, about 5-10 us of serial work either way. */
#ifndef FO_PARALLEL_MIN_F32
#define FO_PARALLEL_MIN_F32 32768
#endif
#ifndef FO_PARALLEL_MIN_F64
#define FO_PARALLEL_MIN_F64 8192
#endif

static const fo_kernels *kern = &fo_kernels_baseline;
static int isa_in_use = FO_ISA_BASELINE;
static int num_threads = 0;

/* GNU OpenMP is not fork-safe: a process forked after its parent ran a parallel
 * region hangs in its first one (multiprocessing's default start method on
 * Linux). Such a child does every call on one thread. */
static volatile int parallel_used = 0, forked_child = 0;
#ifdef FO_ATFORK
static void after_fork_in_child(void) { forked_child = parallel_used; }
#endif

int fo_isa_supported(void)
{
#if defined(FO_MULTI_ISA) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return FO_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FO_ISA_AVX2;
#endif
    return FO_ISA_BASELINE;
}

int fo_init(int max_isa)
{
    int isa = fo_isa_supported();
    if (isa > max_isa)
        isa = max_isa < FO_ISA_BASELINE ? FO_ISA_BASELINE : max_isa;
#ifdef FO_MULTI_ISA
    kern = isa == FO_ISA_AVX512 ? &fo_kernels_avx512
         : isa == FO_ISA_AVX2   ? &fo_kernels_avx2
                                : &fo_kernels_baseline;
#endif
    isa_in_use = isa;
#ifdef FO_ATFORK
    static int atfork_registered = 0;
    if (!atfork_registered)
        atfork_registered = pthread_atfork(NULL, NULL, after_fork_in_child) == 0;
#endif
    return isa;
}

int fo_isa_in_use(void) { return isa_in_use; }

const char *fo_isa_name(int isa)
{
    switch (isa) {
    case FO_ISA_AVX512: return "avx512";
    case FO_ISA_AVX2: return "avx2";
    default: return "baseline";
    }
}

void fo_set_num_threads(int n) { num_threads = n > 0 ? n : 0; }

int fo_get_num_threads(void)
{
#ifdef _OPENMP
    if (forked_child)
        return 1;
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

int fo_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

size_t fo_parallel_threshold(size_t elem_size)
{
    return elem_size == sizeof(float) ? FO_PARALLEL_MIN_F32 : FO_PARALLEL_MIN_F64;
}

/* One update: `range(ctx, i, lo, hi)` updates elements [lo, hi) of array i. */
typedef void (*range_fn)(const void *ctx, size_t i, size_t lo, size_t hi);

static void run_serial(size_t k, const size_t *n, range_fn range, const void *ctx)
{
    for (size_t i = 0; i < k; i++)
        if (n[i])
            range(ctx, i, 0, n[i]);
}

#ifdef _OPENMP
/* Thread `tid` of `nt` takes global elements [lo, hi) and walks the arrays that
 * range covers. */
static void run_share(size_t k, const size_t *n, size_t total, size_t align, int tid, int nt,
                      range_fn range, const void *ctx)
{
    size_t per = (total + (size_t)nt - 1) / (size_t)nt;
    per = (per + align - 1) / align * align;
    size_t lo = per * (size_t)tid, hi = lo + per;
    if (hi > total)
        hi = total;
    size_t base = 0;
    for (size_t i = 0; i < k && base < hi; base += n[i], i++) {
        size_t a = lo > base ? lo - base : 0;
        size_t b = hi - base < n[i] ? hi - base : n[i];
        if (a < b)
            range(ctx, i, a, b);
    }
}
#endif

static void run(size_t k, const size_t *n, size_t elem_size, range_fn range, const void *ctx)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += n[i];
#ifdef _OPENMP
    int nt = fo_get_num_threads();
    if (nt > 1 && total >= fo_parallel_threshold(elem_size)) {
        const size_t align = 64 / elem_size;
        parallel_used = 1;
#pragma omp parallel num_threads(nt)
        run_share(k, n, total, align, omp_get_thread_num(), omp_get_num_threads(), range, ctx);
        return;
    }
#else
    (void)elem_size;
#endif
    run_serial(k, n, range, ctx);
}

/* ---- One update: any rule, any dtype ------------------------------------------ */

typedef struct {
    fo_kernel_fn kernel;
    const fo_coef *coef;
    unsigned flags, decay;
    size_t k, elem_size;
    void *const *x;            /* (2 + FO_MAX_STATES) * k pointers, as fo_update's */
    const double *weight_decay;
    double lr, grad_scale;
} update_ctx;

static void update_range(const void *v, size_t i, size_t lo, size_t hi)
{
    const update_ctx *u = v;
    void *x[2 + FO_MAX_STATES];
    for (size_t j = 0; j < 2 + FO_MAX_STATES; j++) {
        char *base = u->x[j * u->k + i];
        x[j] = base ? base + lo * u->elem_size : NULL;
    }
    fo_array_coef a = {u->grad_scale, 0.0, 1.0};
    unsigned flags = u->flags;
    const double wd = u->weight_decay ? u->weight_decay[i] : 0.0;
    if (wd != 0.0) {
        flags |= u->decay;
        a.wd = wd;
        a.dec = 1.0 - u->lr * wd;
    }
    u->kernel(hi - lo, x, u->coef, &a, flags);
}

static const char *const rule_info[][5] = {
#define FO_INFO(ID, name, states, hyper, flags, scalars, decay) \
    {#name, states, hyper, flags, scalars},
    FO_RULES(FO_INFO)
#undef FO_INFO
};
static const unsigned rule_decay[] = {
#define FO_DECAY(ID, name, states, hyper, flags, scalars, decay) decay,
    FO_RULES(FO_DECAY)
#undef FO_DECAY
};

const char *fo_rule_info(int rule, int what)
{
    if (rule < 0 || rule >= FO_NUM_RULES || what < 0 || what > 4)
        return NULL;
    return rule_info[rule][what];
}

unsigned fo_rule_decay(int rule)
{
    return rule >= 0 && rule < FO_NUM_RULES ? rule_decay[rule] : 0;
}

static size_t elem_size(int dtype) { return dtype == FO_F32 ? sizeof(float) : sizeof(double); }

int fo_update(int rule, int dtype, size_t k, void *const *x, const size_t *n, fo_step *s)
{
    if (rule < 0 || rule >= FO_NUM_RULES || (dtype != FO_F32 && dtype != FO_F64))
        return -1;
    if (s->decay & ~rule_decay[rule] || (s->decay & (s->decay - 1)))
        return -1;
    fo_coef coef;
    const unsigned flags = kern->prepare[rule][dtype](s, &coef);
    if (flags == FO_INVALID)
        return -1;
    update_ctx u = {kern->kernel[rule][dtype], &coef, flags, s->decay, k, elem_size(dtype),
                    x, s->weight_decay, s->lr, s->grad_scale};
    run(k, n, u.elem_size, update_range, &u);
    return 0;
}

/* ---- The global sum of squares --------------------------------------------------
 * Per-chunk partial sums (fixed chunks of each array), added in order. Threads
 * fill disjoint runs of the partial sums, so the result is the serial one,
 * bitwise, for any thread count. */
double fo_sumsq(int dtype, size_t k, void *const *g, const size_t *n, int *nonfinite)
{
    const size_t CH = FO_NORM_CHUNK, es = elem_size(dtype);
    void (*sumsq)(size_t, const void *, double *, int *) = kern->sumsq[dtype == FO_F64];
    size_t nchunks = 0, total = 0;
    for (size_t i = 0; i < k; i++) {
        nchunks += (n[i] + CH - 1) / CH;
        total += n[i];
    }
    int bad = 0;
    double sum = 0.0;
#ifdef _OPENMP
    const int nt = fo_get_num_threads();
    double *part = nt > 1 && total >= fo_parallel_threshold(es) ? malloc(nchunks * sizeof(double)) : NULL;
    if (part) {
        parallel_used = 1;
#pragma omp parallel num_threads(nt) reduction(|: bad)
        {
            const size_t tid = (size_t)omp_get_thread_num(), m = (size_t)omp_get_num_threads();
            const size_t c0 = nchunks * tid / m, c1 = nchunks * (tid + 1) / m;
            size_t base = 0;
            for (size_t i = 0; i < k && base < c1; i++) {
                const size_t ci = (n[i] + CH - 1) / CH;
                for (size_t c = c0 > base ? c0 : base; c < c1 && c < base + ci; c++) {
                    const size_t off = (c - base) * CH;
                    sumsq(n[i] - off < CH ? n[i] - off : CH, (const char *)g[i] + off * es,
                          &part[c], &bad);
                }
                base += ci;
            }
        }
        for (size_t c = 0; c < nchunks; c++)
            sum += part[c];
        free(part);
        *nonfinite = bad;
        return sum;
    }
#endif
    for (size_t i = 0; i < k; i++)
        for (size_t off = 0; off < n[i]; off += CH) {
            double s;
            sumsq(n[i] - off < CH ? n[i] - off : CH, (const char *)g[i] + off * es, &s, &bad);
            sum += s;
        }
    *nonfinite = bad;
    return sum;
}

/* ---- Ceilings (benchmarks) ------------------------------------------------------ */

typedef struct { void *const *x; size_t k, elem_size; int nstates, dtype; } ceiling_ctx;

static void ceiling_range(const void *v, size_t i, size_t lo, size_t hi)
{
    const ceiling_ctx *c = v;
    void *x[2 + FO_MAX_STATES];
    for (size_t j = 0; j < 2 + FO_MAX_STATES; j++) {
        char *base = c->x[j * c->k + i];
        x[j] = base ? base + lo * c->elem_size : NULL;
    }
    kern->ceiling[c->dtype](hi - lo, x, c->nstates);
}

int fo_ceiling(int dtype, int nstates, size_t k, void *const *x, const size_t *n)
{
    if ((dtype != FO_F32 && dtype != FO_F64) || nstates < 0 || nstates > FO_MAX_STATES)
        return -1;
    ceiling_ctx c = {x, k, elem_size(dtype), nstates, dtype};
    run(k, n, c.elem_size, ceiling_range, &c);
    return 0;
}

#ifndef FO_COMPILER
#define FO_COMPILER "unknown"
#endif
#ifndef FO_FLAGS
#define FO_FLAGS "unknown"
#endif
const char *fo_compiler(void) { return FO_COMPILER; }
const char *fo_kernel_flags(void) { return FO_FLAGS; }
