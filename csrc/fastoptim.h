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
/* Element types. */
enum fo_dtype { FO_F32 = 0, FO_F64 = 1 };

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
} fo_step;

/* The pointer slots of fo_update's x, k pointers each: the parameter, its
 * gradient, the rule's state slots, then streams any rule may have. */
enum { FO_SLOT_P = 0, FO_SLOT_G = 1, FO_SLOT_STATE = 2,
       FO_SLOT_EMA = 2 + FO_MAX_STATES,   /* the parameters' moving average */
       FO_NSLOTS };

/* Apply `rule` to k arrays of type `dtype`. x holds FO_NSLOTS * k pointers:
 * x[FO_SLOT_P*k + i] the parameter, x[FO_SLOT_G*k + i] its gradient,
 * x[(FO_SLOT_STATE+j)*k + i] state slot j (NULL where the rule's flags leave
 * slot j out), x[FO_SLOT_EMA*k + i] its moving average (or NULL). Returns 0, or -1
 * (nothing written) for an unknown rule or dtype, a flag combination the rule
 * was not compiled for, or a decay style it does not take. */
int fo_update(int rule, int dtype, size_t k, void *const *x, const size_t *n, fo_step *s);

/* The rule list as strings (rules.h), for the bindings' consistency checks:
 * what = 0 name, 1 states, 2 hyperparameters, 3 flags, 4 scalars. */
const char *fo_rule_info(int rule, int what);
unsigned fo_rule_decay(int rule);

/* The Euclidean norm of every array together, the same for any thread count and
 * instruction set, right for any finite values (no overflow or underflow in
 * the squares); *nonfinite = 1 if any element is Inf or NaN, else 0. */
double fo_norm(int dtype, size_t k, void *const *g, const size_t *n, int *nonfinite);

/* Benchmarks: the memory traffic of an update that reads g and reads and writes
 * p and `nstates` state streams (x laid out as for fo_update, states in slots
 * 0..nstates-1, an EMA slot counted as one more), with trivial arithmetic: the
 * machine's limit for that update. */
int fo_ceiling(int dtype, int nstates, size_t k, void *const *x, const size_t *n);

#ifdef __cplusplus
}
#endif
#endif
