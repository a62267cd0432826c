/* Every rule of csrc/rules.h, through the C API alone, on fixed inputs: prints
 * one line per case with a hash of every output byte (parameters, state, the
 * moving average, the norm, the scalar state). Two builds that print the same
 * lines compute the same bits: tools/check_arm.sh compares an aarch64 build
 * (NEON, the compiler's vectorization) with a scalar build of the same source
 * under qemu, and both with this machine's native build.
 *
 *   cc -O3 -Icsrc tests/kernels_check.c csrc/driver.c csrc/pool.c csrc/spans.c \
 *      csrc/kernels.c -fno-math-errno -ffp-contract=off -lm -lpthread */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastoptim.h"

#define K 3
static const size_t N[K] = {1, 1000, 70001};   /* around vector widths, chunks, threads */

static uint64_t state = 0x9E3779B97F4A7C15u;
static double next_unit(void)  /* a fixed sequence in [-1, 1) */
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001B3u;
    }
    return h;
}

/* The bits of a produced NaN (its sign, its payload) are the CPU's choice: x86
 * gives 0/0 the sign bit, ARM not. Every NaN hashes as one value; every other
 * bit counts. */
static uint64_t fnv_values(uint64_t h, const void *data, size_t n, int dtype)
{
    for (size_t j = 0; j < n; j++) {
        double v = dtype == FO_F32 ? (double)((const float *)data)[j] : ((const double *)data)[j];
        if (v != v) {
            static const char nan_mark[8] = "NaN";
            h = fnv(h, nan_mark, sizeof nan_mark);
        } else if (dtype == FO_F32) {
            h = fnv(h, (const float *)data + j, sizeof(float));
        } else {
            h = fnv(h, (const double *)data + j, sizeof(double));
        }
    }
    return h;
}

/* flag combinations of each rule (rules.h), decay styles it takes, sources, EMA */
static const unsigned FLAGS[FO_NUM_RULES][6] = {
    [FO_RULE_SGD] = {0, FO_SGD_MOMENTUM, FO_SGD_MOMENTUM | FO_SGD_NESTEROV,
                     FO_SGD_MOMENTUM | FO_SGD_AVERAGE, ~0u},
    [FO_RULE_ADAM] = {0, FO_ADAM_AMSGRAD, ~0u},
    [FO_RULE_NADAM] = {0, ~0u},
    [FO_RULE_RADAM] = {0, ~0u},
    [FO_RULE_ADAMAX] = {0, ~0u},
    [FO_RULE_ADAGRAD] = {0, ~0u},
    [FO_RULE_RMSPROP] = {0, FO_RMSPROP_CENTERED, FO_RMSPROP_MOMENTUM,
                         FO_RMSPROP_CENTERED | FO_RMSPROP_MOMENTUM, ~0u},
    [FO_RULE_LION] = {0, ~0u},
    [FO_RULE_SCHEDULE_FREE_ADAMW] = {0, ~0u},
    [FO_RULE_SCHEDULE_FREE_SGD] = {0, ~0u},
    [FO_RULE_LAMB] = {0, ~0u},
    [FO_RULE_ADAFACTOR] = {0, FO_ADAFACTOR_MACHINE_EPSILON, ~0u},
};
/* every rule has its row (a rule added to rules.h without one fails to compile) */
typedef char every_rule_has_flags[FO_RULE_ADAFACTOR + 1 == FO_NUM_RULES ? 1 : -1];

static void run_case(int rule, int dtype, unsigned flags, unsigned decay, int sources,
                     int ema, int threads, double grad_scale)
{
    const size_t es = dtype == FO_F32 ? sizeof(float) : sizeof(double);
    void *x[FO_NSLOTS * K] = {0};
    void *owned[FO_NSLOTS * K] = {0};
    double wd[K] = {0.1, 0.0, 0.02};
    state = 0x9E3779B97F4A7C15u ^ (uint64_t)(rule * 7919 + dtype * 31 + flags * 131 + decay
                                             + sources * 17 + ema);
    for (int s = 0; s < FO_NSLOTS; s++) {
        const int state_slot = s >= FO_SLOT_STATE && s < FO_SLOT_EMA;
        if ((s == FO_SLOT_EMA && !ema) || (state_slot && s - FO_SLOT_STATE >= 3))
            continue;
        for (int i = 0; i < K; i++) {
            const size_t n = N[i] * (s == FO_SLOT_G ? (size_t)sources : 1);
            char *a = malloc(n * es + 1);
            for (size_t j = 0; j < n; j++) {
                double v = next_unit();
                if (state_slot)
                    v = fabs(v);  /* second moments, sums, maxima: >= 0 */
                if (dtype == FO_F32)
                    ((float *)a)[j] = (float)v;
                else
                    ((double *)a)[j] = v;
            }
            owned[s * K + i] = x[s * K + i] = a;
        }
    }
    fo_step st;
    memset(&st, 0, sizeof st);
    st.lr = 0.01;
    st.h[0] = 0.9, st.h[1] = 0.99, st.h[2] = 1e-6, st.h[3] = 0.004;
    if (rule == FO_RULE_SGD)
        st.h[1] = (flags & FO_SGD_NESTEROV) ? 0.0 : 0.3;
    if (rule == FO_RULE_ADAGRAD)
        st.h[0] = 0.01, st.h[1] = 1e-6;
    if (rule == FO_RULE_RMSPROP)
        st.h[2] = 0.5;
    st.scalars[0] = 0.8;
    if (rule == FO_RULE_SCHEDULE_FREE_ADAMW)   /* warmup 2 steps, r 0.5, weight_lr_power 2 */
        st.h[3] = 2.0, st.h[4] = 0.5, st.h[5] = 2.0, st.scalars[0] = 0.0;
    if (rule == FO_RULE_SCHEDULE_FREE_SGD)
        st.h[1] = 2.0, st.h[2] = 0.5, st.h[3] = 2.0, st.scalars[0] = 0.0;
    if (rule == FO_RULE_ADAFACTOR)   /* decay_rate, epsilon1, epsilon2, d */
        st.h[0] = 0.8, st.h[1] = 1e-30, st.h[2] = 1e-3, st.h[3] = 1.0;
    st.flags = flags;
    st.decay = decay;
    st.weight_decay = decay ? wd : NULL;
    st.grad_scale = grad_scale;
    st.ema_decay = 0.95;
    st.sources = sources;
    st.source_stride = 0;
    fo_set_num_threads(threads);
    uint64_t h = 0xCBF29CE484222325u;
    int ok = 1;
    for (int t = 1; t <= 3 && ok; t++) {
        st.t = t;
        if (sources > 1) {
            /* every array has its sources N[i] apart: one call per array */
            for (int i = 0; i < K && ok; i++) {
                void *xi[FO_NSLOTS];
                for (int s = 0; s < FO_NSLOTS; s++)
                    xi[s] = x[s * K + i];
                fo_step si = st;
                si.source_stride = N[i];
                si.source_scale = 1.0 / sources;
                si.weight_decay = decay ? &wd[i] : NULL;
                ok = fo_update(rule, dtype, 1, xi, &N[i], &si) == 0;
                if (i == K - 1)
                    st.scalars[0] = si.scalars[0];
            }
        } else {
            ok = fo_update(rule, dtype, K, x, N, &st) == 0;
        }
    }
    int bad = 0;
    double norm = fo_norm(dtype, K, x + FO_SLOT_G * K, N, &bad);
    for (int s = 0; s < FO_NSLOTS; s++)
        for (int i = 0; i < K; i++)
            if (x[s * K + i] && s != FO_SLOT_G)
                h = fnv_values(h, x[s * K + i], N[i], dtype);
    h = fnv_values(h, &norm, 1, FO_F64);
    h = fnv(h, &st.scalars[0], sizeof(double));
    printf("rule %d dtype %d flags %u decay %u sources %d ema %d threads %d scale %g: %s %016llx\n",
           rule, dtype, flags, decay, sources, ema, threads, grad_scale, ok ? "ok" : "refused",
           (unsigned long long)h);
    for (int s = 0; s < FO_NSLOTS * K; s++)
        free(owned[s]);
}

int main(void)
{
    fo_init(FO_ISA_AVX512);
    for (int rule = 0; rule < FO_NUM_RULES; rule++) {
        const unsigned decays[4] = {0, FO_DECAY_L2, FO_DECAY_DECOUPLED, FO_DECAY_UPDATE};
        for (int d = 0; d < 4; d++) {
            if (decays[d] && !(fo_rule_decay(rule) & decays[d]))
                continue;
            for (int f = 0; FLAGS[rule][f] != ~0u; f++)
                for (int dtype = 0; dtype < 2; dtype++) {
                    run_case(rule, dtype, FLAGS[rule][f], decays[d], 1, 0, 1, 0.7);
                    run_case(rule, dtype, FLAGS[rule][f], decays[d], 1, 1, 2, -1.0);
                    run_case(rule, dtype, FLAGS[rule][f], decays[d], 3, 1, 2, 1.0);
                    run_case(rule, dtype, FLAGS[rule][f], decays[d], 1, 0, 2, 1e-320);
                }
        }
    }
    return 0;
}
