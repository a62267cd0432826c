/* fastoptim: fused, in-place optimizer updates over many arrays in one call.
 *
 * Plain C99, no Python. A call updates k arrays, each with its gradient and
 * state streams, n[i] contiguous elements each, by one of the rules of
 * rules.h. The caller guarantees that written streams do not overlap each
 * other or any read stream. Scalars arrive in double; the per-step scalars
 * (bias corrections, rectification terms) are computed once per call, in
 * double, from the integer step t. */
#ifndef FASTOPTIM_H
#define FASTOPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction-set levels, lowest first. */
enum fo_isa { FO_ISA_BASELINE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };
/* Element types: fo_update's arithmetic (FO_F32, FO_F64), and the 16-bit storage
 * formats (gradients of fo_norm; fo_formats). */
enum fo_dtype { FO_F32 = 0, FO_F64 = 1, FO_F16 = 2, FO_BF16 = 3 };

/* Pick the best level the CPU supports, capped at max_isa; returns the level chosen. */
int fo_init(int max_isa);
int fo_isa_in_use(void);
int fo_isa_supported(void);   /* best level this CPU supports and this build carries */
const char *fo_isa_name(int isa);

/* Threads (the pool: pool.h): n <= 0 restores the default, OMP_NUM_THREADS as
 * read at start-up or else the CPUs this process may use. */
void fo_set_num_threads(int n);
int fo_get_num_threads(void);
/* Elements; a call below the first runs serially, and below the second too
 * unless the workers are warm (awake, or the caller calls in a tight loop):
 * waking a sleeping worker costs more than it saves there. */
size_t fo_parallel_threshold(size_t elem_size);
size_t fo_parallel_threshold_asleep(size_t elem_size);
/* Set both (benchmarks that measure them; asleep is raised to awake if below). */
void fo_set_parallel_threshold(size_t elem_size, size_t awake, size_t asleep);

/* Byte ranges [lo, hi) of a call's arrays; `written` marks arrays the call writes.
 * Returns 1 when no written range overlaps any other range (read-only ranges may
 * overlap each other). Sorts `s` in place. */
typedef struct { uintptr_t lo, hi; int written; } fo_span;
int fo_spans_disjoint(fo_span *s, size_t n);

/* How this library was built. */
const char *fo_compiler(void);
const char *fo_kernel_flags(void);

struct fo_formats;  /* below */

/* A factored state of one array (Adafactor's second moment, Shazeer & Stern
 * 2018): the array, in memory order, is n / (rows*cols) matrices of rows x
 * cols; `row` holds one value per row (row r of matrix b at b*rows + r), `col`
 * one per column (column c of matrix b at b*cols + c), `per` one per matrix;
 * vectors of the array's element type. row == NULL: the array is not factored. */
typedef struct {
    const void *row, *col, *per;
    size_t rows, cols;
} fo_factors;

/* One step of a rule. */
typedef struct {
    int64_t t;                       /* this step's number, from 1 */
    double lr;                       /* learning rate */
    double h[FO_MAX_HYPER];          /* the rule's hyperparameters (rules.h order) */
    double scalars[FO_MAX_SCALARS];  /* the rule's scalar state; the call updates it */
    unsigned flags;                  /* the rule's FO_<RULE>_* options */
    unsigned decay;                  /* FO_DECAY_L2 or FO_DECAY_DECOUPLED (0: none) */
    const double *weight_decay;      /* per array, or NULL for none */
    double grad_scale;               /* gradients are read as g*grad_scale (clipping;
                                        negative to maximize) */
    double ema_decay;                /* with an EMA slot: after the update,
                                        ema = ema_decay*ema + (1-ema_decay)*p */
    int sources;                     /* > 1: the gradient is the sum, in order, of
                                        `sources` arrays source_stride elements apart
                                        (the first at the gradient slot), times
                                        source_scale, in the element type (data
                                        parallelism: every rank's slice, in rank order) */
    size_t source_stride;
    double source_scale;
    const fo_factors *factors;       /* per array, or NULL (rules that use them) */
    const struct fo_formats *formats;  /* NULL: every stream in the call's dtype */
} fo_step;

/* Storage formats (fo_step.formats), for calls in FO_F32 only: each stream is
 * staged block by block into float32 buffers, the rule's kernel runs on them
 * unchanged, and the results are written back in the stream's format. */
enum fo_format {
    FO_FMT_NATIVE = 0,      /* the call's dtype */
    FO_FMT_F16 = FO_F16,    /* IEEE binary16 (uint16 bits) */
    FO_FMT_BF16 = FO_BF16,  /* bfloat16, float32's upper half (uint16 bits): state is
                               rounded to nearest even, float32 subnormals to zero */
    FO_FMT_Q8 = 4,          /* state: 8-bit codes of the signed dynamic map (first
                               moments, momentum), one float32 absolute maximum per
                               block of FO_Q8_BLOCK elements from the array's element
                               0 (slot FO_SLOT_ABSMAX + j; where that is NULL the
                               array's slot j is float32) */
    FO_FMT_Q8_UNSIGNED = 5  /* the same with the unsigned map (values >= 0) */
};
#define FO_Q8_BLOCK 256
/* How a 16-bit parameter is written back (arithmetic in float32): rounded to
 * nearest even; stochastically (up with probability equal to the distance to
 * the lower neighbour over the gap, from a counter-based generator keyed on
 * seed, step, array and element: the same bits for any thread count); or
 * Kahan-compensated (slot FO_SLOT_KAHAN, in the parameter's format, carries
 * what rounding lost into the next step). */
enum fo_rounding { FO_ROUND_NEAREST = 0, FO_ROUND_STOCHASTIC = 1, FO_ROUND_KAHAN = 2 };
typedef struct fo_formats {
    int p;                        /* the parameter's format (and its compensation's) */
    int g;                        /* the gradient's */
    int state[FO_MAX_STATES];     /* each state slot's */
    int rounding;                 /* fo_rounding, for a 16-bit parameter */
    uint64_t seed;                /* stochastic rounding: the key's seed */
    const uint64_t *stream;       /* per array, its number in the key (NULL: its index) */
} fo_formats;

/* The pointer slots of fo_update's x, k pointers each: the parameter, its
 * gradient, the rule's state slots, then streams any rule may have. */
enum { FO_SLOT_P = 0, FO_SLOT_G = 1, FO_SLOT_STATE = 2,
       FO_SLOT_EMA = 2 + FO_MAX_STATES,   /* the parameters' moving average (float32
                                             when the parameter is 16-bit) */
       FO_SLOT_KAHAN,                     /* FO_ROUND_KAHAN's compensation */
       FO_SLOT_ABSMAX,                    /* FO_MAX_STATES slots: block maxima (FO_FMT_Q8) */
       FO_NSLOTS = FO_SLOT_ABSMAX + FO_MAX_STATES };

/* Apply `rule` to k arrays of type `dtype`. x holds FO_NSLOTS * k pointers:
 * x[FO_SLOT_P*k + i] the parameter, x[FO_SLOT_G*k + i] its gradient,
 * x[(FO_SLOT_STATE+j)*k + i] state slot j (NULL where the rule's flags leave
 * slot j out), x[FO_SLOT_EMA*k + i] its moving average (or NULL), and with
 * s->formats the Kahan and block-maximum slots. Returns 0, or -1 (nothing
 * written) for an unknown rule or dtype, a flag combination the rule was not
 * compiled for, a decay style it does not take, or formats it cannot stage
 * (any with FO_F64; 16-bit gradients of several sources). */
int fo_update(int rule, int dtype, size_t k, void *const *x, const size_t *n, fo_step *s);

/* The rule list as strings (rules.h), for the bindings' consistency checks:
 * what = 0 name, 1 states, 2 hyperparameters, 3 flags, 4 scalars. */
const char *fo_rule_info(int rule, int what);
unsigned fo_rule_decay(int rule);

/* The Euclidean norm of every array together (dtype: FO_F32, FO_F64, FO_F16 or
 * FO_BF16), the same for any thread count and instruction set, right for any
 * finite values (no overflow or underflow in the squares); *nonfinite = 1 if
 * any element is Inf or NaN, else 0. */
double fo_norm(int dtype, size_t k, void *const *g, const size_t *n, int *nonfinite);

/* Benchmarks: the memory traffic of an update that reads g and reads and writes
 * p and `nstates` state streams (x laid out as for fo_update, states in slots
 * 0..nstates-1, an EMA slot counted as one more), with trivial arithmetic: the
 * machine's limit for that update. */
int fo_ceiling(int dtype, int nstates, size_t k, void *const *x, const size_t *n);
/* The same for a float32 call with storage formats `f`: p, g and state slots
 * 0..nstates-1 (NULL ones skipped) in their formats (8-bit state: the codes and the block maxima),
 * the Kahan compensation with FO_ROUND_KAHAN and a float32 EMA when its slot is
 * set, each moved once with trivial arithmetic. */
int fo_ceiling_formats(const fo_formats *f, int nstates, size_t k, void *const *x,
                       const size_t *n);

/* The storage formats' element operations, at the instruction set in use (tests
 * and the NumPy twin's checks): a 16-bit format to float32 and back (rounding
 * FO_ROUND_NEAREST, or FO_ROUND_STOCHASTIC with the key of fo_rounding_key and
 * element numbers from `first`); the 8-bit quantizer over blocks of
 * FO_Q8_BLOCK from element 0 (absmax: one per block) and its map. */
void fo_to_float(int format, size_t n, const void *src, float *dst);
void fo_from_float(int format, int rounding, uint64_t key, uint64_t first, size_t n,
                   const float *src, void *dst);
uint64_t fo_rounding_key(uint64_t seed, int64_t t, uint64_t stream);
void fo_q8_encode(int format, size_t n, const float *src, unsigned char *codes,
                  float *absmax);
void fo_q8_decode(int format, size_t n, const unsigned char *codes, const float *absmax,
                  float *dst);
const float *fo_q8_map(int format);
/* 16-bit conversions with the CPU's instructions where it has them (F16C,
 * AVX-512 BF16), else portable: returns a description of what is in use. */
const char *fo_formats_impl(void);
/* Tests: 0 turns the AVX-512 BF16 conversion off (portable bfloat16 at the
 * avx512 level), 1 back on where the CPU has it; returns 1 when it is in use. */
int fo_set_bf16_instructions(int on);

#ifdef __cplusplus
}
#endif
#endif
