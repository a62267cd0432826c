/* Run-time dispatch and the multi-array driver.
 *
 * Dispatch: kernels.c is compiled once per instruction set; fo_init() asks the
 * CPU (cpuid, through the compiler's builtin) which sets it supports and points
 * `kern` at the best table, capped by the caller. Non-x86 builds carry only the
 * portable table.
 *
 * Driver: one call updates k arrays. Small calls run serially: waking a thread
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

/* Per-algorithm glue (context with the pointer lists and prepared scalars, a
 * range function, the public entry point), once per element type. */
#define T float
#define SFX f32
#include "driver.inc"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "driver.inc"
#undef T
#undef SFX

#ifndef FO_COMPILER
#define FO_COMPILER "unknown"
#endif
#ifndef FO_FLAGS
#define FO_FLAGS "unknown"
#endif
const char *fo_compiler(void) { return FO_COMPILER; }
const char *fo_kernel_flags(void) { return FO_FLAGS; }
