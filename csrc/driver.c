/* Run-time dispatch and the multi-array driver.
 *
 * Dispatch: kernels.c is compiled once per instruction set; fo_init() asks the
 * CPU (cpuid, through the compiler's builtin) which sets it supports and points
 * `kern` at the best table, capped by the caller. Non-x86 builds carry only the
 * portable table.
 *
 * Driver: one call updates k arrays. The total work (all arrays laid end to
 * end) is cut into fixed chunks, on 64-byte multiples of element index, that the
 * calling thread and the pool's workers claim one at a time (pool.h): a worker
 * that is slow to wake never delays the call, and which thread ran a chunk
 * never changes a result. Small calls run serially: below the threshold,
 * waking a worker costs more than it saves. */
#include <math.h>
#include <stdlib.h>

#include "fastoptim.h"
#include "kernels.h"
#include "pool.h"

/* Elements per call below which the calling thread does the work alone,
 * measured for Adam on the development machine (bench/pool_tuning.py).
 * Awake: with a worker still spinning from the previous call, 2 threads beat 1
 * from 32K float32 (1.6x) and 8K float64 (1.6x) elements, about 10 us of work.
 * Asleep: a sleeping worker joins 60-100 us after the wake-up (hundreds of us if
 * its CPU was idle), so below about 128K float32 / 64K float64 elements (some
 * 65 us of work) it arrives when the caller is nearly done and the wake-up costs
 * 1-3%; between the two thresholds a call goes parallel only when the workers
 * are warm (fo_pool_warm). */
#ifndef FO_PARALLEL_MIN_F32
#define FO_PARALLEL_MIN_F32 32768
#endif
#ifndef FO_PARALLEL_MIN_F64
#define FO_PARALLEL_MIN_F64 8192
#endif
#ifndef FO_PARALLEL_MIN_ASLEEP_F32
#define FO_PARALLEL_MIN_ASLEEP_F32 131072
#endif
#ifndef FO_PARALLEL_MIN_ASLEEP_F64
#define FO_PARALLEL_MIN_ASLEEP_F64 65536
#endif
/* Chunks: at least FO_CHUNK_BYTES of each stream (a claim costs a contended
 * atomic), and about FO_CHUNKS_PER_THREAD per thread, so that a worker that
 * joins late still gets its share and the last chunk's wait is short. */
#ifndef FO_CHUNK_BYTES
#define FO_CHUNK_BYTES 32768
#endif
#ifndef FO_CHUNKS_PER_THREAD
#define FO_CHUNKS_PER_THREAD 16
#endif

static const fo_kernels *kern = &fo_kernels_baseline;
static int isa_in_use = FO_ISA_BASELINE;

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

void fo_set_num_threads(int n) { fo_pool_set_num_threads(n); }

int fo_get_num_threads(void) { return fo_pool_get_num_threads(); }

static size_t min_awake[2] = {FO_PARALLEL_MIN_F32, FO_PARALLEL_MIN_F64};
static size_t min_asleep[2] = {FO_PARALLEL_MIN_ASLEEP_F32, FO_PARALLEL_MIN_ASLEEP_F64};

size_t fo_parallel_threshold(size_t elem_size) { return min_awake[elem_size != sizeof(float)]; }

size_t fo_parallel_threshold_asleep(size_t elem_size)
{
    return min_asleep[elem_size != sizeof(float)];
}

void fo_set_parallel_threshold(size_t elem_size, size_t awake, size_t asleep)
{
    min_awake[elem_size != sizeof(float)] = awake;
    min_asleep[elem_size != sizeof(float)] = asleep > awake ? asleep : awake;
}

/* The thread count for a call of `total` elements: 1 below the threshold that
 * applies now. Between the two thresholds a call goes parallel only if the
 * workers are warm (pool.h, fo_pool_warm); *mark says to tell the pool when the
 * call ends. */
static int threads_for(size_t total, size_t elem_size, int *mark)
{
    const int nt = fo_get_num_threads();
    *mark = 0;
    if (nt <= 1 || total < fo_parallel_threshold(elem_size))
        return 1;
    if (total >= fo_parallel_threshold_asleep(elem_size))
        return nt;
    *mark = 1;
    return fo_pool_warm() ? nt : 1;
}

/* One update: `range(ctx, i, lo, hi)` updates elements [lo, hi) of array i. */
typedef void (*range_fn)(const void *ctx, size_t i, size_t lo, size_t hi);

static void run_serial(size_t k, const size_t *n, range_fn range, const void *ctx)
{
    for (size_t i = 0; i < k; i++)
        if (n[i])
            range(ctx, i, 0, n[i]);
}

/* A pool job: chunk c is global elements [c*chunk, (c+1)*chunk) of the arrays
 * laid end to end. */
typedef struct {
    size_t k, total, chunk;
    const size_t *n;
    range_fn range;
    const void *ctx;
} run_job;

static void run_share(const void *x, size_t c, size_t local[2])
{
    const run_job *j = x;
    const size_t lo = c * j->chunk, hi = j->total - lo < j->chunk ? j->total : lo + j->chunk;
    /* local = (i, base): the first array that can hold lo and where it starts;
     * between the pool's resets to 0 a participant's chunks rise, so it only
     * moves on */
    size_t i = local[0], base = local[1];
    while (base + j->n[i] <= lo)
        base += j->n[i++];
    local[0] = i;
    local[1] = base;
    for (; i < j->k && base < hi; base += j->n[i], i++) {
        const size_t a = lo > base ? lo - base : 0;
        const size_t b = hi - base < j->n[i] ? hi - base : j->n[i];
        if (a < b)
            j->range(j->ctx, i, a, b);
    }
}

/* Elements per chunk: see FO_CHUNK_BYTES; a multiple of 64 bytes. */
static size_t chunk_elems(size_t total, size_t elem_size, int nt)
{
    const size_t line = 64 / elem_size;
    size_t per = total / ((size_t)nt * FO_CHUNKS_PER_THREAD);
    if (per < FO_CHUNK_BYTES / elem_size)
        per = FO_CHUNK_BYTES / elem_size;
    if (per < total / (FO_POOL_MAX_CHUNKS / 2))
        per = total / (FO_POOL_MAX_CHUNKS / 2);
    return (per + line - 1) / line * line;
}

static void run(size_t k, const size_t *n, size_t elem_size, range_fn range, const void *ctx)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += n[i];
    int mark;
    const int nt = threads_for(total, elem_size, &mark);
    if (nt > 1) {
        const size_t chunk = chunk_elems(total, elem_size, nt);
        const run_job j = {k, total, chunk, n, range, ctx};
        fo_pool_run(nt, (total + chunk - 1) / chunk, run_share, &j);
    } else {
        run_serial(k, n, range, ctx);
    }
    if (mark)
        fo_pool_call_ended();
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
