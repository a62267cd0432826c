/* Per-range kernels, compiled once per instruction set (kernels.c) and reached
 * through a table picked at run time (driver.c). Internal to the library. */
#ifndef FASTOPTIM_KERNELS_H
#define FASTOPTIM_KERNELS_H

#include <stddef.h>

/* Scalars are prepared once per call, in double, then rounded to the element
 * type; every per-element operation is done in the element type. */
typedef struct { float lr; } fo_gd_c_f32;
typedef struct { double lr; } fo_gd_c_f64;
typedef struct { float beta, one_minus_beta, lr; } fo_mom_c_f32;
typedef struct { double beta, one_minus_beta, lr; } fo_mom_c_f64;
typedef struct { float b1, omb1, b2, omb2, step, rsbc2, eps; } fo_adam_c_f32;
typedef struct { double b1, omb1, b2, omb2, step, rsbc2, eps; } fo_adam_c_f64;

/* The family (see fastoptim.h). Every kernel starts from gi = g * gs (gs: the
 * clipping scale, negated to maximize); `mode` holds the FO_M_* bits of this
 * array, so per-key weight decay is a per-array mode and coefficient: wd (L2,
 * added to the gradient) or dec = 1 - lr*wd (decoupled, scales p first). */
enum {
    FO_M_L2 = 1,        /* gi += wd * p */
    FO_M_DEC = 2,       /* p *= dec before the update */
    FO_M_A = 4,         /* per-algorithm options, in the order the kernel documents */
    FO_M_B = 8,
    FO_M_C = 16
};
#define FO_FAMILY_COMMON(T) T gs, wd, dec; int mode;
#define FO_SGD_FIELDS(T) FO_FAMILY_COMMON(T) T lr, mom, omd, ng;
#define FO_ADAMX_FIELDS(T) FO_FAMILY_COMMON(T) T b1, omb1, b2, omb2, step, rsbc2, eps;
#define FO_NADAM_FIELDS(T) FO_FAMILY_COMMON(T) T b1, omb1, b2, omb2, cg, cm, rsbc2, eps;
#define FO_RADAM_FIELDS(T) FO_FAMILY_COMMON(T) T b1, omb1, b2, omb2, step, eps;
#define FO_ADAMAX_FIELDS(T) FO_FAMILY_COMMON(T) T b1, omb1, b2, step, eps;
#define FO_ADAGRAD_FIELDS(T) FO_FAMILY_COMMON(T) T clr, eps;
#define FO_RMSPROP_FIELDS(T) FO_FAMILY_COMMON(T) T alpha, oma, eps, mom, lr;
#define FO_LION_FIELDS(T) FO_FAMILY_COMMON(T) T b1, omb1, b2, omb2, lr;
typedef struct { FO_SGD_FIELDS(float) } fo_sgd_c_f32;
typedef struct { FO_SGD_FIELDS(double) } fo_sgd_c_f64;
typedef struct { FO_ADAMX_FIELDS(float) } fo_adamx_c_f32;
typedef struct { FO_ADAMX_FIELDS(double) } fo_adamx_c_f64;
typedef struct { FO_NADAM_FIELDS(float) } fo_nadam_c_f32;
typedef struct { FO_NADAM_FIELDS(double) } fo_nadam_c_f64;
typedef struct { FO_RADAM_FIELDS(float) } fo_radam_c_f32;
typedef struct { FO_RADAM_FIELDS(double) } fo_radam_c_f64;
typedef struct { FO_ADAMAX_FIELDS(float) } fo_adamax_c_f32;
typedef struct { FO_ADAMAX_FIELDS(double) } fo_adamax_c_f64;
typedef struct { FO_ADAGRAD_FIELDS(float) } fo_adagrad_c_f32;
typedef struct { FO_ADAGRAD_FIELDS(double) } fo_adagrad_c_f64;
typedef struct { FO_RMSPROP_FIELDS(float) } fo_rmsprop_c_f32;
typedef struct { FO_RMSPROP_FIELDS(double) } fo_rmsprop_c_f64;
typedef struct { FO_LION_FIELDS(float) } fo_lion_c_f32;
typedef struct { FO_LION_FIELDS(double) } fo_lion_c_f64;

/* Global-norm reduction: elements per partial sum and lanes per chunk. Both are
 * fixed, so the sum does not depend on the thread count or instruction set. */
#define FO_NORM_CHUNK 1024
#define FO_NORM_LANES 16   /* kernels.inc's vector code assumes 16 */

typedef struct {
    void (*gd_f32)(size_t, float *, const float *, const fo_gd_c_f32 *);
    void (*gd_f64)(size_t, double *, const double *, const fo_gd_c_f64 *);
    void (*mom_f32)(size_t, float *, const float *, float *, const fo_mom_c_f32 *);
    void (*mom_f64)(size_t, double *, const double *, double *, const fo_mom_c_f64 *);
    void (*adam_f32)(size_t, float *, const float *, float *, float *, const fo_adam_c_f32 *);
    void (*adam_f64)(size_t, double *, const double *, double *, double *, const fo_adam_c_f64 *);
    void (*ceil_f32)(size_t, float *, const float *, float *, float *);
    void (*ceil_f64)(size_t, double *, const double *, double *, double *);
#define FO_FAMILY_TABLE(T, SFX) \
    void (*sgd_##SFX)(size_t, T *, const T *, T *, const fo_sgd_c_##SFX *); \
    void (*adamx_##SFX)(size_t, T *, const T *, T *, T *, T *, const fo_adamx_c_##SFX *); \
    void (*nadam_##SFX)(size_t, T *, const T *, T *, T *, const fo_nadam_c_##SFX *); \
    void (*radam_##SFX)(size_t, T *, const T *, T *, T *, const fo_radam_c_##SFX *); \
    void (*adamax_##SFX)(size_t, T *, const T *, T *, T *, const fo_adamax_c_##SFX *); \
    void (*adagrad_##SFX)(size_t, T *, const T *, T *, const fo_adagrad_c_##SFX *); \
    void (*rmsprop_##SFX)(size_t, T *, const T *, T *, T *, T *, const fo_rmsprop_c_##SFX *); \
    void (*lion_##SFX)(size_t, T *, const T *, T *, const fo_lion_c_##SFX *); \
    void (*sumsq_##SFX)(size_t, const T *, double *, int *); \
    void (*ceiln_##SFX)(size_t, T *, const T *, T *, T *, T *);
    FO_FAMILY_TABLE(float, f32)
    FO_FAMILY_TABLE(double, f64)
#undef FO_FAMILY_TABLE
} fo_kernels;

extern const fo_kernels fo_kernels_baseline;
#ifdef FO_MULTI_ISA
extern const fo_kernels fo_kernels_avx2;
extern const fo_kernels fo_kernels_avx512;
#endif

#endif
