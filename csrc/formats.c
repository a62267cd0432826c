/* Storage formats' element operations. Compiled once per instruction set with
 * FO_ISA set (see CMakeLists.txt): baseline (portable bit manipulation), avx2
 * (F16C for float16), avx512 (AVX-512F's float16 conversions), avx512bf16
 * (also vcvtneps2bf16 for bfloat16); the conversions' rules are convert.h's.
 * Same flags as kernels.c: -fno-math-errno -ffp-contract=off, never -ffast-math. */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "formats.h"

static void FO_FN(load_f16)(size_t n, float *dst, const uint16_t *src)
{
    fo_load16(FO_FMT_F16, n, dst, src);
}

static void FO_FN(load_bf16)(size_t n, float *dst, const uint16_t *src)
{
    fo_load16(FO_FMT_BF16, n, dst, src);
}

static void FO_FN(store_f16)(size_t n, uint16_t *dst, const float *src)
{
    fo_store16(FO_FMT_F16, n, dst, src);
}

static void FO_FN(store_bf16)(size_t n, uint16_t *dst, const float *src)
{
    fo_store16(FO_FMT_BF16, n, dst, src);
}

static void sr(int fmt, size_t n, uint16_t *dst, const float *src, uint64_t key, uint64_t first)
{
    for (size_t c = 0; c < n; c += FO_SR_CHUNK)
        fo_store16_sr(fmt, n - c < FO_SR_CHUNK ? n - c : FO_SR_CHUNK, dst + c, src + c, key,
                      first + c);
}

static void FO_FN(store_f16_sr)(size_t n, uint16_t *dst, const float *src, uint64_t key,
                                uint64_t first)
{
    sr(FO_FMT_F16, n, dst, src, key, first);
}

static void FO_FN(store_bf16_sr)(size_t n, uint16_t *dst, const float *src, uint64_t key,
                                 uint64_t first)
{
    sr(FO_FMT_BF16, n, dst, src, key, first);
}

/* ---- 8-bit block-wise state (Dettmers et al. 2022) -------------------------------- */

static void FO_FN(q8_load)(size_t n, float *restrict dst, const uint8_t *restrict codes,
                           float absmax, const fo_qmap *q)
{
    const float *restrict value = q->value;
    size_t i = 0;
    /* gathers written out: the compiler's generic tuning loads each one alone */
#if defined(__AVX512F__)
    const __m512 vmax = _mm512_set1_ps(absmax);
    for (; i + 16 <= n; i += 16) {
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_i32gather_ps(c, value, 4), vmax));
    }
#elif defined(__AVX2__)
    const __m256 vmax = _mm256_set1_ps(absmax);
    for (; i + 8 <= n; i += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_i32gather_ps(value, c, 4), vmax));
    }
#endif
    for (; i < n; i++)
        dst[i] = value[codes[i]] * absmax;
}

/* The block's absolute maximum (a NaN if any element is Inf or NaN: the largest
 * magnitude's bits, compared as integers), then each x = s * (1/absmax) (s /
 * absmax where 1/absmax would overflow: absmax below float32's normal range)
 * to its nearest code; |x| may exceed 1 by an ulp, which the code of the
 * largest magnitude takes. A block of zeros, or with a non-finite element,
 * stores the code of 0 everywhere, with absmax 0 or NaN (every element then
 * decodes to NaN). */
FO_INLINE uint32_t q8_code(float x, const uint32_t *restrict bucket, int is_signed)
{
    const float a = is_signed ? fabsf(x) : (x > 0.0f ? x : 0.0f);
    const uint32_t ab = fbits(a);
    uint32_t key = ab >> 16;
    key = key < FO_Q8_KEY0 ? 0 : key - FO_Q8_KEY0;
    key = key < FO_Q8_KEYS ? key : FO_Q8_KEYS - 1;
    const uint32_t e = bucket[key];
    const uint32_t j = (e >> 17) + ((ab & 0xFFFFu) >= (e & 0x1FFFFu));
    return !is_signed ? j : x < 0.0f ? 127u - (j < 127u ? j : 127u) : 127u + j;
}

static float FO_FN(q8_store)(size_t n, uint8_t *restrict codes, const float *restrict src,
                             const fo_qmap *q)
{
    uint32_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t a = fbits(src[i]) & 0x7FFFFFFFu;
        mx = a > mx ? a : mx;
    }
    if (mx == 0 || mx >= 0x7F800000u) {
        memset(codes, q->zero, n);
        return mx ? bitsf(0x7FC00000u) : 0.0f;
    }
    const float absmax = bitsf(mx);
    const uint32_t *restrict bucket = q->bucket;
    const int is_signed = q->zero != 0;
    if (mx < 0x00800000u) {  /* the rare path: 1/absmax overflows */
        for (size_t i = 0; i < n; i++)
            codes[i] = (uint8_t)q8_code(src[i] / absmax, bucket, is_signed);
        return absmax;
    }
    const float inv = 1.0f / absmax;
    size_t i = 0;
#if defined(__AVX512F__)
    {
        const __m512 vinv = _mm512_set1_ps(inv), zero = _mm512_setzero_ps();
        const __m512i key0 = _mm512_set1_epi32((int)FO_Q8_KEY0), top = _mm512_set1_epi32(FO_Q8_KEYS - 1);
        const __m512i izero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
        const __m512i mid = _mm512_set1_epi32(127), low16 = _mm512_set1_epi32(0xFFFF);
        const __m512i low17 = _mm512_set1_epi32(0x1FFFF);
        for (; i + 16 <= n; i += 16) {
            const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(src + i), vinv);
            const __m512i ab = _mm512_castps_si512(is_signed ? _mm512_abs_ps(x)
                                                             : _mm512_max_ps(x, zero));
            __m512i key = _mm512_sub_epi32(_mm512_srli_epi32(ab, 16), key0);
            key = _mm512_min_epi32(_mm512_max_epi32(key, izero), top);
            const __m512i e = _mm512_i32gather_epi32(key, (const void *)bucket, 4);
            const __mmask16 up = _mm512_cmpge_epu32_mask(_mm512_and_si512(ab, low16),
                                                         _mm512_and_si512(e, low17));
            const __m512i base = _mm512_srli_epi32(e, 17);
            __m512i j = _mm512_mask_add_epi32(base, up, base, one);
            if (is_signed) {
                const __mmask16 neg = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
                j = _mm512_mask_sub_epi32(_mm512_add_epi32(mid, j), neg, mid,
                                          _mm512_min_epi32(j, mid));
            }
            _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(j));
        }
    }
#elif defined(__AVX2__)
    {
        const __m256 vinv = _mm256_set1_ps(inv), zero = _mm256_setzero_ps();
        const __m256 sign = _mm256_set1_ps(-0.0f);
        const __m256i key0 = _mm256_set1_epi32((int)FO_Q8_KEY0), top = _mm256_set1_epi32(FO_Q8_KEYS - 1);
        const __m256i izero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
        const __m256i mid = _mm256_set1_epi32(127), low16 = _mm256_set1_epi32(0xFFFF);
        const __m256i low17 = _mm256_set1_epi32(0x1FFFF);
        const __m256i pick = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(src + i), vinv);
            const __m256i ab = _mm256_castps_si256(is_signed ? _mm256_andnot_ps(sign, x)
                                                             : _mm256_max_ps(x, zero));
            __m256i key = _mm256_sub_epi32(_mm256_srli_epi32(ab, 16), key0);
            key = _mm256_min_epi32(_mm256_max_epi32(key, izero), top);
            const __m256i e = _mm256_i32gather_epi32((const int *)(const void *)bucket, key, 4);
            /* both below 2^17: a signed comparison; j = base + 1 - (inside > low bits) */
            const __m256i above = _mm256_cmpgt_epi32(_mm256_and_si256(e, low17),
                                                     _mm256_and_si256(ab, low16));
            __m256i j = _mm256_add_epi32(_mm256_add_epi32(_mm256_srli_epi32(e, 17), one), above);
            if (is_signed) {
                const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_LT_OQ));
                j = _mm256_blendv_epi8(_mm256_add_epi32(mid, j),
                                       _mm256_sub_epi32(mid, _mm256_min_epi32(j, mid)), neg);
            }
            /* 8 int32 in 0..255 to 8 bytes */
            const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(j, j), izero);
            _mm_storel_epi64((__m128i *)(codes + i),
                             _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(w, pick)));
        }
    }
#endif
    for (; i < n; i++)
        codes[i] = (uint8_t)q8_code(src[i] * inv, bucket, is_signed);
    return absmax;
}

/* ---- ceilings: g read once (its words xor-ed), each stream x += that --------- */

static uint32_t FO_FN(read_bytes)(size_t nbytes, const void *gv)
{
    const uint8_t *g = gv;
    uint32_t acc = 0, w;
    size_t i = 0;
    for (; i + 4 <= nbytes; i += 4) {
        memcpy(&w, g + i, sizeof w);
        acc ^= w;
    }
    for (; i < nbytes; i++)
        acc ^= g[i];
    return acc;
}

static void FO_FN(touch1)(size_t n, void *xv, uint32_t c)
{
    uint8_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = (uint8_t)(x[i] + c);
}

static void FO_FN(touch2)(size_t n, void *xv, uint32_t c)
{
    uint16_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = (uint16_t)(x[i] + c);
}

static void FO_FN(touch4)(size_t n, void *xv, uint32_t c)
{
    uint32_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] + c;
}

#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)
#if defined(__AVX512BF16__)
#define FO_IMPL "float16: AVX-512F vcvtph2ps/vcvtps2ph; bfloat16: AVX-512 BF16 vcvtneps2bf16"
#elif defined(__AVX512F__)
#define FO_IMPL "float16: AVX-512F vcvtph2ps/vcvtps2ph; bfloat16: portable"
#elif defined(__F16C__)
#define FO_IMPL "float16: F16C vcvtph2ps/vcvtps2ph; bfloat16: portable"
#else
#define FO_IMPL "float16, bfloat16: portable"
#endif

const fo_formats_kernels FO_CAT(fo_formats, FO_ISA) = {
    .load16 = {FO_FN(load_f16), FO_FN(load_bf16)},
    .store16 = {FO_FN(store_f16), FO_FN(store_bf16)},
    .store16_sr = {FO_FN(store_f16_sr), FO_FN(store_bf16_sr)},
    .q8_load = FO_FN(q8_load),
    .q8_store = FO_FN(q8_store),
    .read_bytes = FO_FN(read_bytes),
    .touch = {FO_FN(touch1), FO_FN(touch2), FO_FN(touch4)},
    .impl = FO_IMPL,
};
