/* Per-range kernels, compiled once per instruction set (kernels.c) and reached
 * through a table picked at run time (driver.c). Internal to the library. */
#ifndef FASTOPTIM_KERNELS_H
#define FASTOPTIM_KERNELS_H

#include <stddef.h>

#include "fastoptim.h"

/* Per array: the gradient's scale (clipping, maximize; in two factors with
 * FO_SCALE_SPLIT) and the array's weight decay wd with dec = 1 - lr*wd; the
 * kernel rounds them to its element type. A rule with a reduction (rules.h,
 * FO_REDUCE_RULES) also gets, in its reduce pass, where to write the
 * quantities whose squares are summed (`sums_of`, blocks of at most FO_BLOCK
 * elements), and in its apply pass the array's `factor`. A factored rule gets
 * the array's fo_factors and `start`, the range's first element in the array. */
typedef struct {
    double grad_scale, grad_scale2, wd, dec;
    double factor;
    void *sums_of[FO_MAX_SUMS];
    const fo_factors *factors;
    size_t start;
} fo_array_coef;

/* A rule's per-call scalars, prepared once per call in double and rounded to
 * the element type, live in a buffer of this size. */
typedef struct { double d[16]; } fo_coef;

#define FO_INVALID (~0u)

/* prepare: from the step's arguments fill `coef` and return the kernel's flags
 * (derived flags added), or FO_INVALID for a flag combination the rule does not
 * take. kernel: elements [0, n) of one array; x[0] p, x[1] g, x[2 + j] state
 * slot j, each already offset to the range; `flags` adds the array's decay bit. */
typedef unsigned (*fo_prepare_fn)(fo_step *s, fo_coef *coef);
typedef void (*fo_kernel_fn)(size_t n, void *const *x, const fo_coef *coef,
                             const fo_array_coef *a, unsigned flags);
/* finish (rules with a reduction): an array's factor, in double, from its size
 * and the sums of squares of its reduce pass. */
typedef double (*fo_finish_fn)(const fo_coef *coef, size_t n, const double *sums);

/* A float32 range whose p, g and state streams may be stored in 16 bits: each
 * slot's pointer (at the range's first element; NULL where the kernel's slot
 * is) and format (FO_FMT_NATIVE, FO_FMT_F16 or FO_FMT_BF16). The staged
 * kernel widens FO_GROUP elements of each stream at a time, runs the rule's
 * loop on them and writes the results back, the parameters rounded as
 * `rounding` says, in one pass: the conversions overlap the rule's arithmetic.
 * With p_out set, it also leaves there the parameters as stored, in float32
 * (for the EMA). */
#define FO_STAGE_SLOTS (2 + FO_MAX_STATES)
#define FO_GROUP 64
typedef struct {
    void *x[FO_STAGE_SLOTS];
    int fmt[FO_STAGE_SLOTS];
    int rounding;          /* a 16-bit parameter's: FO_ROUND_NEAREST, _STOCHASTIC, _KAHAN */
    uint64_t key, first;   /* stochastic: the array's key, and x[0]'s index in the array */
    uint16_t *comp;        /* Kahan: the compensation at x[0]'s element */
    float *p_out;
} fo_stage;
typedef void (*fo_staged_fn)(size_t n, const fo_stage *st, const fo_coef *coef,
                             const fo_array_coef *a, unsigned flags);

/* Elements per block when the driver runs a range in blocks: the gradient of
 * several sources summed into a buffer on the stack, the EMA updated right
 * after its block, while the block is in cache. */
#define FO_BLOCK 256

/* Global-norm reduction: elements per partial sum and lanes per chunk. Both are
 * fixed, so the sum does not depend on the thread count or instruction set. */
#define FO_NORM_CHUNK 1024
#define FO_NORM_LANES 16   /* kernels.inc's vector code assumes 16 */

typedef struct {
    fo_prepare_fn prepare[FO_NUM_RULES][2];   /* [rule][dtype] */
    fo_kernel_fn kernel[FO_NUM_RULES][2];
    fo_finish_fn finish[FO_NUM_RULES][2];     /* NULL: no reduction */
    fo_staged_fn staged[FO_NUM_RULES];        /* float32; the driver stages the elementwise
                                                 rules only (not FO_REDUCE_RULES) */
    void (*sumsq[2])(size_t n, const void *g, double scale, double *out, int *nonfinite);
    double (*maxabs[2])(size_t n, const void *g);
    void (*ema[2])(size_t n, void *ema, const void *p, double decay);
    void (*sum_sources[2])(size_t n, void *dst, const void *src, int sources, size_t stride,
                           double scale);
    void (*ceiling[2])(size_t n, void *const *x, int nstates);
} fo_kernels;

extern const fo_kernels fo_kernels_baseline;
#ifdef FO_MULTI_ISA
extern const fo_kernels fo_kernels_avx2;
extern const fo_kernels fo_kernels_avx512;
extern const fo_kernels fo_kernels_avx512bf16;
#endif

#endif
