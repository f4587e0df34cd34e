/* The lane step: a whole training step, V samples per vector, for a classic LeNet without batch norm
 * (LENET_FC = 1, BN = 0): the fast path of training.
 *
 * A group of V samples is laid out with the sample as the fastest axis ("lanes"): every pixel of every
 * feature map is one vector holding that pixel of the V samples. A convolution is then a sum of vector x
 * broadcast-weight products with no shuffles, blocked so that its accumulators stay in the registers (ACC of
 * the 32 that AVX-512 and NEON have, of AVX2's 16; with AVX-512 the FMA units stay ~95 % busy), and
 * activations, pooling and their gradients are lane-wise. The blocking is in register counts, so the same
 * code serves every width. A thread takes a group through the whole step, front end, classifier, loss and
 * back, while its activations (~0.6 MB with AVX-512) sit in its core's L2 cache; what the classifier's weight
 * gradients need is kept per group, and they are summed over the whole batch at the end, in blocks shared
 * among the threads. Every sum over samples runs in a fixed order (the front end's per group, then over the
 * groups in order), so no result depends on the thread count.
 */
#include "common.h"

/* Built for a classic classifier; taken without batch norm, for pooled maps up to 16 wide (a row of them
 * in registers). */
int lenet_lanes_supported(void) { return LENET_FC && !BN && Q1 <= 16 && O2 <= 16; }

#if LENET_FC
enum { ACC = LENET_ACC }; /* accumulators a kernel keeps in registers */
#define LENET_MAX3(a, b, c) ((a) > (b) ? ((a) > (c) ? (a) : (c)) : ((b) > (c) ? (b) : (c)))
/* the largest divisor of n up to min(m, 8) */
#define LENET_DIV_LE8(n, m) LENET_DIV_LE(n, (m) < 8 ? (m) : 8)
enum {
    CF1 = LENET_DIV_LE8(C1, 8),        /* conv1: channels x columns per block */
    XF1 = LENET_DIV_LE8(O1, ACC / CF1),
    XF2 = LENET_DIV_LE8(O2, 6),        /* conv2: columns x channels per block */
    CF2 = LENET_DIV_LE8(C2, ACC / XF2),
    CW1 = LENET_DIV_LE8(C1, ACC / K1), /* weight gradients: channels x kernel columns per block */
    CW2 = LENET_DIV_LE8(C2, ACC / K2),
    OR = 6,                           /* the classifier's weight gradients: rows x vectors per block */
    OC = ACC / OR,
    KMAX = LENET_MAX3((int)ACC, (int)K1, (int)K2), /* room for a block of weight-gradient sums */
};

/* ---------------------------------------------------------------------------------------------------- */
/* Across lanes: sums and transposes of blocks of V vectors */

#if defined(__clang__) || __GNUC__ >= 12
#define LENET_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#if LENET_V == 16
/* o0, o1 = a and b's first halves, a and b's second halves; then quarters, pairs, single lanes */
#define LENET_HALVES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23), \
                              o1 = LENET_SHUF(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
#define LENET_QUARTERS(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27), \
                                o1 = LENET_SHUF(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
#define LENET_PAIRS(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29), \
                             o1 = LENET_SHUF(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
#define LENET_SINGLES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30), \
                               o1 = LENET_SHUF(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
#define LENET_BITREVERSED(r) LENET_SHUF(r, r, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
#elif LENET_V == 8
#define LENET_HALVES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 2, 3, 8, 9, 10, 11), \
                                    o1 = LENET_SHUF(a, b, 4, 5, 6, 7, 12, 13, 14, 15))
#define LENET_PAIRS(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 8, 9, 4, 5, 12, 13), \
                                   o1 = LENET_SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15))
#define LENET_SINGLES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 8, 2, 10, 4, 12, 6, 14), \
                                     o1 = LENET_SHUF(a, b, 1, 9, 3, 11, 5, 13, 7, 15))
#define LENET_BITREVERSED(r) LENET_SHUF(r, r, 0, 4, 2, 6, 1, 5, 3, 7)
#else
#define LENET_HALVES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 1, 4, 5), o1 = LENET_SHUF(a, b, 2, 3, 6, 7))
#define LENET_SINGLES(o0, o1, a, b) (o0 = LENET_SHUF(a, b, 0, 4, 2, 6), o1 = LENET_SHUF(a, b, 1, 5, 3, 7))
#define LENET_BITREVERSED(r) LENET_SHUF(r, r, 0, 2, 1, 3)
#endif

/* out[i] = the sum of v[i]'s lanes, i < V: rounds of pairwise shuffles and adds (halves, then quarters, ...,
 * single lanes); the sums come out in bit-reversed order, which a last shuffle puts right. */
static inline void hsum_block(const vf *v, float *out) {
    vf a, b, w[V];
    for (int j = 0; j < V / 2; j++) LENET_HALVES(a, b, v[2 * j], v[2 * j + 1]), w[j] = a + b;
#if LENET_V == 16
    for (int j = 0; j < 4; j++) LENET_QUARTERS(a, b, w[2 * j], w[2 * j + 1]), w[j] = a + b;
#endif
#if LENET_V >= 8
    for (int j = 0; j < 2; j++) LENET_PAIRS(a, b, w[2 * j], w[2 * j + 1]), w[j] = a + b;
#endif
    LENET_SINGLES(a, b, w[0], w[1]);
    const vf r = a + b;
    *(vf *)out = LENET_BITREVERSED(r);
}

/* out[j][i] = in[i][j]: the off-diagonal blocks of V / 2, V / 4, ..., 1 swapped in turn. */
static inline void transpose_block(const vf *in, vf *out) {
    vf t[V], u[V];
    for (int i = 0; i < V / 2; i++) LENET_HALVES(t[i], t[i + V / 2], in[i], in[i + V / 2]);
#if LENET_V == 16
    for (int i = 0; i < V; i++)
        if (!(i & 4)) LENET_QUARTERS(u[i], u[i + 4], t[i], t[i + 4]);
    for (int i = 0; i < V; i++)
        if (!(i & 2)) LENET_PAIRS(t[i], t[i + 2], u[i], u[i + 2]);
#elif LENET_V == 8
    for (int i = 0; i < V; i++)
        if (!(i & 2)) LENET_PAIRS(u[i], u[i + 2], t[i], t[i + 2]);
    for (int i = 0; i < V; i++) t[i] = u[i];
#endif
    (void)u;
    for (int i = 0; i < V; i += 2) LENET_SINGLES(out[i], out[i + 1], t[i], t[i + 1]);
}
#else
static inline void hsum_block(const vf *v, float *out) {
    for (int i = 0; i < V; i++) out[i] = vhsum(v[i]);
}

static inline void transpose_block(const vf *in, vf *out) {
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++) out[j][i] = in[i][j];
}
#endif

/* out[i] = the sum of v[i]'s lanes, i < n. */
static void lane_sums(const vf *v, int n, float *out) {
    int i = 0;
    for (; i + V <= n; i += V) hsum_block(v + i, out + i);
    if (i < n) { /* the last few, in a block padded with zeros */
        vf block[V] = {{0}};
        float sums[V];
        memcpy(block, v + i, sizeof(vf) * (n - i));
        hsum_block(block, sums);
        memcpy(out + i, sums, sizeof(float) * (n - i));
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* The layers, on a group's lanes. Per group, in vectors: xg (XS, XS) the padded input; s1 (C1, O1, O1)
 * conv1's output after its activation, then its gradient gz1 in place; p1 (C1, P1S, P1S) pool1's, inside a
 * zero border; s2 (C2, O2, O2) conv2's after its activation, then gz2; f (NF) the features in PyTorch's
 * flatten order (channel, row, column); h1, h2 the classifier's hidden layers. The kernels stay separate
 * functions: inlined into one, they compete for the registers. */

/* The group's images (n of them; the other lanes zero) into xg's interior. */
LENET_NOINLINE void input_forward(const float *x, int n, vf *xg) {
    enum { P = S * S / V * V }; /* pixels transposed V at a time: all of them when S * S is a multiple of V */
    for (int p0 = 0; p0 < P; p0 += V) {
        vf rows[V], cols[V];
        for (int l = 0; l < V; l++) rows[l] = l < n ? *(const vf *)(x + (long)l * S * S + p0) : (vf){0};
        transpose_block(rows, cols);
        for (int j = 0; j < V; j++) xg[((p0 + j) / S + PAD1) * XS + (p0 + j) % S + PAD1] = cols[j];
    }
    for (int p = P; p < S * S; p++) {
        vf px = {0};
        for (int l = 0; l < n; l++) px[l] = x[(long)l * S * S + p];
        xg[(p / S + PAD1) * XS + p % S + PAD1] = px;
    }
}

/* A convolution + bias (b may be NULL) + activation: in (c_in, side, side) -> out (c_out, side - k + 1, ...).
 * Blocks of cb channels x xb columns (cb * xb <= ACC accumulators); per kernel tap, xb input vectors and cb
 * broadcast weights. (The inputs are read where they are used: copied into registers first, they crowd AVX2's
 * 16 and GCC spills accumulators.) */
LENET_INLINE void conv_forward(const vf *in, int c_in, int side, const float *w, const float *b, int c_out, int k,
                               vf *out, int act, float slope, const int cb, const int xb) {
    const int o = side - k + 1;
    for (int c0 = 0; c0 < c_out; c0 += cb)
        for (int y = 0; y < o; y++)
            for (int x0 = 0; x0 < o; x0 += xb) {
                vf acc[ACC];
                for (int c = 0; c < cb; c++)
                    for (int j = 0; j < xb; j++) acc[c * xb + j] = vsplat(b ? b[c0 + c] : 0.0f);
                for (int ci = 0; ci < c_in; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const vf *row = in + (ci * side + y + ky) * side + x0 + kx;
                            for (int c = 0; c < cb; c++) {
                                const float wt = w[(((c0 + c) * c_in + ci) * k + ky) * k + kx];
                                for (int j = 0; j < xb; j++) acc[c * xb + j] += row[j] * wt;
                            }
                        }
                for (int c = 0; c < cb; c++)
                    for (int j = 0; j < xb; j++)
                        out[((c0 + c) * o + y) * o + x0 + j] = act_forward(acc[c * xb + j], act, slope);
            }
}

LENET_NOINLINE void conv1_forward(const vf *xg, const float *w1, const float *b1, vf *s1) {
    conv_forward(xg, 1, XS, w1, b1, C1, K1, s1, LENET_ACT1, LENET_SLOPE1, CF1, XF1);
}

LENET_NOINLINE void conv2_forward(const vf *p1, const float *w2, const float *b2, vf *s2) {
    conv_forward(p1, C1, P1S, w2, b2, C2, K2, s2, LENET_ACT2, LENET_SLOPE2, CF2, XF2);
}

/* 2x2 pooling: in (c, side, side) -> out (c, out_side, out_side) at an offset of pad rows and columns. */
LENET_INLINE void pool2x2_forward(const vf *in, int c, int side, vf *out, int out_side, int pad, int kind) {
    for (int ch = 0; ch < c; ch++)
        for (int r = 0; r < side / 2; r++) {
            const vf *top = in + (ch * side + 2 * r) * side, *bottom = top + side;
            vf *o = out + (ch * out_side + r + pad) * out_side + pad;
            for (int q = 0; q < side / 2; q++)
                o[q] = pool_forward(kind, top[2 * q], top[2 * q + 1], bottom[2 * q], bottom[2 * q + 1]);
        }
}

LENET_NOINLINE void pool1_forward(const vf *s1, vf *p1) { pool2x2_forward(s1, C1, O1, p1, P1S, PAD2, LENET_POOL1); }
LENET_NOINLINE void pool2_forward(const vf *s2, vf *f) { pool2x2_forward(s2, C2, O2, f, Q2, 0, LENET_POOL2); }

/* pool2 and act2 backward: gf -> gz2 in place of s2; gb2[c] = the gradient's sum over positions. */
LENET_NOINLINE void pool2_backward(const vf *gf, vf *s2, vf *gb2) {
    for (int c = 0; c < C2; c++) {
        vf sum = {0};
        for (int r = 0; r < Q2; r++) {
            vf *top = s2 + (c * O2 + 2 * r) * O2, *bottom = top + O2;
            for (int q = 0; q < Q2; q++) {
                vf g[4];
                pool_backward(LENET_POOL2, LENET_ACT2, LENET_SLOPE2, gf[(c * Q2 + r) * Q2 + q], top[2 * q],
                              top[2 * q + 1],
                              bottom[2 * q], bottom[2 * q + 1], g);
                top[2 * q] = g[0], top[2 * q + 1] = g[1], bottom[2 * q] = g[2], bottom[2 * q + 1] = g[3];
                sum += (g[0] + g[1]) + (g[2] + g[3]);
            }
        }
        gb2[c] = sum;
    }
}

/* A convolution's weight gradient: gw[co][ci][ky][kx] = sum over positions of gz[co][y][x] *
 * in[ci][y + ky][x + kx], in (c_in, side, side), gz (c_out, o, o). Blocks of cw output channels x k kernel
 * columns; the positions in tiles of yt rows, so that a tile's gz and inputs stay in L1 while every ky passes
 * over them (the sum still runs over the positions in order). */
LENET_INLINE void conv_backward_weight(const vf *in, int c_in, int side, const vf *gz, int c_out, int k, vf *gw,
                                       const int cw, const int yt) {
    const int o = side - k + 1;
    for (int c0 = 0; c0 < c_out; c0 += cw)
        for (int ci = 0; ci < c_in; ci++)
            for (int y0 = 0; y0 < o; y0 += yt)
                for (int ky = 0; ky < k; ky++) {
                    vf acc[KMAX];
                    for (int c = 0; c < cw; c++)
                        for (int kx = 0; kx < k; kx++)
                            acc[c * k + kx] = y0 ? gw[(((c0 + c) * c_in + ci) * k + ky) * k + kx] : (vf){0};
                    for (int y = y0; y < y0 + yt && y < o; y++)
                        for (int x = 0; x < o; x++) {
                            const vf *row = in + (ci * side + y + ky) * side + x;
                            vf iv[KMAX], gv[KMAX];
                            for (int kx = 0; kx < k; kx++) iv[kx] = row[kx];
                            for (int c = 0; c < cw; c++) gv[c] = gz[((c0 + c) * o + y) * o + x];
                            for (int c = 0; c < cw; c++)
                                for (int kx = 0; kx < k; kx++) acc[c * k + kx] += gv[c] * iv[kx];
                        }
                    for (int c = 0; c < cw; c++)
                        for (int kx = 0; kx < k; kx++) gw[(((c0 + c) * c_in + ci) * k + ky) * k + kx] = acc[c * k + kx];
                }
}

LENET_NOINLINE void conv1_backward_weight(const vf *xg, const vf *gz1, vf *gw1) {
    conv_backward_weight(xg, 1, XS, gz1, C1, K1, gw1, CW1, 4);
}

LENET_NOINLINE void conv2_backward_weight(const vf *p1, const vf *gz2, vf *gw2) {
    conv_backward_weight(p1, C1, P1S, gz2, C2, K2, gw2, CW2, O2);
}

/* conv2's input gradient inside pool1's border, then pool1 and act1 backward: gz1 in place of s1, and
 * gb1[c] = its sum. A row of the pooled gradient, gp1[ci][r][q] = sum over co, ky, kx of w2[co][ci][ky][kx] *
 * gz2[co][r + PAD2 - ky][q + PAD2 - kx] (terms outside conv2's output left out), is Q1 accumulators; per
 * (ky, co), one row of gz2 in registers. */
LENET_NOINLINE void conv2_backward_input(const vf *gz2, const float *w2, vf *s1, vf *gb1) {
    for (int ci = 0; ci < C1; ci++) {
        vf sum = {0};
        for (int r = 0; r < Q1; r++) {
            const int i = r + PAD2;
            const int ky0 = i - O2 + 1 > 0 ? i - O2 + 1 : 0, ky1 = i < K2 - 1 ? i : K2 - 1;
            vf acc[Q1];
            for (int q = 0; q < Q1; q++) acc[q] = (vf){0};
            for (int ky = ky0; ky <= ky1; ky++) /* (a trip count that varies by row: outside the co loop) */
                for (int co = 0; co < C2; co++) {
                    const vf *row = gz2 + (co * O2 + i - ky) * O2;
                    vf g[O2];
                    for (int x = 0; x < O2; x++) g[x] = row[x];
                    for (int kx = 0; kx < K2; kx++) {
                        const float w = w2[((co * C1 + ci) * K2 + ky) * K2 + kx];
                        for (int q = 0; q < Q1; q++) {
                            const int x = q + PAD2 - kx;
                            if (x >= 0 && x < O2) acc[q] += g[x] * w;
                        }
                    }
                }
            vf *top = s1 + (ci * O1 + 2 * r) * O1, *bottom = top + O1;
            for (int q = 0; q < Q1; q++) {
                vf gz[4];
                pool_backward(LENET_POOL1, LENET_ACT1, LENET_SLOPE1, acc[q], top[2 * q], top[2 * q + 1], bottom[2 * q],
                              bottom[2 * q + 1], gz);
                top[2 * q] = gz[0], top[2 * q + 1] = gz[1], bottom[2 * q] = gz[2], bottom[2 * q + 1] = gz[3];
                sum += (gz[0] + gz[1]) + (gz[2] + gz[3]);
            }
        }
        gb1[ci] = sum;
    }
}

/* c[i] = sum over t < steps of a[i * a_row + t * a_t] * b[t], for i < rows: a matrix (strides in floats)
 * times V samples' vectors, i.e. a Linear layer forward (a = W, a_row = in, a_t = 1) or its input gradient
 * (a = W, a_row = 1, a_t = in). Blocks of up to ACC rows (the last one overlapping the one before: its rows
 * are computed again, identically); always inlined, so that the strides are constants in the addresses. */
LENET_INLINE void dense(const int rows, const int steps, const float *a, const long a_row, const long a_t,
                        const vf *b, vf *c) {
    const int r = rows < ACC ? rows : ACC;
    for (int i0 = 0;; i0 += r) {
        if (i0 > rows - r) i0 = rows - r;
        vf acc[ACC];
#pragma GCC unroll 24
        for (int i = 0; i < r; i++) acc[i] = (vf){0};
        const float *ai = a + i0 * a_row;
        for (int t = 0; t < steps; t++) {
            const vf bv = b[t];
#pragma GCC unroll 24
            for (int i = 0; i < r; i++) acc[i] += bv * ai[i * a_row + t * a_t];
        }
#pragma GCC unroll 24
        for (int i = 0; i < r; i++) c[i0 + i] = acc[i];
        if (i0 + r >= rows) break;
    }
}

/* y = act(y + bias) for n vectors (bias may be NULL). */
LENET_INLINE void bias_act_forward(vf *y, const float *bias, int n, int act, float slope) {
    for (int o = 0; o < n; o++) y[o] = act_forward(y[o] + (bias ? bias[o] : 0.0f), act, slope);
}

/* c[i][j] = sum over samples s < n of a(s, i) * b(s, j), for i in [i0, i0 + nr) and j in [j0, j0 + nv vectors):
 * a block of a classifier weight's gradient (rows x cols) from the batch's output gradients (in lanes, a(s, i)
 * = a[s / V * gs + i * V + s % V]) and inputs (rows of samples, b(s, j) = b[s / V * gs + s % V * ldb + j]),
 * kept per group gs floats apart. The sum runs over the samples in order, whichever thread computes it. */
LENET_INLINE void outer_block(const int cols, int n, int i0, int j0, const int nr, const int nv, const float *a,
                              const float *b, const long ldb, const long gs, float *c) {
    vf acc[OR][OC];
    for (int i = 0; i < nr; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = (vf){0};
    for (int s0 = 0; s0 < n; s0 += V) {
        const float *ag = a + (long)s0 / V * gs + i0 * V, *bg = b + (long)s0 / V * gs + j0;
        const int ns = n - s0 < V ? n - s0 : V;
        for (int l = 0; l < ns; l++) {
            vf bv[OC];
            for (int v = 0; v < nv; v++) bv[v] = *(const vf *)(bg + l * ldb + v * V);
            for (int i = 0; i < nr; i++) {
                const float av = ag[i * V + l];
                for (int v = 0; v < nv; v++) acc[i][v] += bv[v] * av;
            }
        }
    }
    for (int i = 0; i < nr; i++)
        for (int v = 0; v < nv; v++) *(vf *)(c + (long)(i0 + i) * cols + j0 + v * V) = acc[i][v];
}

/* Block `task` of a Linear layer's weight gradient c (rows x cols), in blocks of OR rows by OC vectors. */
LENET_INLINE void linear_backward_weight(const int rows, const int cols, int n, int task, const float *a,
                                         const float *b, const long ldb, const long gs, float *c) {
    const int per_row = (cols / V + OC - 1) / OC, i0 = task / per_row * OR, j0 = task % per_row * OC * V;
    const int nr = rows - i0 < OR ? rows - i0 : OR, nv = (cols - j0) / V < OC ? (cols - j0) / V : OC;
    if (nr == OR && nv == OC) /* whole blocks, with the loops' bounds constants */
        outer_block(cols, n, i0, j0, OR, OC, a, b, ldb, gs, c);
    else
        outer_block(cols, n, i0, j0, nr, nv, a, b, ldb, gs, c);
}

/* A Linear layer's bias gradient: out[i] = sum over samples s < n of a(s, i) (as above), i < rows. */
static void linear_backward_bias(int rows, int n, const float *a, long gs, float *out) {
    for (int i = 0; i < rows; i++) {
        vf sum = {0};
        for (int g = 0; g * V < n; g++) sum += *(const vf *)(a + g * gs + i * V);
        lane_sums(&sum, 1, out + i);
    }
}

/* out[l * ld + r] = in[r][l], l < n: n lanes of `rows` vectors to n rows of floats. */
static void lanes_to_rows(const vf *in, int rows, int n, float *out, long ld) {
    for (int r = 0; r < rows; r++)
        for (int l = 0; l < n; l++) out[l * ld + r] = in[r][l];
}

/* ---------------------------------------------------------------------------------------------------- */
/* The step */

/* The front end's gradients while summed: per group, in PyTorch's layouts; then the group's loss and
 * correct count. */
enum {
    L_W1 = 0,
    L_B1 = L_W1 + C1 * K1 * K1,
    L_W2 = L_B1 + C1,
    L_B2 = L_W2 + C2 * C1 * K2 * K2,
    L_LOSS = L_B2 + C2,
    L_SIZE = LENET_ROUNDV(L_LOSS + 2),
};

/* What the classifier's weight gradients need of each group, kept for all groups: the inputs of its three
 * layers as rows of samples (f, h1, h2: NFP, F1P, F2P floats per sample), the gradients of their outputs in
 * lanes (g1, g2, dz: H1, H2, NCLS vectors per group). Then the classifier's gradients, padded rows. */
enum {
    B_FT = 0,
    B_H1T = B_FT + V * NFP,
    B_H2T = B_H1T + V * F1P,
    B_G1 = B_H2T + V * F2P,
    B_G2 = B_G1 + V * H1,
    B_DZ = B_G2 + V * H2,
    B_SIZE = LENET_ROUNDV(B_DZ + V * NCLS), /* floats per group */
    M_W1 = 0,                               /* the classifier's gradients: W1 (H1, NFP), b1, W2 (H2, F1P), ... */
    M_B1 = M_W1 + H1 * NFP,
    M_W2 = LENET_ROUNDV(M_B1 + H1),
    M_B2 = M_W2 + H2 * F1P,
    M_W3 = LENET_ROUNDV(M_B2 + H2),
    M_B3 = M_W3 + NCLS * F2P,
    M_SIZE = LENET_ROUNDV(M_B3 + NCLS),
};

/* Per thread, in vectors: the group's activations and gradients, and its front-end gradients in lanes. */
enum {
    LT_XG = 0,
    LT_S1 = LT_XG + XS * XS,
    LT_P1 = LT_S1 + C1 * O1 * O1,
    LT_S2 = LT_P1 + C1 * P1S * P1S,
    LT_F = LT_S2 + C2 * O2 * O2,
    LT_GF = LT_F + NF,
    LT_H1 = LT_GF + NF,
    LT_H2 = LT_H1 + H1,
    LT_GATE = LT_H2 + H2, /* Keras' head's gates */
    LT_SUMS = LT_GATE + NCLS, /* the group's front-end gradients in lanes, in L_* order */
    LT_SIZE = LT_SUMS + L_LOSS,
};

long lenet_lanes_workspace_floats(int batch, int threads) {
    const long groups = (batch + V - 1) / V;
    return V + groups * (L_SIZE + B_SIZE) + M_SIZE + (long)threads * LT_SIZE * V;
}

typedef struct {
    int batch, groups;
    const LenetParams *prm;
    const LenetClassifier *cls;
    const float *x;
    const int64_t *y;
    float smoothing, scale;
    float *parts, *kept, *q, *f, *z;
    vf *threads;
    unsigned long fp_mode[256];
} Lanes;

/* One group of n samples forward: from x to the last Linear's outputs z (NCLS vectors). */
static void group_forward(const Lanes *ln, const float *x, int n, vf *w, vf *z) {
    const LenetParams *prm = ln->prm;
    const LenetClassifier *cls = ln->cls;
    vf *xg = w + LT_XG, *s1 = w + LT_S1, *p1 = w + LT_P1, *s2 = w + LT_S2, *f = w + LT_F;
    vf *h1 = w + LT_H1, *h2 = w + LT_H2;
    input_forward(x, n, xg);
    conv1_forward(xg, prm->w1, prm->b1, s1);
    pool1_forward(s1, p1);
    conv2_forward(p1, prm->w2, prm->b2, s2);
    pool2_forward(s2, f);
    dense(H1, NF, cls->w1, NF, 1, f, h1);
    bias_act_forward(h1, cls->b1, H1, LENET_ACTF, LENET_SLOPEF);
    dense(H2, H1, cls->w2, H1, 1, h1, h2);
    bias_act_forward(h2, cls->b2, H2, LENET_ACTF, LENET_SLOPEF);
    dense(NCLS, H2, cls->w3, H2, 1, h2, z);
    bias_act_forward(z, cls->b3, NCLS, ACT_NONE, 0.0f);
}

/* The loss of each of the group's n samples and d loss / d z, scaled, in place of z (zero for the lanes
 * beyond n); the summed loss and correct count added onto out[0], out[1]. */
static void group_loss(const Lanes *ln, vf *z, const int64_t *y, int n, vf *gate, float *out) {
#if LENET_CLIPLOG
    cliplog_forward(z, gate, NCLS, LENET_CLIP_EPS);
#endif
    (void)gate;
    for (int l = 0; l < V; l++) {
        if (l >= n) {
            for (int o = 0; o < NCLS; o++) z[o][l] = 0.0f;
            continue;
        }
        out[0] += cross_entropy((float *)z + l, V, NCLS, (int)y[l], ln->smoothing, ln->scale, &out[1]);
    }
#if LENET_CLIPLOG
    for (int o = 0; o < NCLS; o++) z[o] *= gate[o];
#endif
}

/* One group back from d loss / d z (in keep's dz) through the classifier but its weights, and the front end:
 * what the classifier's weight gradients need into keep, the front end's gradients into part. */
static void group_backward(const Lanes *ln, float *part, float *keep, vf *w) {
    const LenetParams *prm = ln->prm;
    const LenetClassifier *cls = ln->cls;
    vf *xg = w + LT_XG, *s1 = w + LT_S1, *p1 = w + LT_P1, *s2 = w + LT_S2, *f = w + LT_F;
    vf *gf = w + LT_GF, *h1 = w + LT_H1, *h2 = w + LT_H2, *sums = w + LT_SUMS;
    vf *g1 = (vf *)(keep + B_G1), *g2 = (vf *)(keep + B_G2), *dz = (vf *)(keep + B_DZ);
    dense(H2, NCLS, cls->w3, 1, H2, dz, g2);
    for (int o = 0; o < H2; o++) g2[o] = act_backward(g2[o], h2[o], LENET_ACTF, LENET_SLOPEF);
    dense(H1, H2, cls->w2, 1, H1, g2, g1);
    for (int o = 0; o < H1; o++) g1[o] = act_backward(g1[o], h1[o], LENET_ACTF, LENET_SLOPEF);
    dense(NF, H1, cls->w1, 1, NF, g1, gf);
    lanes_to_rows(f, NF, V, keep + B_FT, NFP);
    lanes_to_rows(h1, H1, V, keep + B_H1T, F1P);
    lanes_to_rows(h2, H2, V, keep + B_H2T, F2P);
    pool2_backward(gf, s2, sums + L_B2);
    conv2_backward_weight(p1, s2, sums + L_W2);
    conv2_backward_input(s2, prm->w2, s1, sums + L_B1);
    conv1_backward_weight(xg, s1, sums + L_W1);
    lane_sums(sums, L_LOSS, part);
}

/* Every thread: denormals flushed (lenet_fp_flush says why; the lane step has always run so) and the
 * borders of its padded input and pool1 output zeroed, before its first group; the mode back after. */
static int thread_edges(void *ctx, int task, int thread) {
    Lanes *ln = ctx;
    if (task == LENET_THREAD_START) {
        ln->fp_mode[thread] = lenet_fp_flush();
        vf *w = ln->threads + (long)thread * LT_SIZE;
        memset(w + LT_XG, 0, sizeof(vf) * XS * XS);
        memset(w + LT_P1, 0, sizeof(vf) * C1 * P1S * P1S);
    } else if (task == LENET_THREAD_END) {
        lenet_fp_restore(ln->fp_mode[thread]);
    }
    return task < 0;
}

static void group_step_task(void *ctx, int g, int thread) {
    const Lanes *ln = ctx;
    if (thread_edges(ctx, g, thread)) return;
    vf *w = ln->threads + (long)thread * LT_SIZE;
    float *part = ln->parts + (long)g * L_SIZE, *keep = ln->kept + (long)g * B_SIZE;
    const int n = LENET_MIN(ln->batch - g * V, V);
    memset(part, 0, sizeof(float) * L_SIZE);
    group_forward(ln, ln->x + (long)g * V * S * S, n, w, (vf *)(keep + B_DZ));
    group_loss(ln, (vf *)(keep + B_DZ), ln->y + (long)g * V, n, w + LT_GATE, part + L_LOSS);
    group_backward(ln, part, keep, w);
}

enum {
    T1 = (H1 + OR - 1) / OR * ((NFP / V + OC - 1) / OC),
    T2 = (H2 + OR - 1) / OR * ((F1P / V + OC - 1) / OC),
    T3 = (NCLS + OR - 1) / OR * ((F2P / V + OC - 1) / OC),
};

/* The classifier's weight gradients over the whole batch, in blocks of rows and columns; the last task: its
 * biases', and the groups' sums in group order (in group 0's place). */
static void batch_task(void *ctx, int task, int thread) {
    const Lanes *ln = ctx;
    if (thread_edges(ctx, task, thread)) return;
    const float *kept = ln->kept;
    float *q = ln->q;
    const int batch = ln->batch;
    if (task < T1)
        linear_backward_weight(H1, NFP, batch, task, kept + B_G1, kept + B_FT, NFP, B_SIZE, q + M_W1);
    else if (task < T1 + T2)
        linear_backward_weight(H2, F1P, batch, task - T1, kept + B_G2, kept + B_H1T, F1P, B_SIZE, q + M_W2);
    else if (task < T1 + T2 + T3)
        linear_backward_weight(NCLS, F2P, batch, task - T1 - T2, kept + B_DZ, kept + B_H2T, F2P, B_SIZE, q + M_W3);
    else {
        linear_backward_bias(H1, batch, kept + B_G1, B_SIZE, q + M_B1);
        linear_backward_bias(H2, batch, kept + B_G2, B_SIZE, q + M_B2);
        linear_backward_bias(NCLS, batch, kept + B_DZ, B_SIZE, q + M_B3);
        reduce_parts(ln->parts, L_SIZE, ln->groups, L_SIZE, ln->parts);
    }
}

static Lanes lanes_state(int batch, const LenetParams *prm, const LenetClassifier *cls, const float *x, float *ws) {
    const int groups = (batch + V - 1) / V;
    float *parts = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *kept = parts + (long)groups * L_SIZE, *q = kept + (long)groups * B_SIZE;
    return (Lanes){.batch = batch, .groups = groups, .prm = prm, .cls = cls, .x = x, .parts = parts,
                   .kept = kept, .q = q, .threads = (vf *)(q + M_SIZE)};
}

/* A whole training step: from x (B, S, S) and labels y, every parameter's gradient of scale * the summed
 * cross-entropy (with label smoothing), into grads in PyTorch's layouts (the front end's, as
 * lenet_frontend_backward writes them, then the classifier's, as lenet_classifier_step does); the summed loss
 * and correct count into out[0], out[1]. ws: lenet_lanes_workspace_floats(batch, threads) floats. Returns -1
 * if a label is out of range, else 0. */
int lenet_lanes_step(int batch, int threads, const LenetParams *prm, const LenetClassifier *cls, const float *x,
                     const int64_t *y, float smoothing, float scale, float *grads, float *out, float *ws) {
    for (int i = 0; i < batch; i++)
        if (y[i] < 0 || y[i] >= NCLS) return -1;
    Lanes ln = lanes_state(batch, prm, cls, x, ws);
    ln.y = y, ln.smoothing = smoothing, ln.scale = scale;
    threads = LENET_MIN(threads, 256);
    lenet_parallel(threads, ln.groups, group_step_task, &ln);
    lenet_parallel(threads, T1 + T2 + T3 + 1, batch_task, &ln);
    memcpy(grads, ln.parts, sizeof(float) * L_LOSS);
    const float *q = ln.q;
    classifier_grads_out(grads + L_LOSS, q + M_W1, q + M_B1, q + M_W2, q + M_B2, q + M_W3, q + M_B3);
    out[0] = ln.parts[L_LOSS];
    out[1] = ln.parts[L_LOSS + 1];
    return 0;
}

static void group_forward_task(void *ctx, int g, int thread) {
    const Lanes *ln = ctx;
    if (thread_edges(ctx, g, thread)) return;
    vf *w = ln->threads + (long)thread * LT_SIZE, z[NCLS];
    const int n = LENET_MIN(ln->batch - g * V, V);
    group_forward(ln, ln->x + (long)g * V * S * S, n, w, z);
    lanes_to_rows(w + LT_F, NF, n, ln->f + (long)g * V * NF, NF);
    lanes_to_rows(z, NCLS, n, ln->z + (long)g * V * NCLS, NCLS);
}

/* The lane step's forward alone, for checking it: the features f (B, NF) and the last Linear's outputs z
 * (B, NCLS), before any output head. */
void lenet_lanes_forward(int batch, int threads, const LenetParams *prm, const LenetClassifier *cls, const float *x,
                         float *f, float *z, float *ws) {
    Lanes ln = lanes_state(batch, prm, cls, x, ws);
    ln.f = f, ln.z = z;
    lenet_parallel(LENET_MIN(threads, 256), ln.groups, group_forward_task, &ln);
}
#endif /* LENET_FC */
