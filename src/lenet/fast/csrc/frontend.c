/* The per-sample front end: conv -> (batch norm) -> activation -> 2x2 pool, twice, forward and backward,
 * one sample at a time, for inference, autograd (PyTorch's classifier after it) and batch norm training.
 *
 * One call per batch and direction; threads take chunks of samples as they come free, and each
 * sample's activations (about 30 KB for LeNet-5) are worked on while they sit in the core's L1/L2 cache.
 * Both convolutions are direct, in V-float vectors: conv1 along the even and the odd columns of an image row,
 * conv2 along its output channels; pooling and activations are lane-wise. Sums over the batch are taken per
 * chunk and added in chunk order (reduce_parts), so no result depends on the thread count.
 *
 * Layouts, per sample:
 *   x    (S, S)                  the input image
 *   s1   (C1, O1, 2, QP)         conv1's output after the activation, each row split into its even and its
 *                                odd columns (QP lanes each, Q1 used), so that 2x2 pooling is lane-wise
 *   p1   (P1S, C1, P1S)          pool1's output (rows, channels, columns), inside a zero border of PAD2;
 *                                its gradient gp1 is (P1S, P1S, C1), channels last
 *   s2   (O2 * O2, C2P)          conv2's output after the activation, channels last
 *   f    (NF)                    pool2's output in PyTorch's flatten order (channel, row, column)
 *
 * With batch norm (BN) each convolution is followed by batch normalisation before the activation. Training
 * needs the batch's statistics before anything after a convolution can go on, so forward and backward then
 * run in three phases each, with s1 and s2 holding the convolutions' raw outputs and the activations
 * recomputed from them when needed.
 */
#include "common.h"

enum {
    QP = LENET_ROUNDV(Q1),           /* lanes of one parity of a conv1 row, whole vectors */
    QV = QP / V,
    RS1 = 2 * QP,                    /* conv1 row stride: the even columns, then the odd ones */
    HL = LENET_ROUNDV(QP + K1 / 2 + 1), /* one parity of a padded input row: shifted loads stay inside */
    XR = 2 * HL,
    C2V = C2P / V,
    KC = K2 * K2 * C1,               /* conv2's patch length */
    KCP = LENET_ROUNDV(KC),
    KCV = KCP / V,
    S1_SIZE = C1 * O1 * RS1,
    P1_SIZE = P1S * P1S * C1,
    S2_SIZE = O2 * O2 * C2P,
};

/* Per thread, in floats: one sample's scratch activations and gradients. */
enum {
    WS_S1 = 0,
    WS_P1 = WS_S1 + LENET_ROUNDV(S1_SIZE),
    WS_S2 = WS_P1 + LENET_ROUNDV(P1_SIZE),
    WS_GZ2 = WS_S2 + LENET_ROUNDV(S2_SIZE),
    WS_GP1 = WS_GZ2 + LENET_ROUNDV(S2_SIZE),
    WS_GZ1 = WS_GP1 + LENET_ROUNDV(P1_SIZE),
    WS_T1 = WS_GZ1 + LENET_ROUNDV(S1_SIZE),
    WS_GCOL = WS_T1 + LENET_ROUNDV(S1_SIZE),
    WS_ACC1 = WS_GCOL + 4 * KCP,
    WS_THREAD = WS_ACC1 + C1 * K1 * K1 * V,
};

/* Samples per chunk: 8, or fewer in small batches so that two or more threads share them evenly (the tf1 CNN
 * trains with batches of 20). A function of the batch alone: the sums' order must not depend on the threads. */
static int chunk_size(int batch) { return batch >= 64 ? 8 : batch >= 16 ? batch / 8 : 1; }
static int chunk_count(int batch) { return (batch + chunk_size(batch) - 1) / chunk_size(batch); }

/* The gradients while they are summed, per chunk: gw1 (C1, K1, K1), gb1 (C1), gw2t (K2, K2, C1, C2P), gb2
 * (C2P), then with BN the normalisations' dgamma1, dbeta1 (C1), dgamma2, dbeta2 (C2P). Batch statistics are
 * summed per chunk too, in double precision: D_SIZE doubles (sums and sums of squares, layer 1 then 2). */
enum {
    G_W1 = 0,
    G_B1 = G_W1 + C1 * K1 * K1,
    G_W2 = G_B1 + C1,
    G_B2 = G_W2 + K2 * K2 * C1 * C2P,
    G_CONV = G_B2 + C2P,
    G_SIZE = G_CONV + BN * 2 * (C1 + C2P),
    D_SIZE = 2 * (C1 + C2P),
};

/* What the kernels use of the parameters, repacked once per call at the head of the workspace: w2t
 * (K2, K2, C1, C2P) and w2r (C2, KCP), conv2's weight with its output channels, or a patch's (ky, kx, ci)
 * entries, contiguous; b2 padded to C2P; and per normalisation gamma, beta, mean and variance (the running
 * statistics for inference, the batch's in training). Then the summed gradients, then each thread's floats. */
enum {
    P_W2T = 0,
    P_W2R = P_W2T + K2 * K2 * C1 * C2P,
    P_B2 = P_W2R + C2 * KCP,
    P_G1 = P_B2 + C2P,
    P_B1 = P_G1 + C1,
    P_M1 = P_B1 + C1,
    P_V1 = P_M1 + C1,
    P_G2 = P_V1 + C1,
    P_BE2 = P_G2 + C2P,
    P_M2 = P_BE2 + C2P,
    P_V2 = P_M2 + C2P,
    P_SIZE = LENET_ROUNDV(P_V2 + C2P),
    WS_TOTAL = P_SIZE,
    WS_THREADS = WS_TOTAL + LENET_ROUNDV(G_SIZE),
};

long lenet_frontend_workspace_floats(int threads) { return WS_THREADS + (long)threads * WS_THREAD; }
long lenet_frontend_chunk_floats(int batch) { return (long)chunk_count(batch) * G_SIZE; }
long lenet_frontend_chunk_doubles(int batch) { return (long)chunk_count(batch) * D_SIZE; }
int lenet_s1_floats(void) { return S1_SIZE; }
int lenet_p1_floats(void) { return P1_SIZE; }
int lenet_s2_floats(void) { return S2_SIZE; }

/* ---------------------------------------------------------------------------------------------------- */
/* Forward, one sample */

/* The input image zero-padded by PAD1, each row split into its even and its odd columns (HL floats each,
 * zero beyond the image): xp[row * XR + (col % 2) * HL + col / 2] = padded image[row][col]. */
static void pad_input(const float *x, float *xp) {
    float row[2 * HL] __attribute__((aligned(64)));
    memset(xp, 0, sizeof(float) * PAD1 * XR);                   /* the rows above the image */
    memset(xp + (S + PAD1) * XR, 0, sizeof(float) * PAD1 * XR); /* and below it */
    memset(row, 0, sizeof row);
    for (int i = 0; i < S; i++) {
        memcpy(row + PAD1, x + i * S, sizeof(float) * S);
        float *even = xp + (i + PAD1) * XR, *odd = even + HL;
        for (int q = 0; q < HL; q++) {
            even[q] = row[2 * q];
            odd[q] = row[2 * q + 1];
        }
    }
}

/* Where the inputs of output column 2q + parity, kernel column kx, start: padded column 2q + parity + kx. */
static inline int tap(int parity, int kx) { return ((parity + kx) % 2) * HL + (parity + kx) / 2; }

/* conv1 + bias -> z (C1, O1, 2, QP). Per output row, the even and the odd columns are QV vectors each per
 * channel; all channels' accumulators stay in registers, every input vector is loaded once for all. */
static void conv1_forward(const float *x, const float *w1, const float *b1, float *z) {
    float xp[XS * XR] __attribute__((aligned(64)));
    pad_input(x, xp);
    for (int y = 0; y < O1; y++) {
        vf acc[C1][2][QV];
        for (int c = 0; c < C1; c++)
            for (int p = 0; p < 2; p++)
                for (int j = 0; j < QV; j++) acc[c][p][j] = vsplat(b1[c]);
        for (int ky = 0; ky < K1; ky++)
            for (int kx = 0; kx < K1; kx++) {
                const float *row = xp + (y + ky) * XR;
                vf in[2][QV];
                for (int p = 0; p < 2; p++)
                    for (int j = 0; j < QV; j++) in[p][j] = *(const vf *)(row + tap(p, kx) + j * V);
                for (int c = 0; c < C1; c++) {
                    const float w = w1[(c * K1 + ky) * K1 + kx];
                    for (int p = 0; p < 2; p++)
                        for (int j = 0; j < QV; j++) acc[c][p][j] += in[p][j] * w;
                }
            }
        for (int c = 0; c < C1; c++)
            for (int p = 0; p < 2; p++)
                for (int j = 0; j < QV; j++) *(vf *)(z + (c * O1 + y) * RS1 + p * QP + j * V) = acc[c][p][j];
    }
}

/* s = act(scale * z + shift) with BN, else act(z), per channel of conv1's output (s may be z). */
static void act1_forward(const float *z, const float *scale, const float *shift, float *s) {
    for (int c = 0; c < C1; c++) {
        const float a = BN ? scale[c] : 1.0f, b = BN ? shift[c] : 0.0f;
        for (int i = c * O1 * RS1; i < (c + 1) * O1 * RS1; i += V) {
            vf zi = *(const vf *)(z + i);
            if (BN) zi = a * zi + b;
            *(vf *)(s + i) = act_forward(zi, LENET_ACT1, LENET_SLOPE1);
        }
    }
}

/* pool1 of activated rows s -> p1 (rows, channels, columns; zero border). */
static void pool1_forward(const float *s, float *p1) {
    if (PAD2) memset(p1, 0, sizeof(float) * P1_SIZE);
    for (int c = 0; c < C1; c++)
        for (int r = 0; r < Q1; r++) {
            const float *top = s + (c * O1 + 2 * r) * RS1, *bottom = top + RS1;
            float pooled[QP] __attribute__((aligned(64)));
            for (int q = 0; q < QP; q += V)
                *(vf *)(pooled + q) = pool_forward(LENET_POOL1, *(const vf *)(top + q), *(const vf *)(top + QP + q),
                                                   *(const vf *)(bottom + q), *(const vf *)(bottom + QP + q));
            memcpy(p1 + ((r + PAD2) * C1 + c) * P1S + PAD2, pooled, sizeof(float) * Q1);
        }
}

/* conv2_forward's block: XB columns by CB vectors of output channels, both dividing their extents, with as
 * many accumulators as fit (LENET_ACC): a whole row's 10 x 1 for LeNet-5 with AVX-512, 7 x 2 for the TF1
 * CNN's 14 columns and 4 vectors. The choice is among all, half or one of the channel vectors. */
enum {
    XB_ALL = C2V <= LENET_ACC ? LENET_DIV_LE(O2, LENET_ACC / C2V) : 0,
    XB_HALF = C2V % 2 == 0 && C2V / 2 <= LENET_ACC ? LENET_DIV_LE(O2, LENET_ACC / (C2V / 2)) : 0,
    XB_ONE = LENET_DIV_LE(O2, LENET_ACC),
    CONV2_CB = XB_ALL * C2V >= XB_HALF * (C2V / 2) && XB_ALL * C2V >= XB_ONE ? C2V
               : XB_HALF * (C2V / 2) >= XB_ONE ? C2V / 2 : 1,
    CONV2_XB = CONV2_CB == C2V ? XB_ALL : CONV2_CB == 1 ? XB_ONE : XB_HALF,
    /* conv2's weight gradient: CW input channels by all C2V vectors */
    CONV2_CW = C2V <= LENET_ACC ? LENET_DIV_LE(C1, LENET_ACC / C2V) : 1,
};

/* conv2 + bias -> z (O2 * O2, C2P), channels last. Per output row, blocks of CONV2_XB columns by CONV2_CB
 * channel vectors; per patch entry one weight vector per channel vector and CONV2_XB broadcast inputs. */
static void conv2_forward(const float *p1, const float *w2t, const float *b2, float *z) {
    for (int y = 0; y < O2; y++)
        for (int x0 = 0; x0 < O2; x0 += CONV2_XB)
            for (int v0 = 0; v0 < C2V; v0 += CONV2_CB) {
                vf acc[CONV2_XB][CONV2_CB];
                for (int x = 0; x < CONV2_XB; x++)
                    for (int v = 0; v < CONV2_CB; v++) acc[x][v] = *(const vf *)(b2 + (v0 + v) * V);
                for (int ky = 0; ky < K2; ky++)
                    for (int kx = 0; kx < K2; kx++)
                        for (int ci = 0; ci < C1; ci++) {
                            const float *w = w2t + ((ky * K2 + kx) * C1 + ci) * C2P + v0 * V;
                            const float *in = p1 + ((y + ky) * C1 + ci) * P1S + kx + x0;
                            vf wv[CONV2_CB];
                            for (int v = 0; v < CONV2_CB; v++) wv[v] = *(const vf *)(w + v * V);
                            for (int x = 0; x < CONV2_XB; x++) {
                                const float a = in[x];
                                for (int v = 0; v < CONV2_CB; v++) acc[x][v] += wv[v] * a;
                            }
                        }
                for (int x = 0; x < CONV2_XB; x++)
                    for (int v = 0; v < CONV2_CB; v++) *(vf *)(z + (y * O2 + x0 + x) * C2P + (v0 + v) * V) = acc[x][v];
            }
}

/* s = act(scale * z + shift) with BN, else act(z), per channel of conv2's output (s may be z). */
static void act2_forward(const float *z, const float *scale, const float *shift, float *s) {
    for (int pos = 0; pos < O2 * O2; pos++)
        for (int c = 0; c < C2P; c += V) {
            vf zi = *(const vf *)(z + pos * C2P + c);
            if (BN) zi = *(const vf *)(scale + c) * zi + *(const vf *)(shift + c);
            *(vf *)(s + pos * C2P + c) = act_forward(zi, LENET_ACT2, LENET_SLOPE2);
        }
}

/* pool2 of activated s -> f, in PyTorch's flatten order. */
static void pool2_forward(const float *s, float *f) {
    for (int r = 0; r < Q2; r++)
        for (int q = 0; q < Q2; q++) {
            const float *a = s + ((2 * r) * O2 + 2 * q) * C2P, *b = a + C2P, *c = a + O2 * C2P, *d = c + C2P;
            float pooled[C2P] __attribute__((aligned(64)));
            for (int ch = 0; ch < C2P; ch += V)
                *(vf *)(pooled + ch) = pool_forward(LENET_POOL2, *(const vf *)(a + ch), *(const vf *)(b + ch),
                                                    *(const vf *)(c + ch), *(const vf *)(d + ch));
            for (int ch = 0; ch < C2; ch++) f[(ch * Q2 + r) * Q2 + q] = pooled[ch];
        }
}

/* Which lanes of a conv1 row's vectors lie inside the image (the rest pad the row to whole vectors). */
static void inside_lanes(vi *inside) {
    for (int j = 0; j < QV; j++)
        for (int l = 0; l < V; l++) inside[j][l] = j * V + l < Q1 ? -1 : 0;
}

/* Batch norm's statistics, forward: per channel the sum and the sum of squares of one sample's z, added onto
 * sums[0..C) and sums[C..2C) (conv1: the lanes inside the image only). */
static void bn1_moments(const float *z, double *sums) {
    vi inside[QV];
    inside_lanes(inside);
    for (int c = 0; c < C1; c++) {
        vf s = {0}, ss = {0};
        for (int row = 0; row < 2 * O1; row++)
            for (int j = 0; j < QV; j++) {
                const vf v = vselect(inside[j], *(const vf *)(z + c * O1 * RS1 + row * QP + j * V), (vf){0});
                s += v;
                ss += v * v;
            }
        sums[c] += vhsum(s);
        sums[C1 + c] += vhsum(ss);
    }
}

static void bn2_moments(const float *z, double *sums) {
    vf s[C2V], ss[C2V];
    for (int v = 0; v < C2V; v++) s[v] = ss[v] = (vf){0};
    for (int pos = 0; pos < O2 * O2; pos++)
        for (int v = 0; v < C2V; v++) {
            const vf a = *(const vf *)(z + pos * C2P + v * V);
            s[v] += a;
            ss[v] += a * a;
        }
    for (int v = 0; v < C2V; v++)
        for (int i = 0; i < V; i++) {
            sums[v * V + i] += s[v][i];
            sums[C2P + v * V + i] += ss[v][i];
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Backward, one sample */

/* pool2 and act2 backward: g (NF) -> gz2 (O2 * O2, C2P), padding lanes zero. */
static void pool2_backward(const float *g, const float *s2, float *gz2) {
    for (int r = 0; r < Q2; r++)
        for (int q = 0; q < Q2; q++) {
            const int i0 = ((2 * r) * O2 + 2 * q) * C2P, i1 = i0 + C2P, i2 = i0 + O2 * C2P, i3 = i2 + C2P;
            float gq[C2P] __attribute__((aligned(64)));
            for (int ch = 0; ch < C2P; ch++) gq[ch] = ch < C2 ? g[(ch * Q2 + r) * Q2 + q] : 0.0f;
            for (int ch = 0; ch < C2P; ch += V) {
                vf out[4];
                pool_backward(LENET_POOL2, LENET_ACT2, LENET_SLOPE2, *(const vf *)(gq + ch),
                              *(const vf *)(s2 + i0 + ch), *(const vf *)(s2 + i1 + ch), *(const vf *)(s2 + i2 + ch),
                              *(const vf *)(s2 + i3 + ch), out);
                *(vf *)(gz2 + i0 + ch) = out[0], *(vf *)(gz2 + i1 + ch) = out[1];
                *(vf *)(gz2 + i2 + ch) = out[2], *(vf *)(gz2 + i3 + ch) = out[3];
            }
        }
    if (O2 % 2) { /* the last row and column that pooling dropped get no gradient */
        for (int x = 0; x < O2; x++) memset(gz2 + ((O2 - 1) * O2 + x) * C2P, 0, sizeof(float) * C2P);
        for (int y = 0; y < O2; y++) memset(gz2 + (y * O2 + O2 - 1) * C2P, 0, sizeof(float) * C2P);
    }
}

/* conv2's weight gradient: gw2t[ky][kx][ci] += sum over positions of p1[y + ky][x + kx][ci] * gz2[y][x]; per
 * kernel tap, blocks of CONV2_CW input channels by C2V vectors of output channels in registers. */
static void conv2_backward_weight(const float *p1, const float *gz2, float *gw2t) {
    for (int ky = 0; ky < K2; ky++)
        for (int kx = 0; kx < K2; kx++)
            for (int c0 = 0; c0 < C1; c0 += CONV2_CW) {
                vf acc[CONV2_CW][C2V];
                for (int ci = 0; ci < CONV2_CW; ci++)
                    for (int v = 0; v < C2V; v++) acc[ci][v] = (vf){0};
                for (int y = 0; y < O2; y++)
                    for (int x = 0; x < O2; x++) {
                        const float *g = gz2 + (y * O2 + x) * C2P;
                        const float *in = p1 + ((y + ky) * C1 + c0) * P1S + x + kx;
                        vf gv[C2V];
                        for (int v = 0; v < C2V; v++) gv[v] = *(const vf *)(g + v * V);
                        for (int ci = 0; ci < CONV2_CW; ci++) {
                            const float a = in[ci * P1S];
                            for (int v = 0; v < C2V; v++) acc[ci][v] += gv[v] * a;
                        }
                    }
                float *out = gw2t + ((ky * K2 + kx) * C1 + c0) * C2P;
                for (int ci = 0; ci < CONV2_CW; ci++)
                    for (int v = 0; v < C2V; v++) *(vf *)(out + ci * C2P + v * V) += acc[ci][v];
            }
}

/* conv2's input gradient: each output position's patch gradient gz2[y][x] @ w2r (KCP floats, PB positions at
 * a time to share the weight loads), added onto gp1 (channels last, border included). */
static void conv2_backward_input(const float *gz2, const float *w2r, float *gp1, float *gcol) {
    enum { PB = 4, HB = 5 }; /* positions per block; vectors of a patch per pass (PB * HB accumulators) */
    memset(gp1, 0, sizeof(float) * P1_SIZE);
    for (int p0 = 0; p0 < O2 * O2; p0 += PB) {
        const float *g[PB];
        for (int n = 0; n < PB; n++) g[n] = gz2 + (p0 + n < O2 * O2 ? p0 + n : p0) * C2P;
        for (int v0 = 0; v0 < KCV; v0 += HB) {
            vf acc[PB][HB];
            for (int n = 0; n < PB; n++)
                for (int v = 0; v < HB; v++) acc[n][v] = (vf){0};
            for (int co = 0; co < C2; co++) {
                const float *w = w2r + co * KCP + v0 * V;
                vf wv[HB];
                for (int v = 0; v < HB; v++) wv[v] = v0 + v < KCV ? *(const vf *)(w + v * V) : (vf){0};
                for (int n = 0; n < PB; n++) {
                    const float h = g[n][co];
                    for (int v = 0; v < HB; v++) acc[n][v] += wv[v] * h;
                }
            }
            for (int n = 0; n < PB; n++)
                for (int v = 0; v < HB; v++)
                    if (v0 + v < KCV) *(vf *)(gcol + n * KCP + (v0 + v) * V) = acc[n][v];
        }
        for (int n = 0; n < PB && p0 + n < O2 * O2; n++) {
            const int y = (p0 + n) / O2, x = (p0 + n) % O2;
            for (int ky = 0; ky < K2; ky++) {
                float *dst = gp1 + ((y + ky) * P1S + x) * C1;
                const float *src = gcol + n * KCP + ky * K2 * C1;
                for (int j = 0; j < K2 * C1; j++) dst[j] += src[j];
            }
        }
    }
}

/* pool1 and act1 backward: gp1 -> gz1 (C1, O1, 2, QP), lanes beyond the pooled columns zero. */
static void pool1_backward(const float *gp1, const float *s1, float *gz1) {
    for (int c = 0; c < C1; c++) {
        for (int r = 0; r < Q1; r++) {
            const float *top = s1 + (c * O1 + 2 * r) * RS1, *bottom = top + RS1;
            float *gtop = gz1 + (c * O1 + 2 * r) * RS1, *gbottom = gtop + RS1;
            const float *g = gp1 + ((r + PAD2) * P1S + PAD2) * C1 + c;
            float gq[QP] __attribute__((aligned(64)));
            for (int q = 0; q < QP; q++) gq[q] = q < Q1 ? g[q * C1] : 0.0f;
            for (int q = 0; q < QP; q += V) {
                vf out[4];
                pool_backward(LENET_POOL1, LENET_ACT1, LENET_SLOPE1, *(const vf *)(gq + q), *(const vf *)(top + q),
                              *(const vf *)(top + QP + q), *(const vf *)(bottom + q),
                              *(const vf *)(bottom + QP + q), out);
                *(vf *)(gtop + q) = out[0], *(vf *)(gtop + QP + q) = out[1];
                *(vf *)(gbottom + q) = out[2], *(vf *)(gbottom + QP + q) = out[3];
            }
        }
        if (O1 % 2) memset(gz1 + (c * O1 + O1 - 1) * RS1, 0, sizeof(float) * RS1); /* pooling dropped it */
    }
}

/* conv1's weight and bias gradients, lane-wise: acc1[c][ky][kx] (a vector of partial sums) += gz1[c][y]
 * * the inputs that met it, and gb1[c] += the sum of gz1[c]. */
static void conv1_backward_weight(const float *x, const float *gz1, float *acc1, float *gb1) {
    float xp[XS * XR] __attribute__((aligned(64)));
    pad_input(x, xp);
    for (int c = 0; c < C1; c++) {
        vf sum = {0};
        for (int i = c * O1 * RS1; i < (c + 1) * O1 * RS1; i += V) sum += *(const vf *)(gz1 + i);
        gb1[c] += vhsum(sum);
    }
    /* per kernel tap, each (unaligned) input vector is loaded once for all channels */
    for (int ky = 0; ky < K1; ky++)
        for (int kx = 0; kx < K1; kx++) {
            vf part[C1];
            for (int c = 0; c < C1; c++) part[c] = (vf){0};
            for (int y = 0; y < O1; y++) {
                const float *row = xp + (y + ky) * XR;
                for (int j = 0; j < QV; j++) {
                    const vf in_even = *(const vf *)(row + tap(0, kx) + j * V);
                    const vf in_odd = *(const vf *)(row + tap(1, kx) + j * V);
                    for (int c = 0; c < C1; c++) {
                        const float *g = gz1 + (c * O1 + y) * RS1 + j * V;
                        part[c] += *(const vf *)g * in_even + *(const vf *)(g + QP) * in_odd;
                    }
                }
            }
            for (int c = 0; c < C1; c++) *(vf *)(acc1 + ((c * K1 + ky) * K1 + kx) * V) += part[c];
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Batch normalisation */

/* scale = gamma / sqrt(var + eps) and shift = beta - mean * scale: the normalisation as an affine map. */
static void bn_affine(const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                      int channels, float *scale, float *shift) {
    for (int c = 0; c < channels; c++) {
        scale[c] = gamma[c] / sqrtf(var[c] + eps);
        shift[c] = beta[c] - mean[c] * scale[c];
    }
}

/* A layer's batch mean and biased variance from its summed moments over n values, into the packed
 * parameters and `stats`; the running statistics move by `momentum` (with the unbiased variance). */
static void bn_statistics(const double *sums, int channels, int real, double n, float *mean, float *var,
                          float *stats, float *running_mean, float *running_var, float momentum) {
    for (int c = 0; c < channels; c++) {
        const double m = sums[c] / n, v = sums[channels + c] / n - m * m;
        mean[c] = (float)m;
        var[c] = (float)(v > 0.0 ? v : 0.0);
    }
    for (int c = 0; c < real; c++) {
        stats[c] = mean[c];
        stats[real + c] = var[c];
        if (running_mean) {
            const float unbiased = (float)(var[c] * n / (n > 1.0 ? n - 1.0 : 1.0));
            running_mean[c] = momentum * mean[c] + (1.0f - momentum) * running_mean[c];
            running_var[c] = momentum * unbiased + (1.0f - momentum) * running_var[c];
        }
    }
}

/* Batch norm's backward coefficients for one channel, from sum(g_y) and sum(g_y * xhat) over n values:
 * g_z = k0 * (g_y - k1 - (z - k3) * k4 * k2), i.e. gamma / sigma * (g_y - mean(g_y) - xhat mean(g_y xhat)). */
static void bn_coefficients(float gamma, float mean, float var, float eps, double sum_g, double sum_gx, double n,
                            float *k) {
    const float invstd = 1.0f / sqrtf(var + eps);
    k[0] = gamma * invstd;
    k[1] = (float)(sum_g / n);
    k[2] = (float)(sum_gx / n);
    k[3] = mean;
    k[4] = invstd;
}

static inline float bn_backward(float gy, float z, const float *k) {
    return k[0] * (gy - k[1] - (z - k[3]) * k[4] * k[2]);
}

/* Repack the parameters into the workspace (see P_*); the normalisations' statistics come from `stats`
 * (the batch's, as lenet_frontend_forward wrote them) or, when it is NULL, from the running ones. */
static void pack(const LenetParams *prm, const float *stats, float *packed) {
    float *w2t = packed + P_W2T, *w2r = packed + P_W2R;
    memset(packed, 0, sizeof(float) * P_SIZE);
    for (int co = 0; co < C2; co++)
        for (int ci = 0; ci < C1; ci++)
            for (int ky = 0; ky < K2; ky++)
                for (int kx = 0; kx < K2; kx++) {
                    const float w = prm->w2[((co * C1 + ci) * K2 + ky) * K2 + kx];
                    w2t[((ky * K2 + kx) * C1 + ci) * C2P + co] = w;
                    w2r[co * KCP + (ky * K2 + kx) * C1 + ci] = w;
                }
    for (int c = 0; c < C2; c++) packed[P_B2 + c] = prm->b2 ? prm->b2[c] : 0.0f;
    if (!BN) return;
    for (int c = 0; c < C1; c++) {
        packed[P_G1 + c] = prm->gamma1 ? prm->gamma1[c] : 1.0f;
        packed[P_B1 + c] = prm->beta1 ? prm->beta1[c] : 0.0f;
        packed[P_M1 + c] = stats ? stats[c] : prm->mean1[c];
        packed[P_V1 + c] = stats ? stats[C1 + c] : prm->var1[c];
    }
    for (int c = 0; c < C2P; c++) {
        packed[P_V2 + c] = 1.0f;
        if (c >= C2) continue;
        packed[P_G2 + c] = prm->gamma2 ? prm->gamma2[c] : 1.0f;
        packed[P_BE2 + c] = prm->beta2 ? prm->beta2[c] : 0.0f;
        packed[P_M2 + c] = stats ? stats[2 * C1 + c] : prm->mean2[c];
        packed[P_V2 + c] = stats ? stats[2 * C1 + C2 + c] : prm->var2[c];
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* The calls: a batch through the front end, forward or backward, chunks spread over the threads */

typedef struct {
    int batch, chunk, chunks, train; /* chunk: samples per chunk */
    const LenetParams *prm;
    const float *x, *gf;
    float *stats, *s1, *p1, *s2, *f, *gy1, *gy2, *parts, *ws, *packed;
    double *dsum;
    float b1[C1], scale1[C1], shift1[C1], scale2[C2P], shift2[C2P], invstd2[C2P], k1[C1][5], k2[C2P][5];
} Front;

#define LENET_FOR_SAMPLES(chunk) \
    for (int i = (chunk) * fr->chunk; i < fr->batch && i < ((chunk) + 1) * fr->chunk; i++)

static float *thread_ws(const Front *fr, int thread) { return fr->ws + WS_THREADS + (long)thread * WS_THREAD; }

/* Without batch statistics: each sample through the whole front end (s1, p1, s2 kept when asked for). */
static void forward_task(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread);
    LENET_FOR_SAMPLES(chunk) {
        float *s1 = fr->s1 ? fr->s1 + (long)i * S1_SIZE : w + WS_S1;
        float *p1 = fr->p1 ? fr->p1 + (long)i * P1_SIZE : w + WS_P1;
        float *s2 = fr->s2 ? fr->s2 + (long)i * S2_SIZE : w + WS_S2;
        conv1_forward(fr->x + (long)i * S * S, fr->prm->w1, fr->b1, s1);
        act1_forward(s1, fr->scale1, fr->shift1, s1);
        pool1_forward(s1, p1);
        conv2_forward(p1, fr->packed + P_W2T, fr->packed + P_B2, s2);
        act2_forward(s2, fr->scale2, fr->shift2, s2);
        pool2_forward(s2, fr->f + (long)i * NF);
    }
}

/* Batch norm training, phase 1: conv1, and its moments per chunk. */
static void forward_phase1(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    (void)thread;
    if (chunk < 0) return;
    double *part = fr->dsum + (long)chunk * D_SIZE;
    memset(part, 0, sizeof(double) * D_SIZE);
    LENET_FOR_SAMPLES(chunk) {
        conv1_forward(fr->x + (long)i * S * S, fr->prm->w1, fr->b1, fr->s1 + (long)i * S1_SIZE);
        bn1_moments(fr->s1 + (long)i * S1_SIZE, part);
    }
}

/* 2: conv1's output normalised, activated and pooled; conv2, and its moments. */
static void forward_phase2(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread);
    double *part = fr->dsum + (long)chunk * D_SIZE + 2 * C1;
    LENET_FOR_SAMPLES(chunk) {
        act1_forward(fr->s1 + (long)i * S1_SIZE, fr->scale1, fr->shift1, w + WS_T1);
        pool1_forward(w + WS_T1, fr->p1 + (long)i * P1_SIZE);
        conv2_forward(fr->p1 + (long)i * P1_SIZE, fr->packed + P_W2T, fr->packed + P_B2, fr->s2 + (long)i * S2_SIZE);
        bn2_moments(fr->s2 + (long)i * S2_SIZE, part);
    }
}

/* 3: conv2's output normalised, activated and pooled. */
static void forward_phase3(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread);
    LENET_FOR_SAMPLES(chunk) {
        act2_forward(fr->s2 + (long)i * S2_SIZE, fr->scale2, fr->shift2, w + WS_S2);
        pool2_forward(w + WS_S2, fr->f + (long)i * NF);
    }
}

/* Forward through the front end: f (B, NF). With s1, p1, s2 NULL nothing is kept (inference); otherwise
 * they are filled, (B, S1_SIZE), (B, P1_SIZE) and (B, S2_SIZE), for lenet_frontend_backward. With BN and
 * `train`, the batch's statistics normalise (and are written to stats: mean1, var1 (C1 each), mean2, var2
 * (C2 each), biased variances; s1, p1, s2 and dsum, lenet_frontend_chunk_doubles(batch) doubles, are needed)
 * and the running statistics move by prm->momentum; otherwise the running statistics normalise. */
void lenet_frontend_forward(int batch, int threads, const LenetParams *prm, int train, const float *x, float *stats,
                            float *s1, float *p1, float *s2, float *f, float *ws, double *dsum) {
    Front fr = {.batch = batch, .chunk = chunk_size(batch), .chunks = chunk_count(batch), .train = train, .prm = prm,
                .x = x,
                .stats = stats, .s1 = s1, .p1 = p1, .s2 = s2, .f = f, .ws = ws, .packed = ws, .dsum = dsum};
    pack(prm, NULL, fr.packed);
    for (int c = 0; c < C1; c++) fr.b1[c] = prm->b1 ? prm->b1[c] : 0.0f;
    float *packed = fr.packed;
    if (!(BN && train)) {
        if (BN) {
            bn_affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, prm->eps, C1, fr.scale1, fr.shift1);
            bn_affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, prm->eps, C2P, fr.scale2, fr.shift2);
        }
        lenet_parallel(threads, fr.chunks, forward_task, &fr);
        return;
    }
    double sums[2 * C2P > 2 * C1 ? 2 * C2P : 2 * C1];
    lenet_parallel(threads, fr.chunks, forward_phase1, &fr);
    reduce_parts_double(dsum, D_SIZE, fr.chunks, 2 * C1, sums);
    bn_statistics(sums, C1, C1, (double)batch * O1 * O1, packed + P_M1, packed + P_V1, stats, prm->mean1, prm->var1,
                  prm->momentum);
    bn_affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, prm->eps, C1, fr.scale1, fr.shift1);
    lenet_parallel(threads, fr.chunks, forward_phase2, &fr);
    reduce_parts_double(dsum + 2 * C1, D_SIZE, fr.chunks, 2 * C2P, sums);
    bn_statistics(sums, C2P, C2, (double)batch * O2 * O2, packed + P_M2, packed + P_V2, stats + 2 * C1, prm->mean2,
                  prm->var2, prm->momentum);
    bn_affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, prm->eps, C2P, fr.scale2, fr.shift2);
    lenet_parallel(threads, fr.chunks, forward_phase3, &fr);
}

/* conv2's gradients from gz2 (d loss / d its raw output), then pool1 and act1 backward into the workspace's
 * gz1, given conv1's activated output s1. */
static void conv2_backward(const float *gz2, const float *p1, const float *w2r, const float *s1, float *g, float *w) {
    for (int pos = 0; pos < O2 * O2; pos++)
        for (int v = 0; v < C2V; v++) *(vf *)(g + G_B2 + v * V) += *(const vf *)(gz2 + pos * C2P + v * V);
    conv2_backward_weight(p1, gz2, g + G_W2);
    conv2_backward_input(gz2, w2r, w + WS_GP1, w + WS_GCOL);
    pool1_backward(w + WS_GP1, s1, w + WS_GZ1);
}

/* conv1's per-lane weight-gradient sums, reduced into the chunk's gw1. */
static void conv1_finish(const float *acc1, float *g) {
    for (int k = 0; k < C1 * K1 * K1; k++) g[G_W1 + k] = vhsum(*(const vf *)(acc1 + k * V));
}

/* Without batch norm: each sample back through the whole front end, its gradients summed per chunk. */
static void backward_task(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread), *g = fr->parts + (long)chunk * G_SIZE;
    memset(g, 0, sizeof(float) * G_SIZE);
    memset(w + WS_ACC1, 0, sizeof(float) * C1 * K1 * K1 * V);
    LENET_FOR_SAMPLES(chunk) {
        pool2_backward(fr->gf + (long)i * NF, fr->s2 + (long)i * S2_SIZE, w + WS_GZ2);
        conv2_backward(w + WS_GZ2, fr->p1 + (long)i * P1_SIZE, fr->packed + P_W2R, fr->s1 + (long)i * S1_SIZE, g, w);
        conv1_backward_weight(fr->x + (long)i * S * S, w + WS_GZ1, w + WS_ACC1, g + G_B1);
    }
    conv1_finish(w + WS_ACC1, g);
}

/* Batch norm, phase 1: pool2 and act2 backward -> gy2 (d loss / d conv2's normalised output), and its sums. */
static void backward_phase1(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread);
    const float *mean2 = fr->packed + P_M2;
    double *part = fr->dsum + (long)chunk * D_SIZE;
    float sg[C2P] = {0}, sgx[C2P] = {0};
    LENET_FOR_SAMPLES(chunk) {
        const float *z = fr->s2 + (long)i * S2_SIZE;
        float *gy = fr->gy2 + (long)i * S2_SIZE;
        act2_forward(z, fr->scale2, fr->shift2, w + WS_S2);
        pool2_backward(fr->gf + (long)i * NF, w + WS_S2, gy);
        for (int pos = 0; pos < O2 * O2; pos++)
            for (int c = 0; c < C2P; c++) {
                const float xhat = (z[pos * C2P + c] - mean2[c]) * fr->invstd2[c];
                sg[c] += gy[pos * C2P + c];
                sgx[c] += gy[pos * C2P + c] * xhat;
            }
    }
    for (int c = 0; c < C2P; c++) {
        part[2 * C1 + c] = sg[c];
        part[2 * C1 + C2P + c] = sgx[c];
    }
}

/* 2: batch norm 2 backward -> gz2; conv2's gradients; pool1 and act1 backward -> gy1, and its sums. */
static void backward_phase2(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread), *g = fr->parts + (long)chunk * G_SIZE, *gz2 = w + WS_GZ2;
    double *part = fr->dsum + (long)chunk * D_SIZE;
    memset(g, 0, sizeof(float) * G_SIZE);
    float sg[C1] = {0}, sgx[C1] = {0};
    LENET_FOR_SAMPLES(chunk) {
        const float *z = fr->s2 + (long)i * S2_SIZE, *gy = fr->gy2 + (long)i * S2_SIZE;
        for (int pos = 0; pos < O2 * O2; pos++)
            for (int c = 0; c < C2P; c++)
                gz2[pos * C2P + c] = bn_backward(gy[pos * C2P + c], z[pos * C2P + c], fr->k2[c]);
        const float *z1 = fr->s1 + (long)i * S1_SIZE;
        act1_forward(z1, fr->scale1, fr->shift1, w + WS_T1);
        conv2_backward(gz2, fr->p1 + (long)i * P1_SIZE, fr->packed + P_W2R, w + WS_T1, g, w);
        float *out = fr->gy1 + (long)i * S1_SIZE;
        memcpy(out, w + WS_GZ1, sizeof(float) * S1_SIZE);
        for (int c = 0; c < C1; c++) {
            const float invstd = 1.0f / sqrtf(fr->packed[P_V1 + c] + fr->prm->eps), mean = fr->packed[P_M1 + c];
            vf a = {0}, b = {0};
            for (int k = c * O1 * RS1; k < (c + 1) * O1 * RS1; k += V) { /* out is zero beyond the image */
                const vf o = *(const vf *)(out + k);
                a += o;
                b += o * ((*(const vf *)(z1 + k) - mean) * invstd);
            }
            sg[c] += vhsum(a);
            sgx[c] += vhsum(b);
        }
    }
    for (int c = 0; c < C1; c++) {
        part[c] = sg[c];
        part[C1 + c] = sgx[c];
    }
}

/* 3: batch norm 1 backward -> gz1 (zero beyond the image); conv1's gradients. */
static void backward_phase3(void *ctx, int chunk, int thread) {
    const Front *fr = ctx;
    if (chunk < 0) return;
    float *w = thread_ws(fr, thread), *g = fr->parts + (long)chunk * G_SIZE, *gz1 = w + WS_GZ1;
    memset(w + WS_ACC1, 0, sizeof(float) * C1 * K1 * K1 * V);
    LENET_FOR_SAMPLES(chunk) {
        const float *z1 = fr->s1 + (long)i * S1_SIZE, *gy = fr->gy1 + (long)i * S1_SIZE;
        for (int c = 0; c < C1; c++)
            for (int k = 0; k < O1 * RS1; k++) {
                const float gz = bn_backward(gy[c * O1 * RS1 + k], z1[c * O1 * RS1 + k], fr->k1[c]);
                gz1[c * O1 * RS1 + k] = (k % QP) < Q1 ? gz : 0.0f;
            }
        conv1_backward_weight(fr->x + (long)i * S * S, gz1, w + WS_ACC1, g + G_B1);
    }
    conv1_finish(w + WS_ACC1, g);
}

/* The chunks' sums, in chunk order, a block of REDUCE floats per task. */
enum { REDUCE = 64 * V };
static void reduce_task(void *ctx, int task, int thread) {
    const Front *fr = ctx;
    (void)thread;
    if (task < 0) return;
    const int from = task * REDUCE, n = LENET_MIN(REDUCE, G_CONV - from);
    reduce_parts(fr->parts + from, G_SIZE, fr->chunks, n, fr->ws + WS_TOTAL + from);
}

/* Backward through the front end: from gf (B, NF) = d loss / d f, the gradients summed over the batch, in
 * PyTorch's layouts, one after the other: conv1's weight and bias, conv2's weight and bias, then with BN
 * each norm's gamma and beta (FRONT_GRADS floats). `stats` is what lenet_frontend_forward wrote when
 * training. `parts` has room for lenet_frontend_chunk_floats(batch) floats; with BN, also dsum
 * (lenet_frontend_chunk_doubles(batch) doubles), gy1 (B, S1_SIZE) and gy2 (B, S2_SIZE). */
void lenet_frontend_backward(int batch, int threads, const LenetParams *prm, const float *stats, const float *x,
                             const float *s1, const float *p1, const float *s2, const float *gf, float *gy1,
                             float *gy2, float *grads, float *parts, double *dsum, float *ws) {
    Front fr = {.batch = batch, .chunk = chunk_size(batch), .chunks = chunk_count(batch), .prm = prm, .x = x, .gf = gf,
                .s1 = (float *)s1, .p1 = (float *)p1, .s2 = (float *)s2, .gy1 = gy1, .gy2 = gy2, .parts = parts,
                .ws = ws, .packed = ws, .dsum = dsum};
    const float eps = prm->eps, *packed = fr.packed;
    float *total = ws + WS_TOTAL;
    pack(prm, stats, fr.packed);
    if (!BN) {
        lenet_parallel(threads, fr.chunks, backward_task, &fr);
    } else {
        bn_affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, eps, C1, fr.scale1, fr.shift1);
        bn_affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, eps, C2P, fr.scale2, fr.shift2);
        for (int c = 0; c < C2P; c++) fr.invstd2[c] = 1.0f / sqrtf(packed[P_V2 + c] + eps);
        double sums[2 * C2P > 2 * C1 ? 2 * C2P : 2 * C1];
        lenet_parallel(threads, fr.chunks, backward_phase1, &fr);
        reduce_parts_double(dsum + 2 * C1, D_SIZE, fr.chunks, 2 * C2P, sums);
        for (int c = 0; c < C2P; c++) {
            total[G_CONV + 2 * C1 + c] = (float)sums[C2P + c]; /* dgamma2 */
            total[G_CONV + 2 * C1 + C2P + c] = (float)sums[c]; /* dbeta2 */
            bn_coefficients(packed[P_G2 + c], packed[P_M2 + c], packed[P_V2 + c], eps, sums[c], sums[C2P + c],
                            (double)batch * O2 * O2, fr.k2[c]);
        }
        lenet_parallel(threads, fr.chunks, backward_phase2, &fr);
        reduce_parts_double(dsum, D_SIZE, fr.chunks, 2 * C1, sums);
        for (int c = 0; c < C1; c++) {
            total[G_CONV + c] = (float)sums[C1 + c];      /* dgamma1 */
            total[G_CONV + C1 + c] = (float)sums[c];      /* dbeta1 */
            bn_coefficients(packed[P_G1 + c], packed[P_M1 + c], packed[P_V1 + c], eps, sums[c], sums[C1 + c],
                            (double)batch * O1 * O1, fr.k1[c]);
        }
        lenet_parallel(threads, fr.chunks, backward_phase3, &fr);
    }
    lenet_parallel(threads, (G_CONV + REDUCE - 1) / REDUCE, reduce_task, &fr);
    /* into PyTorch's layouts */
    float *out = grads;
    memcpy(out, total + G_W1, sizeof(float) * (C1 * K1 * K1 + C1)); /* gw1, gb1 */
    out += C1 * K1 * K1 + C1;
    for (int co = 0; co < C2; co++)
        for (int ci = 0; ci < C1; ci++)
            for (int k = 0; k < K2 * K2; k++) *out++ = total[G_W2 + (k * C1 + ci) * C2P + co];
    memcpy(out, total + G_B2, sizeof(float) * C2);
    out += C2;
    if (BN) {
        memcpy(out, total + G_CONV, sizeof(float) * 2 * C1);
        memcpy(out + 2 * C1, total + G_CONV + 2 * C1, sizeof(float) * C2);
        memcpy(out + 2 * C1 + C2, total + G_CONV + 2 * C1 + C2P, sizeof(float) * C2);
    }
}
