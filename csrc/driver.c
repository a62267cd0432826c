/* Run-time dispatch and the multi-array driver.
 *
 * Dispatch: kernels.c is compiled once per instruction set; fo_init() asks the
 * CPU (cpuid, through the compiler's builtin) which sets it supports and points
 * `kern` at the best table, capped by the caller. Non-x86 builds carry only the
 * portable table.
 *
 * Driver: one call updates k arrays by one rule. The total work (all arrays laid end to
 * end) is cut into fixed chunks, on 64-byte multiples of element index, that the
 * calling thread and the pool's workers claim one at a time (pool.h): a worker
 * that is slow to wake never delays the call, and which thread ran a chunk
 * never changes a result. Small calls run serially: below the threshold,
 * waking a worker costs more than it saves.
 *
 * Storage formats (fastoptim.h, fo_formats): a call whose streams are not all
 * in its dtype runs each range in blocks (the block loop of update_range):
 * each block's 16-bit and 8-bit streams are staged into float32 buffers on the
 * stack, the rule's kernel runs on them unchanged, and they are written back
 * (formats.c: the conversions, stochastic rounding, Kahan, the 8-bit
 * quantizer). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastoptim.h"
#include "formats.h"
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
static const fo_formats_kernels *fmtk = &fo_formats_baseline;
static int isa_in_use = FO_ISA_BASELINE;
static int bf16_insn = 1;  /* use vcvtneps2bf16 where the CPU has it */

static int qmaps_init(void);

/* avx2 includes F16C (every CPU with AVX2 has it, but it is its own cpuid bit). */
int fo_isa_supported(void)
{
#if defined(FO_MULTI_ISA) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        return FO_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return FO_ISA_AVX2;
#endif
    return FO_ISA_BASELINE;
}

static int cpu_has_bf16(void)
{
#if defined(FO_MULTI_ISA) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
#else
    return 0;
#endif
}

int fo_init(int max_isa)
{
    int isa = fo_isa_supported();
    if (isa > max_isa)
        isa = max_isa < FO_ISA_BASELINE ? FO_ISA_BASELINE : max_isa;
#ifdef FO_MULTI_ISA
    const int bf16 = isa == FO_ISA_AVX512 && bf16_insn && cpu_has_bf16();
    kern = bf16                 ? &fo_kernels_avx512bf16
         : isa == FO_ISA_AVX512 ? &fo_kernels_avx512
         : isa == FO_ISA_AVX2   ? &fo_kernels_avx2
                                : &fo_kernels_baseline;
    fmtk = bf16                 ? &fo_formats_avx512bf16
         : isa == FO_ISA_AVX512 ? &fo_formats_avx512
         : isa == FO_ISA_AVX2   ? &fo_formats_avx2
                                : &fo_formats_baseline;
#endif
    isa_in_use = isa;
    qmaps_init();
    return isa;
}

int fo_set_bf16_instructions(int on)
{
    bf16_insn = on != 0;
    fo_init(isa_in_use);
    return fmtk->impl != NULL && bf16_insn && cpu_has_bf16() && isa_in_use == FO_ISA_AVX512;
}

const char *fo_formats_impl(void) { return fmtk->impl; }

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
 * laid end to end, each array padded to a multiple of `align` elements (1, or
 * FO_Q8_BLOCK when 8-bit state needs every range to start on a block of its
 * array: chunks are then multiples of it too). */
typedef struct {
    size_t k, total, chunk, align;
    const size_t *n;
    range_fn range;
    const void *ctx;
} run_job;

static size_t padded(size_t n, size_t align) { return (n + align - 1) / align * align; }

static void run_share(const void *x, size_t c, size_t local[2])
{
    const run_job *j = x;
    const size_t lo = c * j->chunk, hi = j->total - lo < j->chunk ? j->total : lo + j->chunk;
    /* local = (i, base): the first array that can hold lo and where it starts;
     * between the pool's resets to 0 a participant's chunks rise, so it only
     * moves on */
    size_t i = local[0], base = local[1];
    while (base + padded(j->n[i], j->align) <= lo)
        base += padded(j->n[i++], j->align);
    local[0] = i;
    local[1] = base;
    for (; i < j->k && base < hi; base += padded(j->n[i], j->align), i++) {
        const size_t a = lo > base ? lo - base : 0;
        const size_t b = hi - base < j->n[i] ? hi - base : j->n[i];
        if (a < b)
            j->range(j->ctx, i, a, b);
    }
}

/* Elements per chunk: see FO_CHUNK_BYTES; a multiple of 64 bytes and of align. */
static size_t chunk_elems(size_t total, size_t elem_size, int nt, size_t align)
{
    const size_t line = 64 / elem_size;
    const size_t unit = align > line ? align : line;  /* both powers of two */
    size_t per = total / ((size_t)nt * FO_CHUNKS_PER_THREAD);
    if (per < FO_CHUNK_BYTES / elem_size)
        per = FO_CHUNK_BYTES / elem_size;
    if (per < total / (FO_POOL_MAX_CHUNKS / 2))
        per = total / (FO_POOL_MAX_CHUNKS / 2);
    return (per + unit - 1) / unit * unit;
}

static void run(size_t k, const size_t *n, size_t elem_size, size_t align, range_fn range,
                const void *ctx)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += padded(n[i], align);
    int mark;
    const int nt = threads_for(total, elem_size, &mark);
    if (nt > 1) {
        const size_t chunk = chunk_elems(total, elem_size, nt, align);
        const run_job j = {k, total, chunk, align, n, range, ctx};
        fo_pool_run(nt, (total + chunk - 1) / chunk, run_share, &j);
    } else {
        run_serial(k, n, range, ctx);
    }
    if (mark)
        fo_pool_call_ended();
}

/* ---- One update: any rule, any dtype ------------------------------------------ */

typedef struct {
    fo_kernel_fn kernel;
    fo_staged_fn staged;       /* the rule's staged kernel (float32) */
    const fo_coef *coef;
    unsigned flags, decay, split;
    double split_scale[2];
    size_t k, elem_size;
    int dtype;
    void *const *x;            /* FO_NSLOTS * k pointers, as fo_update's */
    const double *weight_decay;
    double lr, grad_scale, ema_decay;
    int sources;
    size_t source_stride;
    double source_scale;
    const fo_formats *fmt;     /* staged: NULL, or the streams' formats */
    int64_t t;
    const fo_factors *factors;  /* per array, or NULL */
    const double *factor;       /* a rule with a reduction, apply pass: per array */
} update_ctx;

/* The slots of array i (x holds FO_NSLOTS * k pointers), each offset to element lo. */
static void slots_at(void *out[FO_NSLOTS], void *const *x, size_t k, size_t i, size_t lo,
                     size_t elem_size)
{
    for (size_t j = 0; j < FO_NSLOTS; j++) {
        char *base = x[j * k + i];
        out[j] = base ? base + lo * elem_size : NULL;
    }
}

static void staged_range(const update_ctx *u, size_t i, size_t lo, size_t hi,
                         const fo_array_coef *a, unsigned flags);

/* Array i's coefficients for elements from lo: the gradient's scale (in two
 * factors below the dtype's normal range: see split_scale), its weight decay
 * (adding the decay style to *flags), its factored state. */
static fo_array_coef array_coef(const update_ctx *u, size_t i, size_t lo, unsigned *flags)
{
    fo_array_coef a = {u->grad_scale, 1.0, 0.0, 1.0};
    *flags |= u->split;
    if (u->split) {
        a.grad_scale = u->split_scale[0];
        a.grad_scale2 = u->split_scale[1];
    }
    const double wd = u->weight_decay ? u->weight_decay[i] : 0.0;
    if (wd != 0.0) {
        *flags |= u->decay;
        a.wd = wd;
        a.dec = 1.0 - u->lr * wd;
    }
    a.factors = u->factors ? &u->factors[i] : NULL;
    a.start = lo;
    return a;
}

static void update_range(const void *v, size_t i, size_t lo, size_t hi)
{
    const update_ctx *u = v;
    unsigned flags = u->flags;
    fo_array_coef a = array_coef(u, i, lo, &flags);
    a.factor = u->factor ? u->factor[i] : 0.0;
    if (u->fmt) {
        staged_range(u, i, lo, hi, &a, flags);
        return;
    }
    void *x[FO_NSLOTS];
    slots_at(x, u->x, u->k, i, lo, u->elem_size);
    if (!x[FO_SLOT_EMA] && u->sources <= 1) {
        u->kernel(hi - lo, x, u->coef, &a, flags);
        return;
    }
    /* In blocks, each in cache: a gradient of several sources summed into a
     * buffer on the stack, then the update, then the moving average. */
    double gradient[FO_BLOCK];  /* room for FO_BLOCK elements of either type */
    for (size_t b = 0; b < hi - lo; b += FO_BLOCK) {
        const size_t m = hi - lo - b < FO_BLOCK ? hi - lo - b : FO_BLOCK;
        void *xb[FO_NSLOTS];
        for (size_t j = 0; j < FO_NSLOTS; j++)
            xb[j] = x[j] ? (char *)x[j] + b * u->elem_size : NULL;
        if (u->sources > 1) {
            kern->sum_sources[u->dtype](m, gradient, xb[FO_SLOT_G], u->sources,
                                        u->source_stride, u->source_scale);
            xb[FO_SLOT_G] = gradient;
        }
        a.start = lo + b;
        u->kernel(m, xb, u->coef, &a, flags);
        if (xb[FO_SLOT_EMA])
            kern->ema[u->dtype](m, xb[FO_SLOT_EMA], xb[FO_SLOT_P], u->ema_decay);
    }
}

/* Bytes per element of a stream in format f (a float32 call). */
static size_t format_size(int f)
{
    return f == FO_FMT_F16 || f == FO_FMT_BF16 ? 2 : f == FO_FMT_Q8 || f == FO_FMT_Q8_UNSIGNED ? 1 : 4;
}

static int is_q8(int f) { return f == FO_FMT_Q8 || f == FO_FMT_Q8_UNSIGNED; }

/* The staged loop prefetches each stream STAGE_AHEAD blocks ahead: its passes over
 * a block (widen, update, round back) leave the hardware prefetchers idle for
 * long stretches, and without it the 16-bit rows ran at some 63% of their
 * ceilings instead of 85-90% (bench --algo lowp, n = 1e7). */
#define STAGE_AHEAD 4

static void prefetch(const void *x, size_t nbytes, int write)
{
    for (size_t o = 0; o < nbytes; o += 64) {
        if (write)
            __builtin_prefetch((const char *)x + o, 1, 3);
        else
            __builtin_prefetch((const char *)x + o, 0, 3);
    }
}

/* The staged block loop (a float32 call with storage formats): per block of
 * FO_BLOCK elements (8-bit state: one quantization block, since ranges start
 * on blocks), 8-bit states are dequantized into buffers on the stack, the
 * rule's staged kernel (kernels.h) runs with the 16-bit streams widened and
 * rounded back in its own loop, the 8-bit states are requantized with the
 * block's new maximum, and the EMA follows the parameters as stored. */
static void staged_range(const update_ctx *u, size_t i, size_t lo, size_t hi,
                         const fo_array_coef *array_coef, unsigned flags)
{
    fo_array_coef a = *array_coef;
    const fo_formats *f = u->fmt;
    const size_t k = u->k;
    char *const p = u->x[FO_SLOT_P * k + i], *const g = u->x[FO_SLOT_G * k + i];
    float *const ema = u->x[FO_SLOT_EMA * k + i];
    uint16_t *const comp = u->x[FO_SLOT_KAHAN * k + i];
    const int p16 = f->p != FO_FMT_NATIVE;
    const size_t ps = format_size(f->p), gs = format_size(f->g);  /* bytes per element */
    char *state[FO_MAX_STATES];
    float *absmax[FO_MAX_STATES];
    int kind[FO_MAX_STATES];  /* this array's format of each slot */
    for (int j = 0; j < FO_MAX_STATES; j++) {
        state[j] = u->x[(FO_SLOT_STATE + j) * k + i];
        absmax[j] = u->x[(FO_SLOT_ABSMAX + j) * k + i];
        kind[j] = is_q8(f->state[j]) && !absmax[j] ? FO_FMT_NATIVE : f->state[j];
    }
    const uint64_t key = f->rounding == FO_ROUND_STOCHASTIC
        ? fo_rounding_key(f->seed, u->t, f->stream ? f->stream[i] : (uint64_t)i) : 0;
    float pbuf[FO_BLOCK], gbuf[FO_BLOCK], sbuf[FO_MAX_STATES][FO_BLOCK];
    for (size_t b = lo; b < hi; b += FO_BLOCK) {
        const size_t m = hi - b < FO_BLOCK ? hi - b : FO_BLOCK;
        const size_t ahead = b + STAGE_AHEAD * FO_BLOCK;
        if (ahead < hi) {
            const size_t ma = hi - ahead < FO_BLOCK ? hi - ahead : FO_BLOCK;
            prefetch(p + ahead * ps, ma * ps, 1);
            prefetch(g + ahead * gs, ma * gs, 0);
            for (int j = 0; j < FO_MAX_STATES; j++)
                if (state[j])
                    prefetch(state[j] + ahead * format_size(kind[j]), ma * format_size(kind[j]), 1);
            if (comp)
                prefetch(comp + ahead, ma * 2, 1);
            if (ema)
                prefetch(ema + ahead, ma * 4, 1);
        }
        fo_stage st = {{0}, {0}, f->rounding, key, b, comp ? comp + b : NULL,
                       p16 && ema ? pbuf : NULL};
        st.x[0] = p + b * ps;
        st.fmt[0] = f->p;
        if (u->sources > 1) {
            kern->sum_sources[FO_F32](m, gbuf, (const float *)g + b, u->sources,
                                      u->source_stride, u->source_scale);
            st.x[1] = gbuf;
        } else {
            st.x[1] = g + b * gs;
            st.fmt[1] = f->g;
        }
        for (int j = 0; j < FO_MAX_STATES; j++) {
            if (!state[j])
                continue;
            if (is_q8(kind[j])) {
                fmtk->q8_load(m, sbuf[j], (const uint8_t *)state[j] + b,
                              absmax[j][b / FO_Q8_BLOCK], &fo_qmaps[kind[j] == FO_FMT_Q8_UNSIGNED]);
                st.x[2 + j] = sbuf[j];
            } else {
                st.x[2 + j] = state[j] + b * format_size(kind[j]);
                st.fmt[2 + j] = kind[j];
            }
        }
        a.start = b;
        u->staged(m, &st, u->coef, &a, flags);
        for (int j = 0; j < FO_MAX_STATES; j++)
            if (state[j] && is_q8(kind[j]))
                absmax[j][b / FO_Q8_BLOCK] =
                    fmtk->q8_store(m, (uint8_t *)state[j] + b, sbuf[j],
                                   &fo_qmaps[kind[j] == FO_FMT_Q8_UNSIGNED]);
        if (ema)
            kern->ema[FO_F32](m, ema + b, p16 ? pbuf : (float *)p + b, u->ema_decay);
    }
}

/* The formats a float32 call can stage: 16-bit p and g, bfloat16 or 8-bit
 * state, the three roundings; a gradient of several sources in float32 only. */
static int formats_valid(const fo_formats *f, int sources)
{
    const int p16 = f->p == FO_FMT_F16 || f->p == FO_FMT_BF16;
    if (!(f->p == FO_FMT_NATIVE || p16) ||
        !(f->g == FO_FMT_NATIVE || f->g == FO_FMT_F16 || f->g == FO_FMT_BF16) ||
        (sources > 1 && f->g != FO_FMT_NATIVE) ||
        f->rounding < FO_ROUND_NEAREST || f->rounding > FO_ROUND_KAHAN)
        return 0;
    for (int j = 0; j < FO_MAX_STATES; j++)
        if (!(f->state[j] == FO_FMT_NATIVE || f->state[j] == FO_FMT_BF16 || is_q8(f->state[j])))
            return 0;
    return 1;
}

static int formats_q8(const fo_formats *f)
{
    for (int j = 0; j < FO_MAX_STATES; j++)
        if (is_q8(f->state[j]))
            return 1;
    return 0;
}

/* Stochastic rounding's key for one array of one step (formats.c draws element
 * j's bits from it): splitmix64's output function over seed, step and stream. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

uint64_t fo_rounding_key(uint64_t seed, int64_t t, uint64_t stream)
{
    return mix64(mix64(mix64(seed) ^ (uint64_t)t) ^ stream);
}

/* ---- Rules with a reduction (rules.h, FO_REDUCE_RULES) ----------------------------
 * Reduce pass: every array is cut into blocks of FO_BLOCK elements from its
 * start; the kernel runs on one block with FO_REDUCE and writes the block's
 * FO_MAX_SUMS quantities into buffers on the stack, whose sums of squares
 * (kern->sumsq: fixed lanes, in double) are the block's partial sums. An
 * array's sums are its blocks' partial sums added in order, from 0. In
 * parallel the pool fills the partial sums of a window of REDUCE_WINDOW blocks
 * (REDUCE_GROUP per pool chunk) into a buffer on the stack, which is then added
 * in order: the same for any thread count. Then the rule's finish gives each
 * array its factor, and the apply pass runs as any update (the EMA after it).
 * Arrays are taken REDUCE_ARRAYS at a time: their pointers, sums and factors
 * live on the stack (some 13 KiB in all). */
#define REDUCE_ARRAYS 64
#define REDUCE_WINDOW 512
#define REDUCE_GROUP 32

static size_t blocks_of(size_t n) { return (n + FO_BLOCK - 1) / FO_BLOCK; }

/* The reduce pass over elements [lo, hi) of array i, one block: out[j] = the sum
 * of squares of the kernel's quantity j. */
static void reduce_block(const update_ctx *u, size_t i, size_t lo, size_t hi, double *out)
{
    void *x[FO_NSLOTS];
    slots_at(x, u->x, u->k, i, lo, u->elem_size);
    unsigned flags = u->flags | FO_REDUCE;
    fo_array_coef a = array_coef(u, i, lo, &flags);
    double gradient[FO_BLOCK], q[FO_MAX_SUMS][FO_BLOCK];  /* room for either type */
    if (u->sources > 1) {
        kern->sum_sources[u->dtype](hi - lo, gradient, x[FO_SLOT_G], u->sources,
                                    u->source_stride, u->source_scale);
        x[FO_SLOT_G] = gradient;
    }
    for (int j = 0; j < FO_MAX_SUMS; j++)
        a.sums_of[j] = q[j];
    u->kernel(hi - lo, x, u->coef, &a, flags);
    int bad = 0;
    for (int j = 0; j < FO_MAX_SUMS; j++)
        kern->sumsq[u->dtype](hi - lo, q[j], 1.0, &out[j], &bad);
}

/* A pool job: blocks [b0, b1) of the arrays, numbered in order. */
typedef struct {
    const update_ctx *u;
    const size_t *n;
    size_t b0, b1;
    double *part;    /* part[(b - b0) * FO_MAX_SUMS + j] */
} reduce_job;

static void reduce_share(const void *x, size_t pc, size_t local[2])
{
    const reduce_job *j = x;
    const size_t lo = j->b0 + pc * REDUCE_GROUP;
    const size_t hi = j->b1 - lo < REDUCE_GROUP ? j->b1 : lo + REDUCE_GROUP;
    /* local = (i, base): the first array that can hold block lo, its first block */
    size_t i = local[0], base = local[1];
    while (base + blocks_of(j->n[i]) <= lo)
        base += blocks_of(j->n[i++]);
    local[0] = i;
    local[1] = base;
    for (size_t b = lo; b < hi; b++) {
        while (b >= base + blocks_of(j->n[i]))
            base += blocks_of(j->n[i++]);
        const size_t off = (b - base) * FO_BLOCK;
        const size_t end = j->n[i] - off < FO_BLOCK ? j->n[i] : off + FO_BLOCK;
        reduce_block(j->u, i, off, end, j->part + (b - j->b0) * FO_MAX_SUMS);
    }
}

/* Both passes over arrays [0, k) of `whole`, REDUCE_ARRAYS at a time. */
static void update_reduced(const update_ctx *whole, const size_t *n, fo_finish_fn finish)
{
    for (size_t g0 = 0; g0 < whole->k; g0 += REDUCE_ARRAYS) {
        const size_t kg = whole->k - g0 < REDUCE_ARRAYS ? whole->k - g0 : REDUCE_ARRAYS;
        void *x[FO_NSLOTS * REDUCE_ARRAYS];
        size_t ng[REDUCE_ARRAYS], blocks = 0, total = 0;
        double sums[REDUCE_ARRAYS][FO_MAX_SUMS], factor[REDUCE_ARRAYS];
        for (size_t s = 0; s < FO_NSLOTS; s++)
            for (size_t i = 0; i < kg; i++)
                x[s * kg + i] = whole->x[s * whole->k + g0 + i];
        for (size_t i = 0; i < kg; i++) {
            ng[i] = n[g0 + i];
            blocks += blocks_of(ng[i]);
            total += ng[i];
            for (int j = 0; j < FO_MAX_SUMS; j++)
                sums[i][j] = 0.0;
        }
        update_ctx u = *whole;
        u.k = kg;
        u.x = x;
        u.weight_decay = whole->weight_decay ? whole->weight_decay + g0 : NULL;
        u.factors = whole->factors ? whole->factors + g0 : NULL;

        int mark;
        const int nt = threads_for(total, u.elem_size, &mark);
        double out[FO_MAX_SUMS];
        if (nt > 1) {
            double part[REDUCE_WINDOW * FO_MAX_SUMS];
            reduce_job j = {&u, ng, 0, 0, part};
            size_t i = 0, base = 0;  /* the array of block b, and its first block */
            for (; j.b0 < blocks; j.b0 = j.b1) {
                j.b1 = blocks - j.b0 < REDUCE_WINDOW ? blocks : j.b0 + REDUCE_WINDOW;
                fo_pool_run(nt, (j.b1 - j.b0 + REDUCE_GROUP - 1) / REDUCE_GROUP, reduce_share, &j);
                for (size_t b = j.b0; b < j.b1; b++) {
                    while (b >= base + blocks_of(ng[i]))
                        base += blocks_of(ng[i++]);
                    for (int s = 0; s < FO_MAX_SUMS; s++)
                        sums[i][s] += part[(b - j.b0) * FO_MAX_SUMS + s];
                }
            }
        } else {
            for (size_t i = 0; i < kg; i++)
                for (size_t off = 0; off < ng[i]; off += FO_BLOCK) {
                    reduce_block(&u, i, off, ng[i] - off < FO_BLOCK ? ng[i] : off + FO_BLOCK, out);
                    for (int s = 0; s < FO_MAX_SUMS; s++)
                        sums[i][s] += out[s];
                }
        }
        if (mark)
            fo_pool_call_ended();
        for (size_t i = 0; i < kg; i++)
            factor[i] = ng[i] ? finish(u.coef, ng[i], sums[i]) : 0.0;
        u.factor = factor;
        run(kg, ng, u.elem_size, 1, update_range, &u);
    }
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

static size_t elem_size(int dtype)
{
    return dtype == FO_F32 ? sizeof(float) : dtype == FO_F64 ? sizeof(double) : 2;
}

/* The serial thresholds that apply: a 16-bit or staged call computes in float32. */
static size_t threshold_size(int dtype) { return dtype == FO_F64 ? sizeof(double) : sizeof(float); }

/* A gradient scale below the dtype's normal range (clipping a norm near its
 * largest values) loses bits when rounded to the dtype: it is applied as two
 * factors instead, f[0] = 2^MIN_EXP (the smallest normal power of two whose
 * frexp exponent is MIN_EXP) and f[1] = scale / f[0]; g*f[0] is exact for every
 * element that matters. Returns 1 when split. The NumPy twin: _split_scale. */
static int split_scale(double scale, int dtype, double f[2])
{
    const int min_exp = dtype == FO_F32 ? FLT_MIN_EXP : DBL_MIN_EXP;
    const double tiny = dtype == FO_F32 ? FLT_MIN : DBL_MIN;
    if (scale == 0.0 || fabs(scale) >= tiny)
        return 0;
    f[0] = ldexp(1.0, min_exp);
    f[1] = ldexp(scale, -min_exp);
    return 1;
}

int fo_update(int rule, int dtype, size_t k, void *const *x, const size_t *n, fo_step *s)
{
    if (rule < 0 || rule >= FO_NUM_RULES || (dtype != FO_F32 && dtype != FO_F64))
        return -1;
    if (s->decay & ~rule_decay[rule] || (s->decay & (s->decay - 1)))
        return -1;
    const fo_formats *f = s->formats;
    if (f && (dtype != FO_F32 || !formats_valid(f, s->sources)))
        return -1;
    /* Storage formats are staged for elementwise rules only: a rule with a
     * reduction or a factored state takes its streams in the call's dtype. */
    if (f && (kern->finish[rule][dtype] || s->factors))
        return -1;
    if (f && formats_q8(f) && !qmaps_init())
        return -1;
    fo_coef coef;
    const unsigned flags = kern->prepare[rule][dtype](s, &coef);
    if (flags == FO_INVALID)
        return -1;
    update_ctx u = {kern->kernel[rule][dtype], kern->staged[rule], &coef, flags, s->decay, 0,
                    {1.0, 1.0}, k, elem_size(dtype), dtype, x, s->weight_decay, s->lr, s->grad_scale,
                    s->ema_decay, s->sources, s->source_stride, s->source_scale, f, s->t};
    if (split_scale(s->grad_scale, dtype, u.split_scale))
        u.split = FO_SCALE_SPLIT;
    u.factors = s->factors;
    if (kern->finish[rule][dtype])
        update_reduced(&u, n, kern->finish[rule][dtype]);
    else
        run(k, n, u.elem_size, f && formats_q8(f) ? FO_Q8_BLOCK : 1, update_range, &u);
    return 0;
}

/* ---- The global norm --------------------------------------------------------------
 * The sum of squares in double, from per-chunk partial sums (fixed chunks of
 * each array) added in order: the same for any thread count. In parallel, the
 * partial sums of a window of NORM_WINDOW chunks are filled by the pool
 * (NORM_GROUP chunks per pool chunk) into a buffer on the stack (8 KiB), then
 * added in order; then the next window. A float64 sum that overflowed, or that is so
 * small that squares may have underflowed, is measured again with every element
 * scaled by the power of two that brings the largest to [0.5, 1) (as BLAS's
 * nrm2 scales); float32 squares always fit in double. 16-bit gradients are
 * widened to float32 (exactly) chunk by chunk, then summed as float32 ones. */
#define NORM_WINDOW 1024
#define NORM_GROUP 16
/* Below this a sum may have lost squares to underflow (each at most 2^-1074:
 * relative to the sum below 2^-53 only above about n * 2^-1021). */
#define FO_NORM_TINY 0x1p-900

/* The partial sum of one chunk (n <= FO_NORM_CHUNK). */
static void sumsq_chunk(int dtype, size_t n, const void *g, double scale, double *out,
                        int *nonfinite)
{
    if (dtype == FO_F16 || dtype == FO_BF16) {
        float wide[FO_NORM_CHUNK];
        fmtk->load16[dtype - FO_F16](n, wide, g);
        kern->sumsq[FO_F32](n, wide, scale, out, nonfinite);
    } else {
        kern->sumsq[dtype](n, g, scale, out, nonfinite);
    }
}

typedef struct {
    size_t k, c0, c1;      /* norm chunks [c0, c1) of all arrays, numbered in order */
    void *const *g;
    const size_t *n;
    size_t es;
    int dtype;
    double scale;
    double *part;          /* part[c - c0] */
    int *bad;              /* bad[pool chunk]: it saw an Inf or NaN */
} norm_job;

static void norm_share(const void *x, size_t pc, size_t local[2])
{
    const size_t CH = FO_NORM_CHUNK;
    norm_job *j = (norm_job *)x;
    const size_t lo = j->c0 + pc * NORM_GROUP;
    const size_t hi = j->c1 - lo < NORM_GROUP ? j->c1 : lo + NORM_GROUP;
    /* local = (i, base): the first array that can hold chunk lo, its first chunk */
    size_t i = local[0], base = local[1];
    int bad = 0;
    while (base + (j->n[i] + CH - 1) / CH <= lo)
        base += (j->n[i++] + CH - 1) / CH;
    local[0] = i;
    local[1] = base;
    for (size_t c = lo; c < hi; c++) {
        while (c >= base + (j->n[i] + CH - 1) / CH)
            base += (j->n[i++] + CH - 1) / CH;
        const size_t off = (c - base) * CH;
        sumsq_chunk(j->dtype, j->n[i] - off < CH ? j->n[i] - off : CH,
                    (const char *)j->g[i] + off * j->es, j->scale, &j->part[c - j->c0], &bad);
    }
    j->bad[pc] = bad;
}

/* Sum of (g*scale)^2 over every element, in the fixed order. */
static double sum_of_squares(int dtype, size_t k, void *const *g, const size_t *n,
                             double scale, int nt, int *nonfinite)
{
    const size_t CH = FO_NORM_CHUNK, es = elem_size(dtype);
    size_t nchunks = 0;
    for (size_t i = 0; i < k; i++)
        nchunks += (n[i] + CH - 1) / CH;
    double sum = 0.0;
    int bad = 0;
    if (nt > 1) {
        double part[NORM_WINDOW];
        int flags[NORM_WINDOW / NORM_GROUP];
        norm_job j = {k, 0, 0, g, n, es, dtype, scale, part, flags};
        for (; j.c0 < nchunks; j.c0 = j.c1) {
            j.c1 = nchunks - j.c0 < NORM_WINDOW ? nchunks : j.c0 + NORM_WINDOW;
            const size_t pcs = (j.c1 - j.c0 + NORM_GROUP - 1) / NORM_GROUP;
            fo_pool_run(nt, pcs, norm_share, &j);
            for (size_t c = 0; c < j.c1 - j.c0; c++)
                sum += part[c];
            for (size_t pc = 0; pc < pcs; pc++)
                bad |= flags[pc];
        }
    } else {
        for (size_t i = 0; i < k; i++)
            for (size_t off = 0; off < n[i]; off += CH) {
                double s;
                sumsq_chunk(dtype, n[i] - off < CH ? n[i] - off : CH,
                            (const char *)g[i] + off * es, scale, &s, &bad);
                sum += s;
            }
    }
    *nonfinite = bad;
    return sum;
}

double fo_norm(int dtype, size_t k, void *const *g, const size_t *n, int *nonfinite)
{
    if (dtype < FO_F32 || dtype > FO_BF16)
        return NAN;
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += n[i];
    int mark;
    const int nt = threads_for(total, threshold_size(dtype), &mark);
    double sum = sum_of_squares(dtype, k, g, n, 1.0, nt, nonfinite);
    double norm = sqrt(sum);
    if (dtype == FO_F64 && !*nonfinite && (sum == INFINITY || sum < FO_NORM_TINY)) {
        double largest = 0.0;  /* the rare path: serial */
        for (size_t i = 0; i < k; i++) {
            const double m = kern->maxabs[dtype](n[i], g[i]);
            largest = m > largest ? m : largest;
        }
        norm = 0.0;
        if (largest > 0.0) {
            int e, bad;
            frexp(largest, &e);
            if (e < -1020)  /* 2^-e must itself be finite: subnormal values */
                e = -1020;
            norm = ldexp(sqrt(sum_of_squares(dtype, k, g, n, ldexp(1.0, -e), nt, &bad)), e);
        }
    }
    if (mark)
        fo_pool_call_ended();
    return norm;
}

/* ---- Ceilings (benchmarks) ------------------------------------------------------ */

typedef struct { void *const *x; size_t k, elem_size; int nstates, dtype; } ceiling_ctx;

static void ceiling_range(const void *v, size_t i, size_t lo, size_t hi)
{
    const ceiling_ctx *c = v;
    void *x[FO_NSLOTS];
    slots_at(x, c->x, c->k, i, lo, c->elem_size);
    kern->ceiling[c->dtype](hi - lo, x, c->nstates);
}

int fo_ceiling(int dtype, int nstates, size_t k, void *const *x, const size_t *n)
{
    if ((dtype != FO_F32 && dtype != FO_F64) || nstates < 0 || nstates > FO_MAX_STATES + 1)
        return -1;
    ceiling_ctx c = {x, k, elem_size(dtype), nstates, dtype};
    run(k, n, c.elem_size, 1, ceiling_range, &c);
    return 0;
}

/* A float32 call with storage formats: each stream moved once in its format. */
typedef struct { void *const *x; size_t k; const fo_formats *f; int nstates; } fceiling_ctx;

#define CEILING_BLOCK 1024

static void fceiling_range(const void *v, size_t i, size_t lo, size_t hi)
{
    const fceiling_ctx *c = v;
    const fo_formats *f = c->f;
    const size_t k = c->k, gs = format_size(f->g);
    const char *g = c->x[FO_SLOT_G * k + i];
    char *rw[FO_MAX_STATES + 3];
    size_t size[FO_MAX_STATES + 3];
    float *absmax[FO_MAX_STATES];
    int nrw = 0, nabs = 0;
    rw[nrw] = c->x[FO_SLOT_P * k + i];
    size[nrw++] = format_size(f->p);
    for (int j = 0; j < c->nstates && j < FO_MAX_STATES; j++) {
        if (!c->x[(FO_SLOT_STATE + j) * k + i])
            continue;
        float *am = c->x[(FO_SLOT_ABSMAX + j) * k + i];
        const int q8 = is_q8(f->state[j]) && am;
        rw[nrw] = c->x[(FO_SLOT_STATE + j) * k + i];
        size[nrw++] = q8 ? 1 : format_size(is_q8(f->state[j]) ? FO_FMT_NATIVE : f->state[j]);
        if (q8)
            absmax[nabs++] = am;
    }
    if (f->rounding == FO_ROUND_KAHAN && f->p != FO_FMT_NATIVE) {
        rw[nrw] = c->x[FO_SLOT_KAHAN * k + i];
        size[nrw++] = 2;
    }
    if (c->x[FO_SLOT_EMA * k + i]) {
        rw[nrw] = c->x[FO_SLOT_EMA * k + i];
        size[nrw++] = 4;
    }
    uint32_t r = 0;
    for (size_t b = lo; b < hi; b += CEILING_BLOCK) {
        const size_t m = hi - b < CEILING_BLOCK ? hi - b : CEILING_BLOCK;
        r = fmtk->read_bytes(m * gs, g + b * gs);
        for (int s = 0; s < nrw; s++)
            fmtk->touch[size[s] == 1 ? 0 : size[s] == 2 ? 1 : 2](m, rw[s] + b * size[s], r);
    }
    for (int j = 0; j < nabs; j++)
        fmtk->touch[2]((hi - lo + FO_Q8_BLOCK - 1) / FO_Q8_BLOCK, absmax[j] + lo / FO_Q8_BLOCK, r);
}

int fo_ceiling_formats(const fo_formats *f, int nstates, size_t k, void *const *x,
                       const size_t *n)
{
    if (!f || nstates < 0 || nstates > FO_MAX_STATES || !formats_valid(f, 1))
        return -1;
    fceiling_ctx c = {x, k, f, nstates};
    run(k, n, sizeof(float), formats_q8(f) ? FO_Q8_BLOCK : 1, fceiling_range, &c);
    return 0;
}

/* ---- The 8-bit maps and the formats' element operations (tests) ------------------ */

fo_qmap fo_qmaps[2];

/* The dynamic maps of Dettmers et al. (bitsandbytes' create_dynamic_map with
 * its defaults: 7 exponent bits, 8 in all), computed in double and rounded
 * once: for i = 0..6, the midpoints of n + 1 evenly spaced points from 0.1 to 1,
 * scaled by 10^(i-6), with n = 2^i (signed: and their negatives) or 2^(i+1)
 * (unsigned); then 0 and 1. bitsandbytes computes them in float32: its table
 * differs from this one by 1 or 2 units in the last place in some codes.
 * fastoptim._fallback.dynamic_map is the same computation. */
static int qmap_build(fo_qmap *q, int is_signed)
{
    static const double scale[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    float v[256];
    int count = 0;
    for (int i = 0; i < 7; i++) {
        const int n = is_signed ? (1 << i) : (1 << (i + 1));
        for (int j = 0; j < n; j++) {
            const double mean = 0.1 + 0.9 * (double)(2 * j + 1) / (double)(2 * n);
            v[count++] = (float)(scale[i] * mean);
            if (is_signed)
                v[count++] = -(float)(scale[i] * mean);
        }
    }
    v[count++] = 0.0f;
    v[count++] = 1.0f;
    if (count != 256)
        return 0;
    for (int a = 1; a < 256; a++)  /* insertion sort */
        for (int b = a; b > 0 && v[b - 1] > v[b]; b--) {
            const float t = v[b];
            v[b] = v[b - 1];
            v[b - 1] = t;
        }
    memcpy(q->value, v, sizeof v);
    q->zero = is_signed ? 127 : 0;
    q->nmag = is_signed ? 129 : 256;
    if (q->value[q->zero] != 0.0f)
        return 0;
    const float *mag = q->value + q->zero;  /* 0, then the magnitudes upwards */
    for (int j = 0; j < 257; j++)
        q->thr[j] = INFINITY;
    for (int j = 0; j + 1 < q->nmag; j++) {
        if (!(mag[j] < mag[j + 1]))
            return 0;
        const double mid = ((double)mag[j] + (double)mag[j + 1]) / 2.0;  /* exact */
        float t = (float)mid;
        if ((double)t <= mid)
            t = nextafterf(t, INFINITY);
        q->thr[j] = t;  /* the smallest float above the midpoint */
    }
    int j = 0;
    for (uint32_t key = 0; key < FO_Q8_KEYS; key++) {
        const uint32_t lo_bits = (FO_Q8_KEY0 + key) << 16, hi_bits = lo_bits + 0x10000u;
        float lo, hi;
        memcpy(&lo, &lo_bits, sizeof lo);
        memcpy(&hi, &hi_bits, sizeof hi);
        while (q->thr[j] < lo)
            j++;
        uint32_t inside = 0x10000u;
        if (q->thr[j] < hi) {
            uint32_t t;
            memcpy(&t, &q->thr[j], sizeof t);
            if (q->thr[j + 1] < hi || t >> 16 != lo_bits >> 16)  /* two in one bucket */
                return 0;
            inside = t & 0xFFFFu;
        }
        q->bucket[key] = (uint32_t)j << 17 | inside;
    }
    /* below the first key nothing is counted: the first threshold is above it */
    if (q->thr[0] < 0x1p-23f)
        return 0;
    return 1;
}

/* Built by fo_init; the call from fo_update covers a C program that did not
 * call fo_init (before any thread does). */
static int qmaps_init(void)
{
    static int built = 0, ok = 0;
    if (!built) {
        ok = qmap_build(&fo_qmaps[0], 1) && qmap_build(&fo_qmaps[1], 0);
        built = 1;
    }
    return ok;
}

const float *fo_q8_map(int format)
{
    if (!qmaps_init() || !is_q8(format))
        return NULL;
    return fo_qmaps[format == FO_FMT_Q8_UNSIGNED].value;
}

void fo_q8_encode(int format, size_t n, const float *src, unsigned char *codes, float *absmax)
{
    if (!qmaps_init() || !is_q8(format))
        return;
    const fo_qmap *q = &fo_qmaps[format == FO_FMT_Q8_UNSIGNED];
    for (size_t b = 0; b < n; b += FO_Q8_BLOCK)
        absmax[b / FO_Q8_BLOCK] = fmtk->q8_store(n - b < FO_Q8_BLOCK ? n - b : FO_Q8_BLOCK,
                                                 codes + b, src + b, q);
}

void fo_q8_decode(int format, size_t n, const unsigned char *codes, const float *absmax,
                  float *dst)
{
    if (!qmaps_init() || !is_q8(format))
        return;
    const fo_qmap *q = &fo_qmaps[format == FO_FMT_Q8_UNSIGNED];
    for (size_t b = 0; b < n; b += FO_Q8_BLOCK)
        fmtk->q8_load(n - b < FO_Q8_BLOCK ? n - b : FO_Q8_BLOCK, dst + b, codes + b,
                      absmax[b / FO_Q8_BLOCK], q);
}

void fo_to_float(int format, size_t n, const void *src, float *dst)
{
    if (format == FO_FMT_F16 || format == FO_FMT_BF16)
        fmtk->load16[format - FO_FMT_F16](n, dst, src);
    else if (format == FO_FMT_NATIVE)
        memcpy(dst, src, n * sizeof(float));
}

void fo_from_float(int format, int rounding, uint64_t key, uint64_t first, size_t n,
                   const float *src, void *dst)
{
    if (format != FO_FMT_F16 && format != FO_FMT_BF16)
        return;
    if (rounding == FO_ROUND_STOCHASTIC)
        fmtk->store16_sr[format - FO_FMT_F16](n, dst, src, key, first);
    else
        fmtk->store16[format - FO_FMT_F16](n, dst, src);
}

#ifndef FO_COMPILER
#define FO_COMPILER "unknown"
#endif
#ifndef FO_FLAGS
#define FO_FLAGS "unknown"
#endif
const char *fo_compiler(void) { return FO_COMPILER; }
const char *fo_kernel_flags(void) { return FO_FLAGS; }
