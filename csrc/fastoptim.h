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

/* ---- The family ---------------------------------------------------------------
 * Every update below first takes gi = grad_scale * g (global-norm clipping's
 * scale; negated to maximize) and applies array i's weight decay
 * weight_decay[i] (NULL: none) either as L2, gi += wd*p (torch's Adam, SGD,
 * RMSprop, Adagrad, Adamax), or decoupled, p *= 1 - lr*wd before the update
 * (AdamW, Lion). State arrays passed as NULL are absent (an option is off).
 * t counts steps from 1. */

typedef struct {
    double lr, momentum, dampening;
    int nesterov;
    int first;    /* torch's first step: the buffer is set to gi */
    int course;   /* nesterov in the course's form: (1-dampening)*gi + momentum*b */
    double grad_scale;
    const double *weight_decay;
} fo_sgd_opts;

typedef struct {
    int64_t t;
    double lr, beta1, beta2, eps;
    int decoupled;
    double grad_scale;
    const double *weight_decay;
} fo_adam_opts;

typedef struct {
    int64_t t;
    double lr, lr_decay, eps;
    double grad_scale;
    const double *weight_decay;
} fo_adagrad_opts;

typedef struct {
    double lr, alpha, eps, momentum;
    double grad_scale;
    const double *weight_decay;
} fo_rmsprop_opts;

typedef struct {
    double lr, beta1, beta2;
    double grad_scale;
    const double *weight_decay;   /* always decoupled */
} fo_lion_opts;

#define FO_FAMILY_DECLS(T, SFX) \
    /* b (NULL: no momentum) = first ? gi : momentum*b + (1-dampening)*gi; \
     * u = nesterov ? gi + momentum*b (course: (1-dampening)*gi + momentum*b) : b; p -= lr*u */ \
    void fo_sgd_##SFX(size_t k, T *const *p, const T *const *g, T *const *b, const size_t *n, \
                      const fo_sgd_opts *o); \
    /* Adam with options: m, v as fo_adam; vmax (amsgrad, else NULL) = max(vmax, v); \
     * p -= lr/(1-b1^t) * m / (sqrt(vmax or v)/sqrt(1-b2^t) + eps) */ \
    void fo_adamx_##SFX(size_t k, T *const *p, const T *const *g, T *const *m, T *const *v, \
                        T *const *vmax, const size_t *n, const fo_adam_opts *o); \
    /* NAdam (torch): m, v as Adam; mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay)); \
     * d = sqrt(v/(1-b2^t)) + eps; p -= lr*(1-mu_t)/(1-P_t) * gi/d \
     *   + lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/d with P_t = mu_product*mu_t, returned */ \
    double fo_nadam_##SFX(size_t k, T *const *p, const T *const *g, T *const *m, T *const *v, \
                          const size_t *n, const fo_adam_opts *o, double momentum_decay, \
                          double mu_product); \
    /* RAdam (torch): m, v as Adam; when rho_t > 5, p -= lr*r_t*sqrt(1-b2^t)/(1-b1^t) * \
     * m/(sqrt(v) + eps) (eps on the uncorrected root), else p -= lr/(1-b1^t) * m */ \
    void fo_radam_##SFX(size_t k, T *const *p, const T *const *g, T *const *m, T *const *v, \
                        const size_t *n, const fo_adam_opts *o); \
    /* Adamax: m as Adam; u = max(b2*u, |gi| + eps); p -= lr/(1-b1^t) * m/u (L2 only) */ \
    void fo_adamax_##SFX(size_t k, T *const *p, const T *const *g, T *const *m, T *const *u, \
                         const size_t *n, const fo_adam_opts *o); \
    /* Adagrad: s += gi*gi; p -= lr/(1 + (t-1)*lr_decay) * gi/(sqrt(s) + eps) */ \
    void fo_adagrad_##SFX(size_t k, T *const *p, const T *const *g, T *const *s, \
                          const size_t *n, const fo_adagrad_opts *o); \
    /* RMSprop: sq = alpha*sq + (1-alpha)*gi*gi; ga (centered, else NULL) = alpha*ga + \
     * (1-alpha)*gi; d = sqrt(sq - ga*ga) + eps; b (momentum, else NULL) = momentum*b + gi/d, \
     * p -= lr*b; without b: p -= lr*gi/d */ \
    void fo_rmsprop_##SFX(size_t k, T *const *p, const T *const *g, T *const *sq, \
                          T *const *ga, T *const *b, const size_t *n, const fo_rmsprop_opts *o); \
    /* Lion: p *= 1 - lr*wd; p -= lr*sign(b1*m + (1-b1)*gi) (sign(0) = 0); \
     * m = b2*m + (1-b2)*gi */ \
    void fo_lion_##SFX(size_t k, T *const *p, const T *const *g, T *const *m, const size_t *n, \
                       const fo_lion_opts *o); \
    /* Sum of g*g over every array, in double, the same for any thread count and \
     * instruction set; *nonfinite = 1 if any element is Inf or NaN, else 0. */ \
    double fo_sumsq_##SFX(size_t k, const T *const *g, const size_t *n, int *nonfinite); \
    /* Benchmarks: the traffic of an update reading g and reading and writing p and \
     * s1..s3 (NULL from the first absent one on) with trivial arithmetic. */ \
    void fo_ceiling_##SFX(size_t k, T *const *p, const T *const *g, T *const *s1, \
                          T *const *s2, T *const *s3, const size_t *n);

FO_FAMILY_DECLS(float, f32)
FO_FAMILY_DECLS(double, f64)
#undef FO_FAMILY_DECLS

#ifdef __cplusplus
}
#endif
#endif
