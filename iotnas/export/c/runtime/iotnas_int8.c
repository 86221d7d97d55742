/* iotnas int8 kernels (see iotnas_int8.h): TensorFlow Lite's reference integer arithmetic. */
#include "iotnas_int8.h"

#include <string.h>

void iotnas_qinput(const uint8_t *image, uint32_t pixels, uint32_t c, const int8_t *table, int8_t *out) {
    for (uint32_t i = 0; i < pixels; ++i)
        for (uint32_t ch = 0; ch < c; ++ch) out[i * c + ch] = table[ch * 256u + image[i * c + ch]];
}

static int8_t requantize_channel(const iotnas_requant_t *q, int32_t c, int32_t acc) {
    if (q->bias) acc += q->bias[c];
    return iotnas_saturate(iotnas_requantize(acc, q->multiplier[c], q->shift[c]) + q->out_zp, q->act_min,
                           q->act_max);
}

/* The window of output pixel (oy, ox): the input position of its top-left kernel tap (y0, x0)
 * and the kernel rows [ky0, ky1) and columns [kx0, kx1) that fall inside the input. */
typedef struct {
    int32_t y0, x0, ky0, ky1, kx0, kx1;
} window_t;

static window_t window_at(const iotnas_geometry_t *g, int32_t oy, int32_t ox) {
    window_t w;
    w.y0 = oy * g->sh - g->pt;
    w.x0 = ox * g->sw - g->pl;
    w.ky0 = w.y0 < 0 ? -w.y0 : 0;
    w.ky1 = w.y0 + g->kh > g->hin ? g->hin - w.y0 : g->kh;
    w.kx0 = w.x0 < 0 ? -w.x0 : 0;
    w.kx1 = w.x0 + g->kw > g->win ? g->win - w.x0 : g->kw;
    return w;
}

/* A pointwise convolution: one dot product over the cin channels (of stride) per output, no
 * window to clip. */
static void pointwise(iotnas_requant_t q, int32_t pixels, int32_t cin, int32_t cout, int32_t stride,
                      const int8_t *x, const int8_t *filter, int8_t *out) {
    for (int32_t pixel = 0; pixel < pixels; ++pixel, x += stride, out += cout) {
        for (int32_t oc = 0; oc < cout; ++oc) {
            const int8_t *f = filter + oc * cin;
            int32_t acc = 0;
            for (int32_t ic = 0; ic < cin; ++ic) acc += ((int32_t)x[ic] - q.in_zp) * (int32_t)f[ic];
            out[oc] = requantize_channel(&q, oc, acc);
        }
    }
}

void iotnas_qconv(const iotnas_qconv_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t geometry = p->g, *g = &geometry; /* locals: int8 stores may alias *p */
    const iotnas_requant_t q = p->q;
    const int32_t cin = p->cin, cout = p->cout, in_stride = p->in_stride, in_offset = p->in_offset;
    const int8_t *const filter = p->filter;
    const int32_t zp = q.in_zp;
    if (g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0) {
        pointwise(q, g->hout * g->wout, cin, cout, in_stride, in + in_offset, filter, out);
        return;
    }
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        int8_t *o = out + pixel * cout;
        for (int32_t oc = 0; oc < cout; ++oc) {
            int32_t acc = 0;
            for (int32_t ky = w.ky0; ky < w.ky1; ++ky) {
                const int8_t *x = in + ((w.y0 + ky) * g->win + w.x0 + w.kx0) * in_stride + in_offset;
                const int8_t *f = filter + ((oc * g->kh + ky) * g->kw + w.kx0) * cin;
                if (in_stride == cin) { /* the window's row is one run of input and of filter */
                    const int32_t n = (w.kx1 - w.kx0) * cin;
                    for (int32_t i = 0; i < n; ++i) acc += ((int32_t)x[i] - zp) * (int32_t)f[i];
                } else {
                    for (int32_t kx = w.kx0; kx < w.kx1; ++kx, x += in_stride, f += cin)
                        for (int32_t ic = 0; ic < cin; ++ic) acc += ((int32_t)x[ic] - zp) * (int32_t)f[ic];
                }
            }
            o[oc] = requantize_channel(&q, oc, acc);
        }
    }
}

#define IOTNAS_DEPTHWISE_BLOCK 32 /* channels summed side by side: a fixed frame, a vectorisable loop */

void iotnas_qdepthwise(const iotnas_qconv_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t geometry = p->g, *g = &geometry; /* locals: int8 stores may alias *p */
    const iotnas_requant_t q = p->q;
    const int32_t cin = p->cin, cout = p->cout, in_stride = p->in_stride, in_offset = p->in_offset;
    const int8_t *const filter = p->filter;
    const int32_t zp = q.in_zp, multiplier = cout / cin;
    int32_t acc[IOTNAS_DEPTHWISE_BLOCK];
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        int8_t *o = out + pixel * cout;
        for (int32_t c0 = 0; c0 < cout; c0 += IOTNAS_DEPTHWISE_BLOCK) {
            const int32_t n = cout - c0 < IOTNAS_DEPTHWISE_BLOCK ? cout - c0 : IOTNAS_DEPTHWISE_BLOCK;
            for (int32_t i = 0; i < n; ++i) acc[i] = 0;
            for (int32_t ky = w.ky0; ky < w.ky1; ++ky) {
                for (int32_t kx = w.kx0; kx < w.kx1; ++kx) {
                    const int8_t *x = in + ((w.y0 + ky) * g->win + w.x0 + kx) * in_stride + in_offset;
                    const int8_t *f = filter + (ky * g->kw + kx) * cout + c0;
                    if (multiplier == 1) {
                        x += c0;
                        for (int32_t i = 0; i < n; ++i) acc[i] += ((int32_t)x[i] - zp) * (int32_t)f[i];
                    } else { /* output channel c reads input channel c / multiplier */
                        for (int32_t i = 0; i < n; ++i) acc[i] += ((int32_t)x[(c0 + i) / multiplier] - zp) * (int32_t)f[i];
                    }
                }
            }
            for (int32_t i = 0; i < n; ++i) o[c0 + i] = requantize_channel(&q, c0 + i, acc[i]);
        }
    }
}

void iotnas_qlinear(const iotnas_qlinear_t *p, const int8_t *in, int8_t *out) {
    for (int32_t o = 0; o < p->out; ++o) {
        const int8_t *w = p->filter + o * p->in;
        int32_t acc = 0;
        for (int32_t i = 0; i < p->in; ++i) acc += ((int32_t)in[i] - p->q.in_zp) * (int32_t)w[i];
        out[o] = requantize_channel(&p->q, o, acc);
    }
}

#define IOTNAS_ADD_LEFT_SHIFT 20 /* TensorFlow Lite's headroom for int8 additions */

void iotnas_qadd(const iotnas_qadd_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    for (int32_t i = 0; i < p->n; ++i) {
        const int32_t x = ((int32_t)a[i] - p->a_zp) * (1 << IOTNAS_ADD_LEFT_SHIFT);
        const int32_t y = ((int32_t)b[i] - p->b_zp) * (1 << IOTNAS_ADD_LEFT_SHIFT);
        const int32_t sum = iotnas_requantize(x, p->a_multiplier, p->a_shift)
                            + iotnas_requantize(y, p->b_multiplier, p->b_shift);
        out[i] = iotnas_saturate(iotnas_requantize(sum, p->out_multiplier, p->out_shift) + p->out_zp, p->act_min,
                                 p->act_max);
    }
}

void iotnas_qmaxpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t *g = &p->g;
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        for (int32_t c = 0; c < p->c; ++c) {
            int32_t m = INT8_MIN; /* padding never wins: TensorFlow Lite pads max pooling with -128 */
            for (int32_t ky = w.ky0; ky < w.ky1; ++ky)
                for (int32_t kx = w.kx0; kx < w.kx1; ++kx) {
                    const int32_t v = in[((w.y0 + ky) * g->win + w.x0 + kx) * p->c + c];
                    m = v > m ? v : m;
                }
            out[pixel * p->c + c] = iotnas_saturate(m, p->act_min, p->act_max);
        }
    }
}

void iotnas_qavgpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t *g = &p->g;
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        const int32_t inside = (w.ky1 - w.ky0) * (w.kx1 - w.kx0);
        const int32_t count = p->count_pad ? g->kh * g->kw : inside;
        for (int32_t c = 0; c < p->c; ++c) {
            int32_t acc = p->count_pad ? (count - inside) * p->pad_value : 0;
            for (int32_t ky = w.ky0; ky < w.ky1; ++ky)
                for (int32_t kx = w.kx0; kx < w.kx1; ++kx) acc += in[((w.y0 + ky) * g->win + w.x0 + kx) * p->c + c];
            /* to the nearest integer, halves away from zero */
            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
            out[pixel * p->c + c] = iotnas_saturate(acc, p->act_min, p->act_max);
        }
    }
}

void iotnas_qrelu(const iotnas_qrelu_t *p, const int8_t *in, int8_t *out) {
    for (int32_t i = 0; i < p->n; ++i)
        out[i] = iotnas_saturate(p->out_zp + iotnas_requantize((int32_t)in[i] - p->in_zp, p->multiplier, p->shift),
                                 p->act_min, p->act_max);
}

void iotnas_qconcat(uint32_t pixels, uint32_t cin, const int8_t *in, uint32_t cout, uint32_t offset, int8_t *out) {
    for (uint32_t i = 0; i < pixels; ++i) memcpy(out + i * cout + offset, in + i * cin, cin);
}

void iotnas_dequantize(uint32_t n, const int8_t *in, int32_t zero_point, float scale, float *out) {
    for (uint32_t i = 0; i < n; ++i) out[i] = ((float)in[i] - (float)zero_point) * scale;
}
