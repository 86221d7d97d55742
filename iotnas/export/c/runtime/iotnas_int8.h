/* iotnas int8 kernels: TensorFlow Lite's integer arithmetic (the reference kernels that
 * TensorFlow Lite Micro runs), on int8 activations in NHWC order.
 *
 * A tensor holds q with real = scale * (q - zero_point), one scale and zero point per tensor;
 * weights are symmetric int8 with one scale per output channel; biases int32. A layer sums
 * int8 products in int32, adds the bias, and requantises each output channel by a fixed-point
 * multiplier and shift (gemmlowp's rounding doubling high multiply, then a rounding right
 * shift), adds the output zero point and saturates to its activation range.
 * C99, no malloc, no libm, no float arithmetic before the logits (on x86 the vector requantisation
 * builds its per-lane powers of two through a float's exponent: an exact conversion, no rounding).
 * On x86 (SSE2) the kernels run in vectors with the same integers; elsewhere, plain C. */
#ifndef IOTNAS_INT8_H
#define IOTNAS_INT8_H

#include <stdint.h>

/* x * multiplier * 2^shift, multiplier a Q31 number in [0.5, 1) (or 0): TensorFlow Lite's
 * MultiplyByQuantizedMultiplier, gemmlowp's SaturatingRoundingDoublingHighMul then
 * RoundingDivideByPOT, in fewer operations with the same results:
 * - the high multiply's nudge (2^30 for a non-negative product, 1 - 2^30 otherwise) followed by a
 *   division that truncates toward zero equals adding 2^30 and rounding down (an arithmetic shift)
 *   for every product; its one saturating case needs a multiplier of INT32_MIN, which no Q31
 *   multiplier in [0, 2^31) is;
 * - rounding half away from zero by 2^right is (high + 2^(right-1) - [high < 0]) >> right.
 * Signed right shifts are arithmetic (gcc, clang, arm-none-eabi-gcc). */
static inline int32_t iotnas_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t a = (int32_t)((uint32_t)x << left);
    const int32_t high = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
    const int64_t half = ((int64_t)1 << right) >> 1; /* 0 when right is 0 */
    return (int32_t)(((int64_t)high + half - (high < 0 && right > 0)) >> right);
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* Four lanes' requantisation constants (see iotnas_requantize4). */
typedef struct {
    __m128i multiplier, multiplier_odd, scale, scale_odd, half_even, half_odd;
} iotnas_lanes_t;

/* What iotnas_requantize4 derives from the four lanes' multipliers and right shifts alone: made
 * once per channel run where the same channels are requantised pixel after pixel. */
static inline iotnas_lanes_t iotnas_requantize4_lanes(__m128i multiplier, __m128i right) {
    const __m128i even = _mm_set_epi32(0, -1, 0, -1);
    const __m128i scale = _mm_cvttps_epi32(_mm_castsi128_ps(_mm_slli_epi32(_mm_sub_epi32(_mm_set1_epi32(127 + 31), right), 23)));
    /* 2^(r-1) * 2^(31-r): the half that rounds, after the multiply (none when r = 0) */
    const __m128i half = _mm_andnot_si128(_mm_cmpeq_epi32(right, _mm_setzero_si128()), _mm_set1_epi32(1 << 30));
    iotnas_lanes_t l;
    l.multiplier = multiplier, l.multiplier_odd = _mm_srli_epi64(multiplier, 32);
    l.scale = scale, l.scale_odd = _mm_srli_epi64(scale, 32);
    l.half_even = _mm_and_si128(half, even), l.half_odd = _mm_srli_epi64(half, 32);
    return l;
}

static inline __m128i iotnas_requantize4_with(__m128i x, const iotnas_lanes_t *l) {
    const __m128i even = _mm_set_epi32(0, -1, 0, -1), nudge = _mm_set_epi32(0, 1 << 30, 0, 1 << 30);
    const __m128i sign = _mm_srai_epi32(x, 31), magnitude = _mm_sub_epi32(_mm_xor_si128(x, sign), sign);
    /* |high| in the low half of each 64-bit lane: lanes 0 and 2, then lanes 1 and 3 */
    const __m128i high_even = _mm_srli_epi64(
        _mm_add_epi64(_mm_add_epi64(_mm_mul_epu32(magnitude, l->multiplier), nudge), _mm_shuffle_epi32(sign, 0xa0)), 31);
    const __m128i high_odd = _mm_srli_epi64(
        _mm_add_epi64(_mm_add_epi64(_mm_mul_epu32(_mm_srli_epi64(magnitude, 32), l->multiplier_odd), nudge),
                      _mm_shuffle_epi32(sign, 0xf5)),
        31);
    const __m128i low = _mm_srli_epi64(_mm_add_epi64(_mm_mul_epu32(high_even, l->scale), l->half_even), 31);
    const __m128i high = _mm_slli_epi64(_mm_add_epi64(_mm_mul_epu32(high_odd, l->scale_odd), l->half_odd), 1);
    const __m128i rounded = _mm_or_si128(low, _mm_andnot_si128(even, high));
    return _mm_sub_epi32(_mm_xor_si128(rounded, sign), sign);
}

/* iotnas_requantize on four int32 lanes at once, each with its own multiplier (Q31, >= 0) and
 * right shift r in [0, 31] (shift = -r <= 0; a left shift stays scalar), with the same results.
 * SSE2 has neither a signed 32 x 32 -> 64-bit lane multiply nor per-lane shifts, so:
 * - the high multiply is taken on |x| with the unsigned one (pmuludq, even and odd lanes apart):
 *   for x < 0, (x m + 2^30) >> 31 = -((|x| m + 2^30 - 1) >> 31);
 * - rounding half away from zero by 2^r is then symmetric, (h + 2^(r-1)) >> r on the magnitude h,
 *   the sign put back after; and h >> r is (h * 2^(31-r)) >> 31, a multiply by a per-lane power
 *   of two and one common 64-bit shift. 2^(31-r) is built as a float's exponent and truncated to
 *   an integer: exact, and 2^31 (r = 0), out of int32's range, comes out as 0x80000000, which is
 *   2^31 to the unsigned multiply. */
static inline __m128i iotnas_requantize4(__m128i x, __m128i multiplier, __m128i right) {
    const iotnas_lanes_t l = iotnas_requantize4_lanes(multiplier, right);
    return iotnas_requantize4_with(x, &l);
}

/* iotnas_requantize4 when the four lanes share one right shift r in [0, 31]: both roundings in
 * one 64-bit sum and one shift, floor((|x| m + 2^30 - [x < 0] + 2^(30+r) [r > 0]) / 2^(31+r))
 * (a floor of a floor by a power of two is one floor), then the sign. */
static inline __m128i iotnas_requantize4_shared(__m128i x, __m128i multiplier, int32_t right) {
    const long long nudge = (1LL << 30) + (right > 0 ? 1LL << (30 + right) : 0);
    const __m128i sum = _mm_set1_epi64x(nudge), count = _mm_cvtsi32_si128(31 + right);
    const __m128i sign = _mm_srai_epi32(x, 31), magnitude = _mm_sub_epi32(_mm_xor_si128(x, sign), sign);
    const __m128i even = _mm_srl_epi64(
        _mm_add_epi64(_mm_add_epi64(_mm_mul_epu32(magnitude, multiplier), sum), _mm_shuffle_epi32(sign, 0xa0)), count);
    const __m128i odd = _mm_srl_epi64(
        _mm_add_epi64(_mm_add_epi64(_mm_mul_epu32(_mm_srli_epi64(magnitude, 32), _mm_srli_epi64(multiplier, 32)), sum),
                      _mm_shuffle_epi32(sign, 0xf5)),
        count);
    const __m128i rounded = _mm_or_si128(even, _mm_slli_epi64(odd, 32));
    return _mm_sub_epi32(_mm_xor_si128(rounded, sign), sign);
}
#endif

/* AVX2 where the processor has it (iotnas_avx2.h): the hottest kernels' AVX2 forms. */
#include "iotnas_avx2.h"
#if defined(IOTNAS_AVX2)
#include <immintrin.h>

/* Eight lanes' requantisation constants, made in plain C from their right shifts r in [0, 31]:
 * the 64-bit nudge 2^30 + 2^(30+r) [r > 0] and shift count 31 + r, lanes 0, 2, 4, 6 then 1, 3, 5, 7
 * (the even and odd lanes of the 32 x 32 -> 64-bit multiplies). */
typedef struct {
    int64_t nudge[8], count[8];
} iotnas_lanes8_t;

static inline void iotnas_requantize8_lanes(const int32_t *right, iotnas_lanes8_t *l) {
    for (int k = 0; k < 8; ++k) {
        const int at = k % 2 * 4 + k / 2;
        l->nudge[at] = ((int64_t)1 << 30) + (right[k] > 0 ? (int64_t)1 << (30 + right[k]) : 0);
        l->count[at] = 31 + right[k];
    }
}

/* iotnas_requantize on eight lanes, each with its own multiplier (Q31, >= 0) and right shift:
 * iotnas_requantize4_shared's one 64-bit sum and one floor, floor((|x| m + 2^30 - [x < 0] +
 * 2^(30+r) [r > 0]) / 2^(31+r)), then the sign, with AVX2's per-lane 64-bit shift (vpsrlvq)
 * taking each lane's r: the same integers. */
IOTNAS_AVX2_FN static inline __m256i iotnas_requantize8(__m256i x, __m256i multiplier, const iotnas_lanes8_t *l) {
    const __m256i sign = _mm256_srai_epi32(x, 31), magnitude = _mm256_sub_epi32(_mm256_xor_si256(x, sign), sign);
    const __m256i nudge_even = _mm256_loadu_si256((const __m256i *)(const void *)l->nudge);
    const __m256i nudge_odd = _mm256_loadu_si256((const __m256i *)(const void *)(l->nudge + 4));
    const __m256i count_even = _mm256_loadu_si256((const __m256i *)(const void *)l->count);
    const __m256i count_odd = _mm256_loadu_si256((const __m256i *)(const void *)(l->count + 4));
    const __m256i even = _mm256_srlv_epi64(
        _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(magnitude, multiplier), nudge_even),
                         _mm256_shuffle_epi32(sign, 0xa0)),
        count_even);
    const __m256i odd = _mm256_srlv_epi64(
        _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(magnitude, 32), _mm256_srli_epi64(multiplier, 32)),
                                          nudge_odd),
                         _mm256_shuffle_epi32(sign, 0xf5)),
        count_odd);
    const __m256i rounded = _mm256_or_si256(even, _mm256_slli_epi64(odd, 32));
    return _mm256_sub_epi32(_mm256_xor_si256(rounded, sign), sign);
}
#endif

static inline int8_t iotnas_saturate(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* Per-output-channel requantisation and the output's zero point and activation range. */
typedef struct {
    const int32_t *bias;       /* int32 at scale input_scale * weight_scale[c], minus in_zp * sum(w[c]) */
    const int32_t *multiplier; /* Q31 */
    const int8_t *shift;       /* power of two */
    int32_t in_zp, out_zp, act_min, act_max;
} iotnas_requant_t;

/* Where a window operator's kernel lies: an input of hin x win pixels, an output of hout x wout,
 * kernel kh x kw, strides, and the padding above (pt) and left (pl); below and right follow from
 * the output size. */
typedef struct {
    int32_t hin, win, hout, wout, kh, kw, sh, sw, pt, pl;
} iotnas_geometry_t;

/* A convolution, or a depthwise one (filter [kh][kw][cout], cout = cin x multiplier). The input
 * pixels have in_stride channels, of which the layer reads cin from in_offset (one group of a
 * grouped convolution). A tap in the padding reads the input zero point. */
typedef struct {
    iotnas_geometry_t g;
    int32_t in_stride, in_offset, cin, cout;
    const int8_t *filter; /* convolution: [cout][kh][kw][cin] */
    iotnas_requant_t q;
} iotnas_qconv_t;

typedef struct {
    int32_t in, out;
    const int8_t *filter; /* [out][in] */
    iotnas_requant_t q;
} iotnas_qlinear_t;

/* a + b, each input rescaled to twice the larger input scale over 2^20, then to the output's. */
typedef struct {
    int32_t n;
    int32_t a_zp, a_multiplier, a_shift, b_zp, b_multiplier, b_shift;
    int32_t out_zp, out_multiplier, out_shift, act_min, act_max;
} iotnas_qadd_t;

/* Pooling keeps its input's scale and zero point. count_pad: the padding is an explicit pad of
 * value pad_value counted in every window (an average pooling with PyTorch's count_include_pad). */
typedef struct {
    iotnas_geometry_t g;
    int32_t c, count_pad, pad_value, act_min, act_max;
} iotnas_qpool_t;

/* A ReLU (or ReLU6) between two scales: out = out_zp + requantize(q - in_zp), clamped. */
typedef struct {
    int32_t n, in_zp, multiplier, shift, out_zp, act_min, act_max;
} iotnas_qrelu_t;

/* Raw pixels (height x width x channels, 0-255) through a per-channel table of 256 codes:
 * normalisation and input quantisation in one lookup. */
void iotnas_qinput(const uint8_t *image, uint32_t pixels, uint32_t c, const int8_t *table, int8_t *out);
void iotnas_qconv(const iotnas_qconv_t *p, const int8_t *in, int8_t *out);
void iotnas_qdepthwise(const iotnas_qconv_t *p, const int8_t *in, int8_t *out);
void iotnas_qlinear(const iotnas_qlinear_t *p, const int8_t *in, int8_t *out);
void iotnas_qadd(const iotnas_qadd_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void iotnas_qmaxpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out);
void iotnas_qavgpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out);
void iotnas_qrelu(const iotnas_qrelu_t *p, const int8_t *in, int8_t *out);
/* Copy cin channels of each of pixels pixels into an output of cout channels at offset. */
void iotnas_qconcat(uint32_t pixels, uint32_t cin, const int8_t *in, uint32_t cout, uint32_t offset, int8_t *out);
/* The logits: real = scale * (q - zero_point). */
void iotnas_dequantize(uint32_t n, const int8_t *in, int32_t zero_point, float scale, float *out);

#endif /* IOTNAS_INT8_H */
