"""The int8 library's vector requantisation (SSE2, four outputs at a time) against gemmlowp's
scalar form: the same integers for every input a Q31 multiplier and a right shift can meet, and,
through the kernels, the same codes as the portable C build (zero point, activation range and
saturation, left shifts, runs that end in a partial vector)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iotnas.export.c._emit import runtime_source
from iotnas.export.c._emit_int8 import RUNTIME_FILES

from .c_support import require
from .test_c_int8 import GEMMLOWP_REQUANTIZE_C

#: xorshift64*, the inputs' source in both programs below.
RANDOM_C = r"""
static uint64_t state = 0x9e3779b97f4a7c15u;
static uint32_t next(void) {
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return (uint32_t)((state * 0x2545f4914f6cdd1du) >> 32);
}
"""

LANES_CHECK_C = r"""
#include <stdio.h>
#include "iotnas_int8.h"
@REFERENCE@
@RANDOM@
static long checked, shared_checked, avx2_checked, differ;
static int32_t xs[4], ms[4], rs[4];
static int filled;
#if defined(IOTNAS_AVX2)
static int32_t xs8[8], ms8[8], rs8[8];
static int filled8;
/* The same inputs eight at a time through the AVX2 form, where the processor has it. */
IOTNAS_AVX2_FN static void compare8(void) {
    int32_t got[8];
    iotnas_lanes8_t l;
    iotnas_requantize8_lanes(rs8, &l);
    const __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)xs8);
    const __m256i m = _mm256_loadu_si256((const __m256i *)(const void *)ms8);
    _mm256_storeu_si256((__m256i *)(void *)got, iotnas_requantize8(x, m, &l));
    for (int i = 0; i < 8; ++i, ++avx2_checked)
        if (got[i] != gemmlowp_requantize(xs8[i], ms8[i], -rs8[i]) && differ++ < 5)
            printf("avx2, lane %d: x=%ld m=%ld shift=%ld\n", i, (long)xs8[i], (long)ms8[i], (long)-rs8[i]);
    filled8 = 0;
}
#endif
static void compare(void) {
    int32_t got[4];
    const __m128i x = _mm_loadu_si128((const __m128i *)(const void *)xs);
    const __m128i m = _mm_loadu_si128((const __m128i *)(const void *)ms);
    const __m128i r = _mm_loadu_si128((const __m128i *)(const void *)rs);
    _mm_storeu_si128((__m128i *)(void *)got, iotnas_requantize4(x, m, r));
    for (int i = 0; i < filled; ++i, ++checked)
        if (got[i] != gemmlowp_requantize(xs[i], ms[i], -rs[i]) && differ++ < 5)
            printf("lane %d: x=%ld m=%ld shift=%ld\n", i, (long)xs[i], (long)ms[i], (long)-rs[i]);
    if (filled == 4 && rs[0] == rs[1] && rs[0] == rs[2] && rs[0] == rs[3]) { /* one shift for the four */
        _mm_storeu_si128((__m128i *)(void *)got, iotnas_requantize4_shared(x, m, rs[0]));
        for (int i = 0; i < 4; ++i, ++shared_checked)
            if (got[i] != gemmlowp_requantize(xs[i], ms[i], -rs[i]) && differ++ < 5)
                printf("shared, lane %d: x=%ld m=%ld shift=%ld\n", i, (long)xs[i], (long)ms[i], (long)-rs[i]);
    }
#if defined(IOTNAS_AVX2)
    for (int i = 0; i < filled && iotnas_avx2_present(); ++i) {
        xs8[filled8] = xs[i], ms8[filled8] = ms[i], rs8[filled8] = rs[i];
        if (++filled8 == 8) compare8();
    }
#endif
    filled = 0;
}
/* Inputs gather four at a time, so each lane meets every kind of input, shift and multiplier. */
static void check(int32_t x, int32_t m, int32_t right) {
    xs[filled] = x, ms[filled] = m, rs[filled] = right;
    if (++filled == 4) compare();
}
static int32_t q31(void) { return (int32_t)((1u << 30) | (next() >> 2)); } /* [0.5, 1) */
int main(void) {
    static const int32_t edges[] = {0, 1, -1, 2, -2, 3, -3, 127, -128, 255, -256, 1 << 15, -(1 << 15), 1 << 30,
                                    -(1 << 30), INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1};
    static const int32_t multipliers[] = {0, 1, 1 << 30, (1 << 30) + 1, INT32_MAX, INT32_MAX - 1};
    const int n_edges = (int)(sizeof edges / sizeof edges[0]), n_mult = (int)(sizeof multipliers / sizeof multipliers[0]);
    for (int i = 0; i < n_edges; ++i) /* int32's edges, every right shift side by side */
        for (int k = 0; k < 200 + n_mult; ++k)
            for (int32_t right = 0; right <= 31; ++right) check(edges[i], k < n_mult ? multipliers[k] : q31(), right);
    for (int32_t right = 0; right <= 31; ++right) {
        for (int k = 0; k < 40000; ++k) { /* x next to a rounding boundary of 2^right, every magnitude */
            const int32_t m = q31(), x = (int32_t)next() >> (next() % 32u);
            for (int32_t d = -2; d <= 2; ++d) check(x + d, m, right);
        }
        for (int32_t x = -4096; x <= 4096; ++x) check(x, 1 << 30, right); /* products straddling 2^31 */
    }
    for (long k = 0; k < 4000000; ++k) /* anything: any x, any multiplier in [0, 2^31), any right shift */
        check((int32_t)next(), (int32_t)(next() >> 1), (int32_t)(next() % 32u));
    compare();
    printf("%ld %ld\n%ld %ld\n%ld %ld\n", avx2_checked, differ, shared_checked, differ, checked, differ);
    return 0;
}
"""

#: Layers through the library's kernels, each output checked against the scalar form (gemmlowp's
#: requantisation, the output zero point, the activation range) computed here: a pointwise
#: convolution of every output width from 1 to 40 channels (runs ending in partial vectors),
#: multipliers of the whole Q31 range, shifts from -31 to +3 (left shifts among them), zero
#: points and narrow activation ranges that saturate; convolutions with windows (3 x 3, 5 x 5, 5 x 1, 1 x 3,
#: strided, padded, one group of a grouped layer: the direct kernel inside the image, the patch at
#: the borders) and depthwise
#: layers the same way; additions
#: and ReLUs between two scales; max pooling (runs of pixels at stride 1) against every window's
#: plain maximum.
KERNELS_CHECK_C = r"""
#include <stdio.h>
#include <string.h>
#include "iotnas_int8.h"
@REFERENCE@
@RANDOM@
#define PIXELS 64
#define MAX_C 40
static long checked, differ;
#define BUFFER (20 * 20 * 24) /* the largest input: rows of 20 pixels of up to 24 channels */
static int8_t in[BUFFER], out[BUFFER], filter[4096], other[BUFFER];
static int32_t bias[MAX_C], multiplier[MAX_C];
static int8_t shift[MAX_C];
static int8_t expected(int32_t acc, int c, int32_t out_zp, int32_t lo, int32_t hi) {
    const int32_t v = gemmlowp_requantize(acc + bias[c], multiplier[c], shift[c]) + out_zp;
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
static void compare(int8_t got, int8_t want, const char *what, int c) {
    ++checked;
    if (got != want && differ++ < 5) printf("%s channel %d: %d, want %d\n", what, c, got, want);
}
static int8_t byte(void) { return (int8_t)(next() >> 24); }
/* per-channel parameters: bias, multiplier (a few at the range's ends), shift in [-31, 3] */
static void channels(int n, int wide) {
    for (int c = 0; c < n; ++c) {
        const uint32_t kind = next() % 8u;
        bias[c] = wide ? (int32_t)next() >> (next() % 8u) : (int32_t)(next() >> 18) - (1 << 13);
        multiplier[c] = kind == 0 ? 0 : kind == 1 ? INT32_MAX : kind == 2 ? (1 << 30) : (int32_t)((1u << 30) | (next() >> 2));
        shift[c] = (int8_t)((int32_t)(next() % 35u) - 31);
        if (next() % 4u) shift[c] = (int8_t)(-(int32_t)(next() % 12u)); /* most layers: small right shifts */
    }
}
static iotnas_requant_t requant(int32_t *out_zp, int32_t *lo, int32_t *hi) {
    iotnas_requant_t q;
    *out_zp = (int32_t)(next() % 256u) - 128;
    *lo = -128, *hi = 127;
    if (next() % 2u) *lo = (int32_t)(next() % 128u) - 128, *hi = *lo + (int32_t)(next() % (uint32_t)(128 - *lo));
    q.bias = bias, q.multiplier = multiplier, q.shift = shift;
    q.in_zp = 0, q.out_zp = *out_zp, q.act_min = *lo, q.act_max = *hi;
    return q;
}
static void pointwise(int cin, int cout, int wide) {
    int32_t out_zp, lo, hi;
    iotnas_qconv_t p;
    const iotnas_geometry_t g = {8, PIXELS / 8, 8, PIXELS / 8, 1, 1, 1, 1, 0, 0};
    channels(cout, wide);
    for (int i = 0; i < PIXELS * cin; ++i) in[i] = byte();
    for (int i = 0; i < cout * cin; ++i) filter[i] = byte();
    memset(filter + cout * cin, 0, 8);
    p.g = g, p.in_stride = cin, p.in_offset = 0, p.cin = cin, p.cout = cout, p.filter = filter;
    p.q = requant(&out_zp, &lo, &hi);
    iotnas_qconv(&p, in, out);
    for (int px = 0; px < PIXELS; ++px)
        for (int c = 0; c < cout; ++c) {
            int32_t acc = 0;
            for (int k = 0; k < cin; ++k) acc += (int32_t)in[px * cin + k] * filter[c * cin + k];
            compare(out[px * cout + c], expected(acc, c, out_zp, lo, hi), "pointwise", c);
        }
}
/* A layer on a side x side input (g's) of in_stride channels, reading cin of them from offset: random
 * input, filter (n_filter values, then 8 zeros of slack), per-channel parameters and input zero point. */
static iotnas_qconv_t layer(iotnas_geometry_t g, int in_stride, int offset, int cin, int cout, int n_filter,
                            int32_t *out_zp, int32_t *lo, int32_t *hi) {
    iotnas_qconv_t p;
    channels(cout, 0);
    for (int i = 0; i < g.hin * g.win * in_stride; ++i) in[i] = byte();
    for (int i = 0; i < n_filter; ++i) filter[i] = byte();
    memset(filter + n_filter, 0, 8);
    p.g = g, p.in_stride = in_stride, p.in_offset = offset, p.cin = cin, p.cout = cout, p.filter = filter;
    p.q = requant(out_zp, lo, hi);
    p.q.in_zp = (int32_t)(next() % 256u) - 128;
    return p;
}
/* Channel k of the layer's input at (y, x), or the zero point in the padding. */
static int32_t tap(const iotnas_qconv_t *p, int y, int x, int k) {
    const int side = p->g.win;
    return y >= 0 && y < side && x >= 0 && x < side ? in[(y * side + x) * p->in_stride + p->in_offset + k] : p->q.in_zp;
}
/* Output channel c of the layer at (oy, ox), summed over every input channel, or over channel c
 * alone in a depthwise layer. */
static int32_t window_sum(const iotnas_qconv_t *p, int depthwise, int oy, int ox, int c) {
    const iotnas_geometry_t *g = &p->g;
    int32_t acc = 0;
    for (int ky = 0; ky < g->kh; ++ky)
        for (int kx = 0; kx < g->kw; ++kx)
            for (int k = depthwise ? c : 0; k < (depthwise ? c + 1 : p->cin); ++k)
                acc += tap(p, oy * g->sh - g->pt + ky, ox * g->sw - g->pl + kx, k)
                       * p->filter[depthwise ? (ky * g->kw + kx) * p->cout + c : ((c * g->kh + ky) * g->kw + kx) * p->cin + k];
    return acc;
}
/* Runs the layer and compares every output code with the reference. */
static void check_layer(const iotnas_qconv_t *p, int depthwise, int32_t out_zp, int32_t lo, int32_t hi) {
    if (depthwise)
        iotnas_qdepthwise(p, in, out);
    else
        iotnas_qconv(p, in, out);
    for (int oy = 0; oy < p->g.hout; ++oy)
        for (int ox = 0; ox < p->g.wout; ++ox)
            for (int c = 0; c < p->cout; ++c)
                compare(out[(oy * p->g.wout + ox) * p->cout + c],
                        expected(window_sum(p, depthwise, oy, ox, c), c, out_zp, lo, hi), depthwise ? "depthwise" : "conv", c);
}
/* side x side in of cin + extra channels, the layer reading cin of them from a random offset (one group
 * of a grouped convolution when extra > 0) */
static void conv_of(int side, int cin, int cout, int kh, int kw, int stride, int pad, int extra) {
    int32_t out_zp, lo, hi;
    const int pt = kh > 1 ? pad : 0, pl = kw > 1 ? pad : 0;
    const int hout = (side + 2 * pt - kh) / stride + 1, wout = (side + 2 * pl - kw) / stride + 1;
    const iotnas_geometry_t g = {side, side, hout, wout, kh, kw, stride, stride, pt, pl};
    const iotnas_qconv_t p = layer(g, cin + extra, (int)(next() % (uint32_t)(extra + 1)), cin, cout,
                                   cout * kh * kw * cin, &out_zp, &lo, &hi);
    check_layer(&p, 0, out_zp, lo, hi);
}
static void conv(int cin, int cout, int kh, int kw, int stride, int pad, int extra) {
    conv_of(8, cin, cout, kh, kw, stride, pad, extra);
}
static void depthwise_of(int side, int c_n, int k, int stride, int pad) { /* filter [k][k][c_n] */
    int32_t out_zp, lo, hi;
    const int hout = (side + 2 * pad - k) / stride + 1;
    const iotnas_geometry_t g = {side, side, hout, hout, k, k, stride, stride, pad, pad};
    const iotnas_qconv_t p = layer(g, c_n, 0, c_n, c_n, k * k * c_n, &out_zp, &lo, &hi);
    check_layer(&p, 1, out_zp, lo, hi);
}
static void depthwise(int c_n, int k, int stride, int pad) {
    depthwise_of(8, c_n, k, stride, pad);
}
static void add(int n) { /* TensorFlow Lite's ADD: each input to a common scale, the sum to the output's */
    iotnas_qadd_t p;
    p.n = n;
    p.a_zp = (int32_t)(next() % 256u) - 128, p.b_zp = (int32_t)(next() % 256u) - 128;
    p.a_multiplier = (int32_t)((1u << 30) | (next() >> 2)), p.a_shift = -(int32_t)(next() % 4u) - 1;
    p.b_multiplier = (int32_t)((1u << 30) | (next() >> 2)), p.b_shift = -(int32_t)(next() % 4u) - 1;
    if (next() % 2u) { /* the input of the larger scale: a multiplier of a half, no shift */
        if (next() % 2u) p.a_multiplier = 1 << 30, p.a_shift = 0;
        else p.b_multiplier = 1 << 30, p.b_shift = 0;
    }
    p.out_multiplier = (int32_t)((1u << 30) | (next() >> 2)), p.out_shift = -(int32_t)(next() % 24u) + 2;
    p.out_zp = (int32_t)(next() % 256u) - 128, p.act_min = -128, p.act_max = 127;
    if (next() % 2u) p.act_min = p.out_zp;
    for (int i = 0; i < n; ++i) in[i] = byte(), other[i] = byte();
    iotnas_qadd(&p, in, other, out);
    for (int i = 0; i < n; ++i) {
        const int32_t a = gemmlowp_requantize(((int32_t)in[i] - p.a_zp) * (1 << 20), p.a_multiplier, p.a_shift);
        const int32_t b = gemmlowp_requantize(((int32_t)other[i] - p.b_zp) * (1 << 20), p.b_multiplier, p.b_shift);
        int32_t v = gemmlowp_requantize(a + b, p.out_multiplier, p.out_shift) + p.out_zp;
        v = v < p.act_min ? p.act_min : (v > p.act_max ? p.act_max : v);
        compare(out[i], (int8_t)v, "add", i);
    }
}
static void relu(int n) { /* a ReLU between two scales: right shifts and the left shifts of a scale-up */
    iotnas_qrelu_t p;
    p.n = n, p.in_zp = (int32_t)(next() % 256u) - 128, p.out_zp = (int32_t)(next() % 256u) - 128;
    p.multiplier = (int32_t)((1u << 30) | (next() >> 2)), p.shift = (int32_t)(next() % 6u) - 3;
    p.act_min = p.out_zp > -128 ? p.out_zp : -128, p.act_max = next() % 2u ? 127 : p.act_min + (int32_t)(next() % 64u);
    if (p.act_max > 127) p.act_max = 127;
    for (int i = 0; i < n; ++i) in[i] = byte();
    iotnas_qrelu(&p, in, out);
    for (int i = 0; i < n; ++i) {
        int32_t v = p.out_zp + gemmlowp_requantize((int32_t)in[i] - p.in_zp, p.multiplier, p.shift);
        v = v < p.act_min ? p.act_min : (v > p.act_max ? p.act_max : v);
        compare(out[i], (int8_t)v, "relu", i);
    }
}
static void maxpool(int c, int k, int stride, int pad, int size) { /* against every window's plain maximum */
    iotnas_qpool_t p;
    const int hout = (size + 2 * pad - k) / stride + 1;
    const iotnas_geometry_t g = {size, size, hout, hout, k, k, stride, stride, pad, pad};
    p.g = g, p.c = c, p.count_pad = 0, p.pad_value = 0, p.act_min = -128, p.act_max = 127;
    if (next() % 2u) p.act_min = (int32_t)(next() % 64u) - 64, p.act_max = p.act_min + (int32_t)(next() % 128u);
    for (int i = 0; i < size * size * c; ++i) in[i] = byte();
    iotnas_qmaxpool(&p, in, out);
    for (int oy = 0; oy < hout; ++oy)
        for (int ox = 0; ox < hout; ++ox)
            for (int ch = 0; ch < c; ++ch) {
                int32_t v = -128;
                for (int ky = 0; ky < k; ++ky)
                    for (int kx = 0; kx < k; ++kx) {
                        const int y = oy * stride - pad + ky, x = ox * stride - pad + kx;
                        if (y >= 0 && y < size && x >= 0 && x < size && in[(y * size + x) * c + ch] > v)
                            v = in[(y * size + x) * c + ch];
                    }
                v = v < p.act_min ? p.act_min : (v > p.act_max ? p.act_max : v);
                compare(out[(oy * hout + ox) * c + ch], (int8_t)v, "maxpool", ch);
            }
}
int main(void) {
    for (int c = 1; c <= 24; ++c) /* 3 x 3 at strides 1 and 2, 2 x 2 at stride 2, odd sizes, padded or not */
        for (int size = 3; size <= 16; size += 13) {
            maxpool(c, 3, 1, 1, size), maxpool(c, 3, 2, 1, size), maxpool(c, 2, 2, 0, size);
            maxpool(c, 3, 1, 0, size), maxpool(c, 3, 2, 0, size);
        }
    for (int trial = 0; trial < 12; ++trial)
        for (int cout = 1; cout <= MAX_C; ++cout) pointwise(1 + (int)(next() % (uint32_t)MAX_C), cout, trial % 2);
    for (int cin = 1; cin <= 9; ++cin) /* windows of every kind, outputs in runs of pixels or not */
        for (int cout = 1; cout <= 12; ++cout)
            for (int extra = 0; extra <= 7; extra += 7) {
                conv(cin, cout, 3, 3, 1, 1, extra), conv(cin, cout, 3, 3, 2, 1, extra), conv(cin, cout, 5, 5, 1, 2, extra);
                conv(cin, cout, 3, 3, 1, 0, extra), conv(cin, cout, 5, 1, 1, 2, extra), conv(cin, cout, 1, 3, 1, 1, extra);
                conv(cin, cout, 1, 1, 2, 0, extra), conv(cin, cout, 1, 1, 1, 0, extra);
            }
    for (int cin = 1; cin <= 8; ++cin) /* groups of grouped layers on wider inputs (rows of 13 and 16 pixels) */
        for (int side = 13; side <= 16; side += 3)
            for (int cout = cin; cout <= cin + 4; cout += 4) {
                const int extra = (int)(next() % (uint32_t)(24 - cin)); /* the other groups' channels */
                conv_of(side, cin, cout, 3, 3, 2, 1, extra), conv_of(side, cin, cout, 3, 3, 1, 1, extra);
                conv_of(side, cin, cout, 5, 5, 2, 2, extra), conv_of(side, cin, cout, 3, 3, 2, 0, extra);
                conv_of(side, cin, cout, 3, 3, 1, 1, 0);
            }
    for (int cin = 1; cin <= 8; ++cin) /* few channels on rows of 20 pixels: 16 a step (8 for 5 to 8 outputs), the last overlapping */
        for (int cout = 1; cout <= 8; ++cout)
            conv_of(20, cin, cout, 3, 3, 1, 1, 0), conv_of(20, cin, cout, 5, 5, 1, 2, 0), conv_of(20, cin, cout, 1, 3, 1, 1, 0);
    for (int c = 1; c <= 20; ++c) /* depthwise rows of 13 and 20 pixels: 8 a step, the last 8 overlapping */
        for (int side = 13; side <= 20; side += 7)
            depthwise_of(side, c, 7, 1, 3), depthwise_of(side, c, 3, 1, 1), depthwise_of(side, c, 7, 2, 3),
            depthwise_of(side, c, 5, 2, 2), depthwise_of(side, c, 4, 1, 1);
    for (int trial = 0; trial < 4; ++trial) /* 3 x 3 unpadded, padded, strided; 7 x 7; 1 x 1 (a per-channel scale) */
        for (int c = 1; c <= 20; ++c)
            depthwise(c, 3, 1, 0), depthwise(c, 3, 1, 1), depthwise(c, 3, 2, 1), depthwise(c, 7, 1, 3), depthwise(c, 1, 1, 0),
            depthwise(c, 7, 2, 3), depthwise(c, 5, 1, 2), depthwise(c, 4, 1, 1), depthwise(c, 5, 2, 0);
    for (int trial = 0; trial < 200; ++trial) add(1 + (int)(next() % (uint32_t)(PIXELS * MAX_C)));
    for (int trial = 0; trial < 200; ++trial) relu(1 + (int)(next() % (uint32_t)(PIXELS * MAX_C)));
    printf("%ld %ld\n", checked, differ);
    return 0;
}
"""


def _run(source: str, folder: Path, *flags: str, with_kernels: bool = False) -> tuple[int, int, list[str]]:
    """Build and run a check program: (outputs checked, outputs that differ, its first messages)."""
    for name in RUNTIME_FILES:
        (folder / name).write_text(runtime_source(name), encoding="utf-8")
    text = source.replace("@REFERENCE@", GEMMLOWP_REQUANTIZE_C).replace("@RANDOM@", RANDOM_C)
    (folder / "check.c").write_text(text, encoding="utf-8")
    program = folder / "check"
    sources = [str(folder / "check.c")] + ([str(folder / "iotnas_int8.c")] if with_kernels else [])
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, f"-I{folder}", "-o",
                    str(program), *sources], check=True)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split("\n")
    checked, differ = (int(v) for v in out[-2].split())
    return checked, differ, out[:-2]


def _x86() -> bool:
    probe = subprocess.run(["gcc", "-dM", "-E", "-x", "c", "/dev/null"], capture_output=True, text=True, check=True)
    return "#define __SSE2__ 1" in probe.stdout


def _avx2() -> bool:
    """Whether this processor runs the kernels' AVX2 forms (chosen at run time)."""
    cpuinfo = Path("/proc/cpuinfo")
    return _x86() and cpuinfo.exists() and " avx2" in cpuinfo.read_text(encoding="utf-8")


def test_four_lane_requantization_equals_the_gemmlowp_reference(tmp_path):
    """About 11 million inputs, four lanes at a time: int32's edges under every right shift and
    multipliers at the Q31 range's ends, x next to each rounding boundary, any x and multiplier;
    where the four lanes share a shift, the shared-shift form as well."""
    require("gcc")
    if not _x86():
        pytest.skip("the four-lane form is x86 (SSE2) code")
    checked, differ, messages = _run(LANES_CHECK_C, tmp_path)
    shared = int(messages[-1].split()[0])  # of them, four lanes with one shift (iotnas_requantize4_shared)
    avx2 = int(messages[-2].split()[0])  # and eight lanes at a time in AVX2 (iotnas_requantize8)
    assert checked > 5_000_000 and shared > 1_000_000
    assert avx2 == 0 if not _avx2() else avx2 > 5_000_000
    assert differ == 0, "\n".join(messages)


#: Builds of the kernels: x86's (with AVX2 where this processor has it), x86's with SSE2 alone, x86's
#: with no depthwise layer from a paired plane (as a layer whose plane would not fit), and the
#: portable C of a Cortex-M.
BUILDS = {"x86": (), "SSE2 alone": ("-DIOTNAS_NO_AVX2",),
          "SSE2 without the paired plane": ("-DIOTNAS_PAIRED_PLANE_VECTORS=1", "-DIOTNAS_NO_AVX2"),
          "portable": ("-U__SSE2__",)}


@pytest.mark.parametrize("lanes", list(BUILDS))
def test_kernels_requantize_as_the_scalar_form(lanes, tmp_path):
    """Every output code of pointwise, windowed, depthwise, addition, ReLU and max-pooling layers with random
    parameters equals the scalar reference, with the vector kernels (x86) and without them (as on a Cortex-M)."""
    require("gcc")
    if lanes != "portable" and not _x86():
        pytest.skip("the vector kernels are x86 (SSE2) code")
    flags = BUILDS[lanes]
    checked, differ, messages = _run(KERNELS_CHECK_C, tmp_path, *flags, with_kernels=True)
    assert checked > 1_000_000
    assert differ == 0, "\n".join(messages)
