/* iotnas C kernels: float32 activations in channel-major (C, H, W) order, weights decoded
 * row by row from the packed stream by iotnas_decode (defined by the generated model file).
 * C99, no malloc, no libm. BatchNorm is folded before generation (into the convolution
 * before it, or into a per-channel scale and shift). */
#ifndef IOTNAS_OPS_H
#define IOTNAS_OPS_H

#include <stdint.h>
#include <string.h>

/* A stored tensor: index of its first value in the packed stream, its first scale
 * (integer formats: one per output channel of a 2-D+ tensor, one for a vector). */
typedef struct {
    uint32_t first;
    uint32_t scale;
    uint32_t present; /* 0: the layer has no such tensor (a convolution without bias) */
} iotnas_w_t;

/* Decode count values from stream index first, times scale number scale (integer formats). */
void iotnas_decode(uint32_t first, uint32_t count, uint32_t scale, float *out);

/* Value of an IEEE-style float code with e exponent and m mantissa bits (bias 2^(e-1)-1,
 * subnormals). has_inf: the top exponent holds infinities and NaN; otherwise, when nan_fn,
 * the all-ones magnitude is NaN (OCP "fn" formats of 8 bits and more). Integer operations
 * only; with constant e and m the compiler reduces it to a few shifts. */
static inline float iotnas_ieee_value(uint32_t code, uint32_t e, uint32_t m, int has_inf, int nan_fn,
                                      float subnormal_step) {
    const uint32_t e_max = (1u << e) - 1u, m_mask = (1u << m) - 1u;
    const uint32_t sign = (code >> (e + m)) & 1u, ec = (code >> m) & e_max, mc = code & m_mask;
    uint32_t bits;
    float v;
    if (ec == 0u) {
        v = (float)mc * subnormal_step; /* exact: a power of two times an integer below 2^23 */
        return sign ? -v : v;
    }
    if (has_inf && ec == e_max) {
        bits = 0x7f800000u | (mc ? 0x00400000u : 0u);
    } else if (!has_inf && nan_fn && ec == e_max && mc == m_mask) {
        bits = 0x7fc00000u;
    } else {
        bits = ((ec + 127u - ((1u << (e - 1u)) - 1u)) << 23) | (mc << (23u - m));
    }
    bits |= sign << 31;
    memcpy(&v, &bits, sizeof v);
    return v;
}

typedef struct {
    uint32_t cin, hin, win, cout, hout, wout;
    uint32_t kh, kw, sh, sw, ph, pw, groups;
    iotnas_w_t weight, bias;
    uint32_t relu;
} iotnas_conv_t;

/* y = x * scale + shift per channel: a BatchNorm with no convolution before it to fold into. */
typedef struct {
    uint32_t c, h, w;
    iotnas_w_t scale, shift;
    uint32_t relu;
} iotnas_affine_t;

typedef struct {
    uint32_t c, hin, win, hout, wout, kh, kw, sh, sw, ph, pw, count_pad;
} iotnas_pool_t;

typedef struct {
    uint32_t in, out;
    iotnas_w_t weight, bias;
} iotnas_linear_t;

/* Raw pixels (height x width x channels, interleaved, 0-255) to x = (pixel - mean) * inv_std, (C, H, W). */
void iotnas_input(const uint8_t *image, uint32_t c, uint32_t h, uint32_t w, const float *mean,
                  const float *inv_std, float *out);
void iotnas_conv(const iotnas_conv_t *p, const float *in, float *out, float *scratch);
void iotnas_affine(const iotnas_affine_t *p, const float *in, float *out);
void iotnas_relu(uint32_t n, const float *in, float *out);
/* scratch: max((wout - 1) * sw + kw, pw + win) + 1 floats (a row of column maxima with its padding,
 * and a float a stride-2 vector reads past it). */
void iotnas_maxpool(const iotnas_pool_t *p, const float *in, float *out, float *scratch);
void iotnas_avgpool(const iotnas_pool_t *p, const float *in, float *out);
void iotnas_add(uint32_t n, const float *a, const float *b, uint32_t relu, float *out);
/* Append n floats (one input's channels) at out; the caller advances out. */
void iotnas_copy(uint32_t n, const float *in, float *out);
void iotnas_linear(const iotnas_linear_t *p, const float *in, float *out, float *scratch);

#endif /* IOTNAS_OPS_H */
