/* The same training step, plainly: every layer a forward/backward pair of loops with its sizes as arguments,
 * one sample at a time (the batch only where batch norm needs it), no vectors, no blocking, no threads.
 * It is slow; it is what the engines compute, written so that it can be read, and lenet_reference_step is
 * checked against PyTorch (tests/test_fast_kernels.py) like each engine. Shared with the engines: the
 * activations, the pooling rule, Keras' head and the loss from common.h.
 *
 * Layouts are PyTorch's: (channels, rows, columns) per sample, Linear weights (out, in).
 */
#include <stdlib.h>

#include "common.h"

#if LENET_FC /* (a classic classifier: the whole step) */
/* one float through common.h's lane-wise functions */
static float act1(float z, int kind, float slope) { return act_forward(vsplat(z), kind, slope)[0]; }
static float dact1(float g, float s, int kind, float slope) {
    return act_backward(vsplat(g), vsplat(s), kind, slope)[0];
}

/* out (c_out, o, o) = conv(in (c_in, side, side) zero-padded by pad, w (c_out, c_in, k, k)) + b, with
 * o = side + 2 pad - k + 1 */
static void conv2d_forward(float *out, const float *in, const float *w, const float *b, int c_in, int c_out, int side,
                           int k, int pad) {
    const int o = side + 2 * pad - k + 1;
    for (int co = 0; co < c_out; co++)
        for (int y = 0; y < o; y++)
            for (int x = 0; x < o; x++) {
                float sum = b ? b[co] : 0.0f;
                for (int ci = 0; ci < c_in; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const int r = y + ky - pad, c = x + kx - pad;
                            if (r >= 0 && r < side && c >= 0 && c < side)
                                sum += w[((co * c_in + ci) * k + ky) * k + kx] * in[(ci * side + r) * side + c];
                        }
                out[(co * o + y) * o + x] = sum;
            }
}

/* From gout = d loss / d out: gw, gb added onto (in double: the sums over a batch cancel a lot, in nets
 * without activations most), and gin (may be NULL) written. */
static void conv2d_backward(float *gin, double *gw, double *gb, const float *gout, const float *in, const float *w,
                            int c_in, int c_out, int side, int k, int pad) {
    const int o = side + 2 * pad - k + 1;
    if (gin) memset(gin, 0, sizeof(float) * c_in * side * side);
    for (int co = 0; co < c_out; co++)
        for (int y = 0; y < o; y++)
            for (int x = 0; x < o; x++) {
                const float g = gout[(co * o + y) * o + x];
                gb[co] += g;
                for (int ci = 0; ci < c_in; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const int r = y + ky - pad, c = x + kx - pad;
                            if (r < 0 || r >= side || c < 0 || c >= side) continue;
                            gw[((co * c_in + ci) * k + ky) * k + kx] += (double)g * in[(ci * side + r) * side + c];
                            if (gin) gin[(ci * side + r) * side + c] += g * w[((co * c_in + ci) * k + ky) * k + kx];
                        }
            }
}

/* 2x2 pooling of stride 2: out (c, side / 2, side / 2) from in (c, side, side) (a last odd row and column
 * dropped, as PyTorch drops them). */
static void pool2d_forward(float *out, const float *in, int c, int side, int kind) {
    const int q = side / 2;
    for (int ch = 0; ch < c; ch++)
        for (int r = 0; r < q; r++)
            for (int s = 0; s < q; s++) {
                const float *a = in + (ch * side + 2 * r) * side + 2 * s;
                out[(ch * q + r) * q + s] = pool_forward(kind, vsplat(a[0]), vsplat(a[1]), vsplat(a[side]),
                                                         vsplat(a[side + 1]))[0];
            }
}

/* gin = d loss / d the activation's input, from gout (pool's output gradient) and s = the activation's output
 * (pooling's input): pooling and activation backward together, as common.h's pool_backward routes it. */
static void pool2d_act_backward(float *gin, const float *gout, const float *s, int c, int side, int pool, int act,
                                float slope) {
    const int q = side / 2;
    memset(gin, 0, sizeof(float) * c * side * side);
    for (int ch = 0; ch < c; ch++)
        for (int r = 0; r < q; r++)
            for (int t = 0; t < q; t++) {
                const int i = (ch * side + 2 * r) * side + 2 * t;
                vf g[4];
                pool_backward(pool, act, slope, vsplat(gout[(ch * q + r) * q + t]), vsplat(s[i]), vsplat(s[i + 1]),
                              vsplat(s[i + side]), vsplat(s[i + side + 1]), g);
                gin[i] = g[0][0], gin[i + 1] = g[1][0], gin[i + side] = g[2][0], gin[i + side + 1] = g[3][0];
            }
}

/* Batch norm in training, over the batch's n samples of (c, hw): x normalised by the batch's mean and biased
 * variance (summed in double), then gamma, beta; the running statistics move by momentum. mean, var out. */
static void batchnorm_forward(float *out, const float *x, int n, int c, int hw, const float *gamma, const float *beta,
                              float *running_mean, float *running_var, float eps, float momentum, float *mean,
                              float *var) {
    for (int ch = 0; ch < c; ch++) {
        double s = 0.0, ss = 0.0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                const double v = x[((long)i * c + ch) * hw + p];
                s += v, ss += v * v;
            }
        const double count = (double)n * hw, m = s / count, v = ss / count - m * m;
        mean[ch] = (float)m, var[ch] = (float)(v > 0.0 ? v : 0.0);
        const float invstd = 1.0f / sqrtf(var[ch] + eps), g = gamma ? gamma[ch] : 1.0f, b = beta ? beta[ch] : 0.0f;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                const long at = ((long)i * c + ch) * hw + p;
                out[at] = (x[at] - mean[ch]) * invstd * g + b;
            }
        if (running_mean) {
            const float unbiased = (float)(var[ch] * count / (count > 1.0 ? count - 1.0 : 1.0));
            running_mean[ch] = momentum * mean[ch] + (1.0f - momentum) * running_mean[ch];
            running_var[ch] = momentum * unbiased + (1.0f - momentum) * running_var[ch];
        }
    }
}

/* gx from gy (in place allowed), and dgamma, dbeta written, for the batch's n samples. */
static void batchnorm_backward(float *gx, const float *gy, const float *x, int n, int c, int hw, const float *gamma,
                               const float *mean, const float *var, float eps, float *dgamma, float *dbeta) {
    for (int ch = 0; ch < c; ch++) {
        const float invstd = 1.0f / sqrtf(var[ch] + eps), g = gamma ? gamma[ch] : 1.0f;
        double sg = 0.0, sgx = 0.0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                const long at = ((long)i * c + ch) * hw + p;
                sg += gy[at], sgx += gy[at] * (x[at] - mean[ch]) * invstd;
            }
        const double count = (double)n * hw;
        dgamma[ch] = (float)sgx, dbeta[ch] = (float)sg;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                const long at = ((long)i * c + ch) * hw + p;
                const float xhat = (x[at] - mean[ch]) * invstd;
                gx[at] = g * invstd * (gy[at] - (float)(sg / count) - xhat * (float)(sgx / count));
            }
    }
}

/* out (n_out) = w (n_out, n_in) in + b */
static void linear_forward(float *out, const float *in, const float *w, const float *b, int n_in, int n_out) {
    for (int o = 0; o < n_out; o++) {
        float sum = b ? b[o] : 0.0f;
        for (int i = 0; i < n_in; i++) sum += w[o * n_in + i] * in[i];
        out[o] = sum;
    }
}

/* gw, gb added onto (in double); gin written (may be NULL) */
static void linear_backward(float *gin, double *gw, double *gb, const float *gout, const float *in, const float *w,
                            int n_in, int n_out) {
    for (int o = 0; o < n_out; o++) {
        gb[o] += gout[o];
        for (int i = 0; i < n_in; i++) gw[o * n_in + i] += (double)gout[o] * in[i];
    }
    if (gin)
        for (int i = 0; i < n_in; i++) {
            float sum = 0.0f;
            for (int o = 0; o < n_out; o++) sum += w[o * n_in + i] * gout[o];
            gin[i] = sum;
        }
}

/* The whole training step as lenet_lanes_step defines it (the same gradients into grads, loss and correct count
 * into out), for any net the kernels take with a classic classifier, batch norm included (batch statistics;
 * the running statistics move by prm->momentum). features: (B, NF), pool2's output. Returns -1 if a label is
 * out of range. */
int lenet_reference_step(int batch, const LenetParams *prm, const LenetClassifier *cls, const float *x,
                         const int64_t *y, float smoothing, float scale, float *grads, float *out, float *features) {
    for (int i = 0; i < batch; i++)
        if (y[i] < 0 || y[i] >= NCLS) return -1;
    const long n = batch, A1 = C1 * O1 * O1, A2 = C2 * O2 * O2, P1 = C1 * Q1 * Q1;
    float *z1 = calloc(n * A1, 4), *s1 = calloc(n * A1, 4), *p1 = calloc(n * P1, 4), *z2 = calloc(n * A2, 4);
    float *s2 = calloc(n * A2, 4), *y1 = calloc(n * A1, 4), *y2 = calloc(n * A2, 4), *g = calloc(A1 + A2 + P1, 4);
    float stats[2 * (C1 + C2)], *mean1 = stats, *var1 = stats + C1, *mean2 = var1 + C1, *var2 = mean2 + C2;
    double *sums = calloc(FRONT_GRADS + CLASSIFIER_GRADS, sizeof(double)); /* the gradients, as grads lays them out */
    double *gw1 = sums, *gb1 = gw1 + C1 * K1 * K1, *gw2 = gb1 + C1, *gb2 = gw2 + C2 * C1 * K2 * K2;
    double *gfc = sums + FRONT_GRADS;
    float *gbn = grads + FRONT_GRADS - BN * 2 * (C1 + C2); /* dgamma1 dbeta1 dgamma2 dbeta2, straight in */
    /* forward: conv1 (batch norm) act pool, conv2 (batch norm) act pool, for every sample */
    for (long i = 0; i < n; i++) conv2d_forward(z1 + i * A1, x + i * S * S, prm->w1, prm->b1, 1, C1, S, K1, PAD1);
    if (BN) batchnorm_forward(y1, z1, batch, C1, O1 * O1, prm->gamma1, prm->beta1, prm->mean1, prm->var1, prm->eps,
                              prm->momentum, mean1, var1);
    for (long i = 0; i < n * A1; i++) s1[i] = act1(BN ? y1[i] : z1[i], LENET_ACT1, LENET_SLOPE1);
    for (long i = 0; i < n; i++) {
        pool2d_forward(p1 + i * P1, s1 + i * A1, C1, O1, LENET_POOL1);
        conv2d_forward(z2 + i * A2, p1 + i * P1, prm->w2, prm->b2, C1, C2, Q1, K2, PAD2);
    }
    if (BN) batchnorm_forward(y2, z2, batch, C2, O2 * O2, prm->gamma2, prm->beta2, prm->mean2, prm->var2, prm->eps,
                              prm->momentum, mean2, var2);
    for (long i = 0; i < n * A2; i++) s2[i] = act1(BN ? y2[i] : z2[i], LENET_ACT2, LENET_SLOPE2);
    out[0] = out[1] = 0.0f;
    for (long i = 0; i < n; i++) {
        /* the classifier and the loss, forward and back, one sample */
        float *f = features + i * NF, h1[H1], h2[H2], zc[NCLS], gate[NCLS], gh1[H1], gh2[H2], gf[NF];
        pool2d_forward(f, s2 + i * A2, C2, O2, LENET_POOL2);
        linear_forward(h1, f, cls->w1, cls->b1, NF, H1);
        for (int o = 0; o < H1; o++) h1[o] = act1(h1[o], LENET_ACTF, LENET_SLOPEF);
        linear_forward(h2, h1, cls->w2, cls->b2, H1, H2);
        for (int o = 0; o < H2; o++) h2[o] = act1(h2[o], LENET_ACTF, LENET_SLOPEF);
        linear_forward(zc, h2, cls->w3, cls->b3, H2, NCLS);
        for (int o = 0; o < NCLS; o++) gate[o] = 1.0f;
#if LENET_CLIPLOG
        for (int o = 0; o < NCLS; o++) {
            vf v = vsplat(zc[o]), gv;
            cliplog_forward(&v, &gv, 1, LENET_CLIP_EPS);
            zc[o] = v[0], gate[o] = gv[0];
        }
#endif
        out[0] += cross_entropy(zc, 1, NCLS, (int)y[i], smoothing, scale, &out[1]);
        for (int o = 0; o < NCLS; o++) zc[o] *= gate[o];
        double *gfw1 = gfc, *gfb1 = gfw1 + H1 * NF, *gfw2 = gfb1 + H1, *gfb2 = gfw2 + H2 * H1;
        double *gfw3 = gfb2 + H2, *gfb3 = gfw3 + NCLS * H2;
        linear_backward(gh2, gfw3, gfb3, zc, h2, cls->w3, H2, NCLS);
        for (int o = 0; o < H2; o++) gh2[o] = dact1(gh2[o], h2[o], LENET_ACTF, LENET_SLOPEF);
        linear_backward(gh1, gfw2, gfb2, gh2, h1, cls->w2, H1, H2);
        for (int o = 0; o < H1; o++) gh1[o] = dact1(gh1[o], h1[o], LENET_ACTF, LENET_SLOPEF);
        linear_backward(gf, gfw1, gfb1, gh1, f, cls->w1, NF, H1);
        /* pool2 and act2 back: d loss / d conv2's output (or its normalisation's), kept in y2 */
        pool2d_act_backward(y2 + i * A2, gf, s2 + i * A2, C2, O2, LENET_POOL2, LENET_ACT2, LENET_SLOPE2);
    }
    if (BN) batchnorm_backward(y2, y2, z2, batch, C2, O2 * O2, prm->gamma2, mean2, var2, prm->eps, gbn + 2 * C1,
                               gbn + 2 * C1 + C2);
    for (long i = 0; i < n; i++) {
        float *gp1 = g, *gs1 = g + P1;
        conv2d_backward(gp1, gw2, gb2, y2 + i * A2, p1 + i * P1, prm->w2, C1, C2, Q1, K2, PAD2);
        pool2d_act_backward(gs1, gp1, s1 + i * A1, C1, O1, LENET_POOL1, LENET_ACT1, LENET_SLOPE1);
        memcpy(y1 + i * A1, gs1, sizeof(float) * A1);
    }
    if (BN) batchnorm_backward(y1, y1, z1, batch, C1, O1 * O1, prm->gamma1, mean1, var1, prm->eps, gbn, gbn + C1);
    for (long i = 0; i < n; i++)
        conv2d_backward(NULL, gw1, gb1, y1 + i * A1, x + i * S * S, prm->w1, 1, C1, S, K1, PAD1);
    for (int j = 0; j < FRONT_GRADS + CLASSIFIER_GRADS; j++)
        if (j < FRONT_GRADS - BN * 2 * (C1 + C2) || j >= FRONT_GRADS) grads[j] = (float)sums[j];
    free(z1), free(s1), free(p1), free(z2), free(s2), free(y1), free(y2), free(g), free(sums);
    return 0;
}
#endif
