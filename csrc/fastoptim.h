/* fastoptim: fused, in-place optimizer updates over many arrays in one call.
 *
 * Plain C99, no Python. Every update takes k arrays per stream (p[i], g[i], ...)
 * of n[i] contiguous elements each; the caller guarantees that written streams
 * do not overlap each other or any read stream. Scalars arrive in double and the
 * per-step scalars (bias corrections) are computed here, once per call. */
#ifndef FASTOPTIM_H
#define FASTOPTIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction-set levels, lowest first. */
enum fo_isa { FO_ISA_BASELINE = 0, FO_ISA_AVX2 = 1, FO_ISA_AVX512 = 2 };

/* Pick the best level the CPU supports, capped at max_isa; returns the level chosen. */
int fo_init(int max_isa);
int fo_isa_in_use(void);
int fo_isa_supported(void);   /* best level this CPU supports and this build carries */
const char *fo_isa_name(int isa);

/* Threads: n <= 0 follows OpenMP's default (OMP_NUM_THREADS, threadpoolctl). */
void fo_set_num_threads(int n);
int fo_get_num_threads(void);
int fo_have_openmp(void);
size_t fo_parallel_threshold(void);

/* Byte ranges [lo, hi) of a call's arrays; `written` marks arrays the call writes.
 * Returns 1 when no written range overlaps any other range (read-only ranges may
 * overlap each other). Sorts `s` in place. */
typedef struct { uintptr_t lo, hi; int written; } fo_span;
int fo_spans_disjoint(fo_span *s, size_t n);

/* How this library was built. */
const char *fo_compiler(void);
const char *fo_kernel_flags(void);

/* p -= lr * g */
void fo_gd_f32(size_t k, float *const *p, const float *const *g, const size_t *n, double lr);
void fo_gd_f64(size_t k, double *const *p, const double *const *g, const size_t *n, double lr);

/* v = beta*v + (1-beta)*g;  p -= lr*v */
void fo_momentum_f32(size_t k, float *const *p, const float *const *g, float *const *v,
                     const size_t *n, double beta, double lr);
void fo_momentum_f64(size_t k, double *const *p, const double *const *g, double *const *v,
                     const size_t *n, double beta, double lr);

/* m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 * p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) */
void fo_adam_f32(size_t k, float *const *p, const float *const *g, float *const *m,
                 float *const *v, const size_t *n, int64_t t, double lr, double beta1,
                 double beta2, double eps);
void fo_adam_f64(size_t k, double *const *p, const double *const *g, double *const *m,
                 double *const *v, const size_t *n, int64_t t, double lr, double beta1,
                 double beta2, double eps);

/* The Adam step's memory traffic (read p, g, m, v; write p, m, v) with trivial
 * arithmetic: the machine's limit for any Adam kernel. Benchmarks only. */
void fo_ceiling_adam_f32(size_t k, float *const *p, const float *const *g, float *const *m,
                         float *const *v, const size_t *n);
void fo_ceiling_adam_f64(size_t k, double *const *p, const double *const *g, double *const *m,
                         double *const *v, const size_t *n);

#ifdef __cplusplus
}
#endif
#endif
