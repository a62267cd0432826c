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

typedef struct {
    void (*gd_f32)(size_t, float *, const float *, const fo_gd_c_f32 *);
    void (*gd_f64)(size_t, double *, const double *, const fo_gd_c_f64 *);
    void (*mom_f32)(size_t, float *, const float *, float *, const fo_mom_c_f32 *);
    void (*mom_f64)(size_t, double *, const double *, double *, const fo_mom_c_f64 *);
    void (*adam_f32)(size_t, float *, const float *, float *, float *, const fo_adam_c_f32 *);
    void (*adam_f64)(size_t, double *, const double *, double *, double *, const fo_adam_c_f64 *);
    void (*ceil_f32)(size_t, float *, const float *, float *, float *);
    void (*ceil_f64)(size_t, double *, const double *, double *, double *);
} fo_kernels;

extern const fo_kernels fo_kernels_baseline;
#ifdef FO_MULTI_ISA
extern const fo_kernels fo_kernels_avx2;
extern const fo_kernels fo_kernels_avx512;
#endif

#endif
