/* A LeNet's training and inference arithmetic for the CPU: conv -> (batch norm) -> activation -> 2x2 pool,
 * twice (forward and backward), and with FC=1 the Linear-act-Linear-act-Linear classifier and its
 * cross-entropy loss (with OUT_CLIPLOG=1, on Keras' head: log(clamp(sigmoid(z), CLIP_EPS, 1 - CLIP_EPS)),
 * lenet_step only).
 *
 * lenet/fastpath.py compiles this file once per network shape (the shape comes in as -D macros, so every
 * loop has a constant trip count) and calls it through ctypes. Two sets of kernels:
 *  - lenet_step (at the end of the file): a whole training step in one call, for a classic LeNet without
 *    batch norm, with V samples in each vector (16 with AVX-512, 8 with AVX2); the fast path of training.
 *    See its section.
 *  - per sample (the rest): lenet_forward and lenet_backward for the front end, lenet_classifier for the
 *    classifier and its loss; inference, autograd, and training with batch norm.
 * The per-sample kernels: one call per batch and stage; OpenMP threads take chunks of the batch as they come
 * free, and each sample's activations (about 30 KB for LeNet-5) are worked on while they sit in the core's
 * L1/L2 cache. Both convolutions are direct, in V-float vectors (GCC/Clang vector extensions, one register
 * each): conv1 along the even and the odd columns of an image row, conv2 along its output channels; pooling
 * and activations are lane-wise too. The classifier's products are register-blocked 6 x 4V tiles. The arithmetic is PyTorch's up to float
 * rounding order (fused multiply-adds, summation order); sums over the batch are taken per fixed chunk and
 * added in chunk order, so no result depends on the thread count.
 *
 * Layouts, per sample:
 *   x    (S, S)                  the input image
 *   s1   (C1, O1, 2, QP)         conv1 output after the activation, each row split into its even and its
 *                                odd columns (QP lanes each, Q1 used), so that 2x2 pooling is lane-wise
 *   p1   (P1S, C1, P1S)          pool1 output (rows, channels, columns), inside a zero border of PAD2;
 *                                its gradient gp1 is (P1S, P1S, C1), channels last
 *   s2   (O2 * O2, C2P)          conv2 output after the activation, channels last (C2P: C2 rounded up to V)
 *   f    (C2 * Q2 * Q2)          pool2 output in PyTorch's flatten order (channel, row, column)
 * Parameters arrive in PyTorch's layouts (struct Params) and are repacked once per call (see P_*).
 *
 * With BN=1 each convolution is followed by batch normalisation (before the activation). Training needs the
 * batch's statistics before anything after a convolution can go on, so forward and backward then run in
 * three phases each, with s1 and s2 holding the convolutions' raw outputs and the activations recomputed
 * from them when needed.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* V floats, one vector register: 16 with AVX-512, else 8 (AVX2's width). Loads and stores through it may be
 * unaligned and may alias float arrays. */
#ifdef __AVX512F__
#define V 16
#else
#define V 8
#endif
typedef float vf __attribute__((vector_size(4 * V), aligned(4), may_alias));
#define ROUNDV(n) ((((n) + V - 1) / V) * V)

#ifndef S
#error "compile with the shape macros (see lenet/fastpath.py)"
#endif
#ifndef BN
#define BN 0
#endif
#ifndef FC
#define FC 0
#endif
#ifndef OUT_CLIPLOG
#define OUT_CLIPLOG 0
#endif

#define ACT_NONE 0
#define ACT_SIGMOID 1
#define ACT_RELU 2
#define POOL_AVG 0
#define POOL_MAX 1

#define XS (S + 2 * PAD1)                    /* padded input side */
#define O1 (XS - K1 + 1)                     /* conv1 output side */
#define Q1 (O1 / 2)                          /* pool1 output side */
#define QP ROUNDV(Q1)                        /* lanes of one parity of a conv1 row, whole vectors */
#define QV (QP / V)
#define RS1 (2 * QP)                         /* conv1 row stride: the even columns, then the odd ones */
#define HL ROUNDV(QP + K1 / 2 + 1)           /* one parity of a padded input row: shifted loads stay inside */
#define XR (2 * HL)
#define P1S (Q1 + 2 * PAD2)                  /* padded pool1 side */
#define O2 (P1S - K2 + 1)                    /* conv2 output side */
#define Q2 (O2 / 2)                          /* pool2 output side */
#define C2P ROUNDV(C2)
#define C2V (C2P / V)
#define KC (K2 * K2 * C1)                    /* conv2 patch length */
#define KCP ROUNDV(KC)
#define KCV (KCP / V)
#define NF (C2 * Q2 * Q2)                    /* features per sample */

#define S1_SIZE (C1 * O1 * RS1)
#define P1_SIZE (P1S * P1S * C1)
#define S2_SIZE (O2 * O2 * C2P)

/* Per-thread workspace, in floats: one sample's scratch activations and gradients. */
#define WS_S1 0
#define WS_P1 (WS_S1 + ROUNDV(S1_SIZE))
#define WS_S2 (WS_P1 + ROUNDV(P1_SIZE))
#define WS_GZ2 (WS_S2 + ROUNDV(S2_SIZE))
#define WS_GP1 (WS_GZ2 + ROUNDV(S2_SIZE))
#define WS_GZ1 (WS_GP1 + ROUNDV(P1_SIZE))
#define WS_T1 (WS_GZ1 + ROUNDV(S1_SIZE))
#define WS_GCOL (WS_T1 + ROUNDV(S1_SIZE))
#define WS_ACC1 (WS_GCOL + 4 * KCP)
#define WS_THREAD (WS_ACC1 + C1 * K1 * K1 * V)

/* The gradients while they are summed: gw1 (C1, K1, K1), gb1 (C1), gw2t (K2, K2, C1, C2P), gb2 (C2P), then
 * with BN the normalisations' dgamma1, dbeta1 (C1), dgamma2, dbeta2 (C2P). lenet_backward sums them per
 * chunk of CHUNK samples, then adds the chunks' sums in chunk order: threads take chunks as they come free
 * (a core that another process holds up delays no one), and the result depends neither on the thread count
 * nor on the timing. Batch statistics are summed the same way, per chunk, in double precision. */
#define CHUNK 8
#define G_W1 0
#define G_B1 (G_W1 + C1 * K1 * K1)
#define G_W2 (G_B1 + C1)
#define G_B2 (G_W2 + K2 * K2 * C1 * C2P)
#define G_CONV (G_B2 + C2P)
#define G_SIZE (G_CONV + BN * 2 * (C1 + C2P))
#define D_SIZE (2 * (C1 + C2P)) /* per chunk: sums and second sums for layer 1, then layer 2 */

/* What the kernels use of the parameters, repacked once per call at the head of the workspace: w2t
 * (K2, K2, C1, C2P) and w2r (C2, KCP) are conv2's weight with its output channels, or a patch's (ky, kx, ci)
 * entries, contiguous; b2 padded to C2P; and the normalisations: gamma, beta, mean, variance per layer
 * (the running statistics for inference, the batch's in training). */
#define P_W2T 0
#define P_W2R (P_W2T + K2 * K2 * C1 * C2P)
#define P_B2 (P_W2R + C2 * KCP)
#define P_G1 (P_B2 + C2P)
#define P_B1 (P_G1 + C1)
#define P_M1 (P_B1 + C1)
#define P_V1 (P_M1 + C1)
#define P_G2 (P_V1 + C1)
#define P_BE2 (P_G2 + C2P)
#define P_M2 (P_BE2 + C2P)
#define P_V2 (P_M2 + C2P)
#define P_SIZE ROUNDV(P_V2 + C2P)
#define WS_TOTAL P_SIZE                      /* then the summed gradients, G_SIZE floats */
#define WS_THREADS (WS_TOTAL + ROUNDV(G_SIZE)) /* then each thread's WS_THREAD floats */

/* What PyTorch hands over, in its own layouts; absent tensors (no bias, no batch norm) are NULL. */
typedef struct {
    const float *w1, *b1;                      /* conv1: (C1, 1, K1, K1), (C1) */
    const float *w2, *b2;                      /* conv2: (C2, C1, K2, K2), (C2) */
    const float *gamma1, *beta1, *gamma2, *beta2; /* batch norms' affine parameters (NULL: 1 and 0) */
    float *mean1, *var1, *mean2, *var2;        /* running statistics: read in inference, updated in training */
    float eps, momentum;                       /* momentum: this step's factor for the running statistics */
} Params;

long lenet_workspace_floats(int threads) { return WS_THREADS + (long)threads * WS_THREAD; }
long lenet_chunk_floats(int batch) { return (long)((batch + CHUNK - 1) / CHUNK) * G_SIZE; }
long lenet_chunk_doubles(int batch) { return (long)((batch + CHUNK - 1) / CHUNK) * D_SIZE; }
int lenet_features(void) { return NF; }

/* V when compiled for AVX-512 (16) or for AVX2 with FMA (8), else 0: fastpath.py takes no other build. The
 * lane step is blocked for either's registers; the per-sample kernels for AVX-512's 32, and with AVX2's 16
 * they spill some but still beat PyTorch (an AVX2 build against PyTorch's AVX-512 kernels: inference
 * ~1.4-1.8x, batch norm training ~2.3x). Vectors twice a register's width (V = 16 on AVX2) were slower
 * than PyTorch. */
int lenet_vector_floats(void) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    return V;
#else
    return 0;
#endif
}
int lenet_s1_floats(void) { return S1_SIZE; }
int lenet_p1_floats(void) { return P1_SIZE; }
int lenet_s2_floats(void) { return S2_SIZE; }
int lenet_batch_norm(void) { return BN; }

/* exp(x) to about 1 ulp without a libm call, so that loops calling it vectorise (Cephes' expf). x is held
 * to [-87, 87]: beyond that, sigmoid's 1 / (1 + exp(x)) would leave reciprocal's range. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* 1 / a for 1 <= a <= 2^126, to about 1 ulp: a bit-level first guess and three Newton steps (a division's
 * throughput is several times lower, and sigmoid is a large part of a LeNet's pointwise work). */
static inline float reciprocal(float a) {
    int32_t bits;
    memcpy(&bits, &a, sizeof bits);
    bits = 0x7EF311C7 - bits;
    float r;
    memcpy(&r, &bits, sizeof r);
    r = r * (2.0f - a * r);
    r = r * (2.0f - a * r);
    r = r * (2.0f - a * r);
    return r;
}

static inline float act(float z, int kind) {
    if (kind == ACT_SIGMOID) return reciprocal(1.0f + exp_approx(-z));
    if (kind == ACT_RELU) return z > 0.0f ? z : 0.0f;
    return z;
}

/* d loss / d z from g = d loss / d s and the stored s = act(z), as PyTorch's *_backward ops compute it. */
static inline float dact(float g, float s, int kind) {
    if (kind == ACT_SIGMOID) return g * (1.0f - s) * s;
    if (kind == ACT_RELU) return s > 0.0f ? g : 0.0f;
    return g;
}

static inline float max2(float a, float b) { return b > a ? b : a; }

/* 2x2 pooling of a, b (top row) and c, d (bottom row), summed in PyTorch's order. */
#define POOL(kind, a, b, c, d) \
    ((kind) == POOL_AVG ? ((((a) + (b)) + (c)) + (d)) * 0.25f : max2(max2(max2((a), (b)), (c)), (d)))

/* The input image zero-padded by PAD1, each row split into its even and its odd columns (HL floats each,
 * zero beyond the image): xp[row * XR + (col % 2) * HL + col / 2] = padded image[row][col]. */
static void pad_input(const float *x, float *xp) {
    float row[2 * HL] __attribute__((aligned(64)));
    memset(xp, 0, sizeof(float) * PAD1 * XR);                    /* the rows above the image */
    memset(xp + (S + PAD1) * XR, 0, sizeof(float) * PAD1 * XR);  /* and below it */
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

/* ---------------------------------------------------------------------------------------------------- */
/* Forward, per sample */

/* conv1 + bias -> z (C1, O1, 2, QP). Per output row, the even and the odd columns are QV vectors each per
 * channel; all channels' accumulators stay in registers, every input vector is loaded once for all. */
static void conv1_rows(const float *x, const float *w1, const float *b1, float *z) {
    float xp[XS * XR] __attribute__((aligned(64)));
    pad_input(x, xp);
    for (int y = 0; y < O1; y++) {
        vf acc[C1][2][QV];
        for (int c = 0; c < C1; c++)
            for (int p = 0; p < 2; p++)
                for (int j = 0; j < QV; j++) acc[c][p][j] = (vf){0} + b1[c];
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
static void activate1(const float *z, const float *scale, const float *shift, float *s) {
    for (int c = 0; c < C1; c++) {
        const float a = BN ? scale[c] : 1.0f, b = BN ? shift[c] : 0.0f;
        const float *zc = z + c * O1 * RS1;
        float *sc = s + c * O1 * RS1;
        for (int i = 0; i < O1 * RS1; i++) sc[i] = act(BN ? a * zc[i] + b : zc[i], ACT1);
    }
}

/* pool1 of activated rows s -> p1 (rows, channels, columns; zero border). */
static void pool1(const float *s, float *p1) {
    if (PAD2) memset(p1, 0, sizeof(float) * P1_SIZE);
    for (int c = 0; c < C1; c++)
        for (int r = 0; r < Q1; r++) {
            const float *top = s + (c * O1 + 2 * r) * RS1, *bottom = top + RS1;
            float pooled[QP] __attribute__((aligned(64)));
            for (int q = 0; q < QP; q++) pooled[q] = POOL(POOL1, top[q], top[QP + q], bottom[q], bottom[QP + q]);
            memcpy(p1 + ((r + PAD2) * C1 + c) * P1S + PAD2, pooled, sizeof(float) * Q1);
        }
}

/* conv2 + bias -> z (O2 * O2, C2P), channels last. One output row at a time: O2 * C2V accumulators; per
 * patch entry one weight vector and O2 broadcast inputs. */
static void conv2_rows(const float *p1, const float *w2t, const float *b2, float *z) {
    for (int y = 0; y < O2; y++) {
        vf acc[O2][C2V];
        for (int x = 0; x < O2; x++)
            for (int v = 0; v < C2V; v++) acc[x][v] = *(const vf *)(b2 + v * V);
        for (int ky = 0; ky < K2; ky++)
            for (int kx = 0; kx < K2; kx++)
                for (int ci = 0; ci < C1; ci++) {
                    const float *w = w2t + ((ky * K2 + kx) * C1 + ci) * C2P;
                    const float *in = p1 + ((y + ky) * C1 + ci) * P1S + kx;
                    vf wv[C2V];
                    for (int v = 0; v < C2V; v++) wv[v] = *(const vf *)(w + v * V);
                    for (int x = 0; x < O2; x++) {
                        const float a = in[x];
                        for (int v = 0; v < C2V; v++) acc[x][v] += wv[v] * a;
                    }
                }
        for (int x = 0; x < O2; x++)
            for (int v = 0; v < C2V; v++) *(vf *)(z + (y * O2 + x) * C2P + v * V) = acc[x][v];
    }
}

/* s = act(scale * z + shift) with BN, else act(z), per channel of conv2's output (s may be z). */
static void activate2(const float *z, const float *scale, const float *shift, float *s) {
    for (int pos = 0; pos < O2 * O2; pos++)
        for (int c = 0; c < C2P; c++)
            s[pos * C2P + c] = act(BN ? scale[c] * z[pos * C2P + c] + shift[c] : z[pos * C2P + c], ACT2);
}

/* pool2 of activated s -> f, in PyTorch's flatten order. */
static void pool2(const float *s, float *f) {
    for (int r = 0; r < Q2; r++)
        for (int q = 0; q < Q2; q++) {
            const float *a = s + ((2 * r) * O2 + 2 * q) * C2P, *b = a + C2P, *c = a + O2 * C2P, *d = c + C2P;
            float pooled[C2P] __attribute__((aligned(64)));
            for (int ch = 0; ch < C2P; ch++) pooled[ch] = POOL(POOL2, a[ch], b[ch], c[ch], d[ch]);
            for (int ch = 0; ch < C2; ch++) f[(ch * Q2 + r) * Q2 + q] = pooled[ch];
        }
}

/* Per-channel sum and sum of squares of one sample's z, added onto sums[0..C) and sums[C..2C) (conv1: the
 * lanes inside the image only). */
static void moments1(const float *z, double *sums) {
    for (int c = 0; c < C1; c++) {
        float s = 0.0f, ss = 0.0f;
#pragma omp simd reduction(+ : s, ss)
        for (int i = 0; i < O1 * RS1; i++) {
            const float zi = z[c * O1 * RS1 + i], v = (i % QP) < Q1 ? zi : 0.0f;
            s += v;
            ss += v * v;
        }
        sums[c] += s;
        sums[C1 + c] += ss;
    }
}

static void moments2(const float *z, double *sums) {
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
/* Backward, per sample */

/* Route the gradient g of one 2x2 window (a, b top, c, d bottom, as stored after the activation) back to
 * the four conv outputs: a quarter each for average pooling; all of it to PyTorch's pick, the first
 * maximum, for max pooling; then through the activation. Branch-free, so loops over lanes vectorise. */
#define POOL_BACKWARD(kind, actkind, g, a, b, c, d, ga, gb, gc, gd)                       \
    do {                                                                                 \
        if ((kind) == POOL_AVG) {                                                        \
            const float h_ = (g) * 0.25f;                                                \
            ga = dact(h_, a, actkind);                                                   \
            gb = dact(h_, b, actkind);                                                   \
            gc = dact(h_, c, actkind);                                                   \
            gd = dact(h_, d, actkind);                                                   \
        } else {                                                                         \
            const float m_ = max2(max2(max2(a, b), c), d);                               \
            const int ka_ = (a) == m_, kb_ = !ka_ && (b) == m_;                          \
            const int kc_ = !ka_ && !kb_ && (c) == m_, kd_ = !ka_ && !kb_ && !kc_;        \
            ga = ka_ ? dact(g, a, actkind) : 0.0f;                                       \
            gb = kb_ ? dact(g, b, actkind) : 0.0f;                                       \
            gc = kc_ ? dact(g, c, actkind) : 0.0f;                                       \
            gd = kd_ ? dact(g, d, actkind) : 0.0f;                                       \
        }                                                                                \
    } while (0)

/* pool2 and act2 backward: g (NF) -> gz2 (O2 * O2, C2P), padding lanes zero. */
static void pool2_backward(const float *g, const float *s2, float *gz2) {
    for (int r = 0; r < Q2; r++)
        for (int q = 0; q < Q2; q++) {
            const int i0 = ((2 * r) * O2 + 2 * q) * C2P, i1 = i0 + C2P, i2 = i0 + O2 * C2P, i3 = i2 + C2P;
            float gq[C2P] __attribute__((aligned(64)));
            for (int ch = 0; ch < C2P; ch++) gq[ch] = ch < C2 ? g[(ch * Q2 + r) * Q2 + q] : 0.0f;
            for (int ch = 0; ch < C2P; ch++)
                POOL_BACKWARD(POOL2, ACT2, gq[ch], s2[i0 + ch], s2[i1 + ch], s2[i2 + ch], s2[i3 + ch],
                              gz2[i0 + ch], gz2[i1 + ch], gz2[i2 + ch], gz2[i3 + ch]);
        }
    if (O2 % 2) { /* the last row and column that pooling dropped get no gradient */
        for (int x = 0; x < O2; x++) memset(gz2 + ((O2 - 1) * O2 + x) * C2P, 0, sizeof(float) * C2P);
        for (int y = 0; y < O2; y++) memset(gz2 + (y * O2 + O2 - 1) * C2P, 0, sizeof(float) * C2P);
    }
}

/* conv2's weight gradient: gw2t[ky][kx][ci] += sum over positions of p1[y + ky][x + kx][ci] * gz2[y][x]. */
static void conv2_weight_grad(const float *p1, const float *gz2, float *gw2t) {
    for (int ky = 0; ky < K2; ky++)
        for (int kx = 0; kx < K2; kx++) {
            vf acc[C1][C2V];
            for (int ci = 0; ci < C1; ci++)
                for (int v = 0; v < C2V; v++) acc[ci][v] = (vf){0};
            for (int y = 0; y < O2; y++)
                for (int x = 0; x < O2; x++) {
                    const float *g = gz2 + (y * O2 + x) * C2P;
                    const float *in = p1 + (y + ky) * C1 * P1S + x + kx;
                    vf gv[C2V];
                    for (int v = 0; v < C2V; v++) gv[v] = *(const vf *)(g + v * V);
                    for (int ci = 0; ci < C1; ci++)
                        for (int v = 0; v < C2V; v++) acc[ci][v] += gv[v] * in[ci * P1S];
                }
            float *out = gw2t + (ky * K2 + kx) * C1 * C2P;
            for (int ci = 0; ci < C1; ci++)
                for (int v = 0; v < C2V; v++) *(vf *)(out + ci * C2P + v * V) += acc[ci][v];
        }
}

/* conv2's input gradient: each output position's patch gradient gz2[y][x] @ w2r (KCP floats, two positions
 * at a time to share the weight loads), added onto gp1 (channels last, border included). */
static void conv2_input_grad(const float *gz2, const float *w2r, float *gp1, float *gcol) {
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
            for (int q = 0; q < QP; q++)
                POOL_BACKWARD(POOL1, ACT1, gq[q], top[q], top[QP + q], bottom[q], bottom[QP + q], gtop[q],
                              gtop[QP + q], gbottom[q], gbottom[QP + q]);
        }
        if (O1 % 2) memset(gz1 + (c * O1 + O1 - 1) * RS1, 0, sizeof(float) * RS1); /* pooling dropped it */
    }
}

/* conv1's weight and bias gradients, lane-wise: acc1[c][ky][kx] (a vector of partial sums) += gz1[c][y]
 * * the inputs that met it, and gb1[c] += the sum of gz1[c]. */
static void conv1_weight_grad(const float *x, const float *gz1, float *acc1, float *gb1) {
    float xp[XS * XR] __attribute__((aligned(64)));
    pad_input(x, xp);
    for (int c = 0; c < C1; c++) {
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < O1 * RS1; i++) sum += gz1[c * O1 * RS1 + i];
        gb1[c] += sum;
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
/* Batch normalisation's batch-wide sums */

/* Add the chunks' partial sums in chunk order: out[k] = sum over chunks of part[chunk * D_SIZE + from + k]. */
static void sum_chunks(const double *part, int chunks, int from, int count, double *out) {
    for (int k = 0; k < count; k++) {
        double total = 0.0;
        for (int chunk = 0; chunk < chunks; chunk++) total += part[(long)chunk * D_SIZE + from + k];
        out[k] = total;
    }
}

/* scale = gamma / sqrt(var + eps) and shift = beta - mean * scale: the normalisation as an affine map. */
static void affine(const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                   int channels, float *scale, float *shift) {
    for (int c = 0; c < channels; c++) {
        scale[c] = gamma[c] / sqrtf(var[c] + eps);
        shift[c] = beta[c] - mean[c] * scale[c];
    }
}

/* A layer's batch mean and biased variance from its summed moments over n values, into the packed
 * parameters and `stats`; the running statistics move by `momentum` (with the unbiased variance). */
static void batch_moments(const double *sums, int channels, int real, double n, float *mean, float *var,
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
            running_mean[c] = momentum * mean[c] + (1.0f - momentum) * running_mean[c];
            running_var[c] = momentum * (float)(var[c] * n / (n > 1.0 ? n - 1.0 : 1.0)) + (1.0f - momentum) * running_var[c];
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

static inline float bn_backward(float gy, float z, const float *k) { return k[0] * (gy - k[1] - (z - k[3]) * k[4] * k[2]); }

/* Repack the parameters into the workspace (see P_*); the normalisations' statistics come from `stats`
 * (the batch's, as lenet_forward wrote them) or, when it is NULL, from the running ones. */
static void pack(const Params *prm, const float *stats, float *packed) {
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

#define FOR_SAMPLES(chunk) for (int i = (chunk) * CHUNK; i < batch && i < ((chunk) + 1) * CHUNK; i++)

/* ---------------------------------------------------------------------------------------------------- */
/* The entry points */

/* Forward through the front end: f (B, NF). With s1, p1, s2 NULL nothing is kept (inference); otherwise
 * they are filled, (B, S1_SIZE), (B, P1_SIZE) and (B, S2_SIZE), for lenet_backward. With BN and `train`,
 * the batch's statistics normalise (and are written to stats: mean1, var1 (C1 each), mean2, var2 (C2 each),
 * biased variances; s1, p1, s2 and dsum, lenet_chunk_doubles(batch) doubles, are needed) and the running
 * statistics move by prm->momentum; otherwise the running statistics normalise. */
void lenet_forward(int batch, int threads, const Params *prm, int train, const float *x, float *stats, float *s1,
                   float *p1, float *s2, float *f, float *ws, double *dsum) {
    const int chunks = (batch + CHUNK - 1) / CHUNK;
    const int phased = BN && train;
    float *packed = ws;
    pack(prm, NULL, packed);
    const float *w1 = prm->w1, *w2t = packed + P_W2T, *b2 = packed + P_B2;
    float b1[C1], scale1[C1], shift1[C1], scale2[C2P], shift2[C2P];
    for (int c = 0; c < C1; c++) b1[c] = prm->b1 ? prm->b1[c] : 0.0f;
    if (BN && !train) {
        affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, prm->eps, C1, scale1, shift1);
        affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, prm->eps, C2P, scale2, shift2);
    }
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *w = ws + WS_THREADS + (long)t * WS_THREAD;
        if (!phased) {
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < chunks; chunk++)
                FOR_SAMPLES(chunk) {
                    float *ps1 = s1 ? s1 + (long)i * S1_SIZE : w + WS_S1;
                    float *pp1 = p1 ? p1 + (long)i * P1_SIZE : w + WS_P1;
                    float *ps2 = s2 ? s2 + (long)i * S2_SIZE : w + WS_S2;
                    conv1_rows(x + (long)i * S * S, w1, b1, ps1);
                    activate1(ps1, scale1, shift1, ps1);
                    pool1(ps1, pp1);
                    conv2_rows(pp1, w2t, b2, ps2);
                    activate2(ps2, scale2, shift2, ps2);
                    pool2(ps2, f + (long)i * NF);
                }
        } else {
            /* 1: conv1 and its moments */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < chunks; chunk++) {
                double *part = dsum + (long)chunk * D_SIZE;
                memset(part, 0, sizeof(double) * D_SIZE);
                FOR_SAMPLES(chunk) {
                    conv1_rows(x + (long)i * S * S, w1, b1, s1 + (long)i * S1_SIZE);
                    moments1(s1 + (long)i * S1_SIZE, part);
                }
            }
#pragma omp single
            {
                double sums[2 * C1];
                sum_chunks(dsum, chunks, 0, 2 * C1, sums);
                batch_moments(sums, C1, C1, (double)batch * O1 * O1, packed + P_M1, packed + P_V1, stats,
                              prm->mean1, prm->var1, prm->momentum);
                affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, prm->eps, C1, scale1, shift1);
            }
            /* 2: conv1's output normalised, activated and pooled; conv2 and its moments */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < chunks; chunk++) {
                double *part = dsum + (long)chunk * D_SIZE + 2 * C1;
                FOR_SAMPLES(chunk) {
                    activate1(s1 + (long)i * S1_SIZE, scale1, shift1, w + WS_T1);
                    pool1(w + WS_T1, p1 + (long)i * P1_SIZE);
                    conv2_rows(p1 + (long)i * P1_SIZE, w2t, b2, s2 + (long)i * S2_SIZE);
                    moments2(s2 + (long)i * S2_SIZE, part);
                }
            }
#pragma omp single
            {
                double sums[2 * C2P];
                sum_chunks(dsum, chunks, 2 * C1, 2 * C2P, sums);
                batch_moments(sums, C2P, C2, (double)batch * O2 * O2, packed + P_M2, packed + P_V2, stats + 2 * C1,
                              prm->mean2, prm->var2, prm->momentum);
                affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, prm->eps, C2P, scale2, shift2);
            }
            /* 3: conv2's output normalised, activated and pooled */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < chunks; chunk++)
                FOR_SAMPLES(chunk) {
                    activate2(s2 + (long)i * S2_SIZE, scale2, shift2, w + WS_S2);
                    pool2(w + WS_S2, f + (long)i * NF);
                }
        }
    }
}

/* conv2's gradients from gz2 (d loss / d its raw output), then pool1 and act1 backward into the workspace's
 * gz1, given conv1's activated output s1. */
static void backward_conv2(const float *gz2, const float *p1, const float *w2r, const float *s1, float *g, float *w) {
    for (int pos = 0; pos < O2 * O2; pos++)
        for (int v = 0; v < C2V; v++) *(vf *)(g + G_B2 + v * V) += *(const vf *)(gz2 + pos * C2P + v * V);
    conv2_weight_grad(p1, gz2, g + G_W2);
    conv2_input_grad(gz2, w2r, w + WS_GP1, w + WS_GCOL);
    pool1_backward(w + WS_GP1, s1, w + WS_GZ1);
}

/* conv1's per-lane weight-gradient sums, reduced into the chunk's gw1. */
static void finish_conv1(const float *acc1, float *g) {
    for (int k = 0; k < C1 * K1 * K1; k++) {
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) sum += acc1[k * V + i];
        g[G_W1 + k] = sum;
    }
}

/* Backward through the front end: from gf (B, NF) = d loss / d f, the gradients summed over the batch, in
 * PyTorch's layouts, one after the other: conv1's weight and bias, conv2's weight and bias, then with BN
 * each norm's gamma and beta (lenet_grad_floats() floats). `stats` is what lenet_forward wrote when
 * training. `chunks` has room for lenet_chunk_floats(batch) floats; with BN, also dsum
 * (lenet_chunk_doubles(batch) doubles), gy1 (B, S1_SIZE) and gy2 (B, S2_SIZE). */
void lenet_backward(int batch, int threads, const Params *prm, const float *stats, const float *x, const float *s1,
                    const float *p1, const float *s2, const float *gf, float *gy1, float *gy2, float *grads,
                    float *chunks, double *dsum, float *ws) {
    const int n_chunks = (batch + CHUNK - 1) / CHUNK;
    const float eps = prm->eps;
    float *packed = ws, *total = ws + WS_TOTAL;
    pack(prm, stats, packed);
    const float *w2r = packed + P_W2R;
    float scale1[C1], shift1[C1], scale2[C2P], shift2[C2P], invstd2[C2P], k1[C1][5], k2[C2P][5];
    if (BN) {
        affine(packed + P_G1, packed + P_B1, packed + P_M1, packed + P_V1, eps, C1, scale1, shift1);
        affine(packed + P_G2, packed + P_BE2, packed + P_M2, packed + P_V2, eps, C2P, scale2, shift2);
        for (int c = 0; c < C2P; c++) invstd2[c] = 1.0f / sqrtf(packed[P_V2 + c] + eps);
    }
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *w = ws + WS_THREADS + (long)t * WS_THREAD;
        float *acc1 = w + WS_ACC1, *gz2 = w + WS_GZ2, *gz1 = w + WS_GZ1;
        if (!BN) {
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < n_chunks; chunk++) {
                float *g = chunks + (long)chunk * G_SIZE;
                memset(g, 0, sizeof(float) * G_SIZE);
                memset(acc1, 0, sizeof(float) * C1 * K1 * K1 * V);
                FOR_SAMPLES(chunk) {
                    pool2_backward(gf + (long)i * NF, s2 + (long)i * S2_SIZE, gz2);
                    backward_conv2(gz2, p1 + (long)i * P1_SIZE, w2r, s1 + (long)i * S1_SIZE, g, w);
                    conv1_weight_grad(x + (long)i * S * S, gz1, acc1, g + G_B1);
                }
                finish_conv1(acc1, g);
            }
        } else {
            /* 1: pool2 and act2 backward -> gy2 (d loss / d conv2's normalised output), and its sums */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < n_chunks; chunk++) {
                double *part = dsum + (long)chunk * D_SIZE;
                float sg[C2P] = {0}, sgx[C2P] = {0};
                FOR_SAMPLES(chunk) {
                    const float *z = s2 + (long)i * S2_SIZE;
                    float *gy = gy2 + (long)i * S2_SIZE;
                    activate2(z, scale2, shift2, w + WS_S2);
                    pool2_backward(gf + (long)i * NF, w + WS_S2, gy);
                    for (int pos = 0; pos < O2 * O2; pos++)
                        for (int c = 0; c < C2P; c++) {
                            const float xhat = (z[pos * C2P + c] - packed[P_M2 + c]) * invstd2[c];
                            sg[c] += gy[pos * C2P + c];
                            sgx[c] += gy[pos * C2P + c] * xhat;
                        }
                }
                for (int c = 0; c < C2P; c++) {
                    part[2 * C1 + c] = sg[c];
                    part[2 * C1 + C2P + c] = sgx[c];
                }
            }
#pragma omp single
            {
                double sums[2 * C2P];
                sum_chunks(dsum, n_chunks, 2 * C1, 2 * C2P, sums);
                for (int c = 0; c < C2P; c++) {
                    total[G_CONV + 2 * C1 + c] = (float)sums[C2P + c]; /* dgamma2 */
                    total[G_CONV + 2 * C1 + C2P + c] = (float)sums[c]; /* dbeta2 */
                    bn_coefficients(packed[P_G2 + c], packed[P_M2 + c], packed[P_V2 + c], eps, sums[c],
                                    sums[C2P + c], (double)batch * O2 * O2, k2[c]);
                }
            }
            /* 2: batch norm 2 backward -> gz2; conv2's gradients; pool1 and act1 backward -> gy1, its sums */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < n_chunks; chunk++) {
                float *g = chunks + (long)chunk * G_SIZE;
                double *part = dsum + (long)chunk * D_SIZE;
                memset(g, 0, sizeof(float) * G_SIZE);
                float sg[C1] = {0}, sgx[C1] = {0};
                FOR_SAMPLES(chunk) {
                    const float *z = s2 + (long)i * S2_SIZE, *gy = gy2 + (long)i * S2_SIZE;
                    for (int pos = 0; pos < O2 * O2; pos++)
                        for (int c = 0; c < C2P; c++)
                            gz2[pos * C2P + c] = bn_backward(gy[pos * C2P + c], z[pos * C2P + c], k2[c]);
                    const float *z1 = s1 + (long)i * S1_SIZE;
                    activate1(z1, scale1, shift1, w + WS_T1);
                    backward_conv2(gz2, p1 + (long)i * P1_SIZE, w2r, w + WS_T1, g, w);
                    float *out = gy1 + (long)i * S1_SIZE;
                    memcpy(out, gz1, sizeof(float) * S1_SIZE);
                    for (int c = 0; c < C1; c++) {
                        const float invstd = 1.0f / sqrtf(packed[P_V1 + c] + eps), mean = packed[P_M1 + c];
                        float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
                        for (int k = 0; k < O1 * RS1; k++) { /* out is zero on the lanes beyond the image */
                            a += out[c * O1 * RS1 + k];
                            b += out[c * O1 * RS1 + k] * ((z1[c * O1 * RS1 + k] - mean) * invstd);
                        }
                        sg[c] += a;
                        sgx[c] += b;
                    }
                }
                for (int c = 0; c < C1; c++) {
                    part[c] = sg[c];
                    part[C1 + c] = sgx[c];
                }
            }
#pragma omp single
            {
                double sums[2 * C1];
                sum_chunks(dsum, n_chunks, 0, 2 * C1, sums);
                for (int c = 0; c < C1; c++) {
                    total[G_CONV + c] = (float)sums[C1 + c]; /* dgamma1 */
                    total[G_CONV + C1 + c] = (float)sums[c]; /* dbeta1 */
                    bn_coefficients(packed[P_G1 + c], packed[P_M1 + c], packed[P_V1 + c], eps, sums[c],
                                    sums[C1 + c], (double)batch * O1 * O1, k1[c]);
                }
            }
            /* 3: batch norm 1 backward -> gz1 (zero beyond the image); conv1's gradients */
#pragma omp for schedule(dynamic, 1)
            for (int chunk = 0; chunk < n_chunks; chunk++) {
                float *g = chunks + (long)chunk * G_SIZE;
                memset(acc1, 0, sizeof(float) * C1 * K1 * K1 * V);
                FOR_SAMPLES(chunk) {
                    const float *z1 = s1 + (long)i * S1_SIZE, *gy = gy1 + (long)i * S1_SIZE;
                    for (int c = 0; c < C1; c++)
                        for (int k = 0; k < O1 * RS1; k++) {
                            const float gz = bn_backward(gy[c * O1 * RS1 + k], z1[c * O1 * RS1 + k], k1[c]);
                            gz1[c * O1 * RS1 + k] = (k % QP) < Q1 ? gz : 0.0f;
                        }
                    conv1_weight_grad(x + (long)i * S * S, gz1, acc1, g + G_B1);
                }
                finish_conv1(acc1, g);
            }
        }
        /* the chunks' sums, in chunk order (vectors of the block split among threads) */
#pragma omp for schedule(static)
        for (int k = 0; k < G_CONV; k += V) {
            if (k + V <= G_CONV) {
                vf sum = *(const vf *)(chunks + k);
                for (int chunk = 1; chunk < n_chunks; chunk++) sum += *(const vf *)(chunks + (long)chunk * G_SIZE + k);
                *(vf *)(total + k) = sum;
            } else {
                for (int j = k; j < G_CONV; j++) {
                    float sum = chunks[j];
                    for (int chunk = 1; chunk < n_chunks; chunk++) sum += chunks[(long)chunk * G_SIZE + j];
                    total[j] = sum;
                }
            }
        }
    }
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

int lenet_grad_floats(void) { return C1 * K1 * K1 + C1 + C2 * C1 * K2 * K2 + C2 + BN * 2 * (C1 + C2); }

/* ---------------------------------------------------------------------------------------------------- */
/* The classifier, for training: Linear(NF, H1) -> act -> Linear(H1, H2) -> act -> Linear(H2, NCLS), then
 * cross-entropy with label smoothing; forward, loss and backward in one pass over the batch, so that a
 * training step's classifier costs no PyTorch operations. Compiled when FC=1. */
#if FC
#define F1P ROUNDV(H1)
#define F2P ROUNDV(H2)
#define F3P ROUNDV(NCLS)
#define NFP ROUNDV(NF)
#define FCHUNK 48 /* samples per chunk of the classifier: its weight gradients are summed per chunk */

/* Repacked weights (in-major for the forward, padded out-major for the input gradients) and biases, at the
 * head of the workspace; then each chunk's partial sums (C_SIZE floats each); then each thread's rows. */
#define Q_W1T 0                                 /* (NF, F1P) */
#define Q_W2T (Q_W1T + NF * F1P)                /* (H1, F2P) */
#define Q_W3T (Q_W2T + H1 * F2P)                /* (H2, F3P) */
#define Q_W1 (Q_W3T + H2 * F3P)                 /* (H1, NFP) */
#define Q_W2 (Q_W1 + H1 * NFP)                  /* (H2, F1P) */
#define Q_W3 (Q_W2 + H2 * F1P)                  /* (NCLS, F2P) */
#define Q_B (Q_W3 + NCLS * F2P)                 /* biases: F1P, F2P, F3P */
#define Q_SIZE ROUNDV(Q_B + F1P + F2P + F3P)
#define C_W1 0                                  /* partial sums: gW1 (H1, NFP), gb1 (F1P), gW2 (H2, F1P), ... */
#define C_B1 (C_W1 + H1 * NFP)
#define C_W2 (C_B1 + F1P)
#define C_B2 (C_W2 + H2 * F1P)
#define C_W3 (C_B2 + F2P)
#define C_B3 (C_W3 + NCLS * F2P)
#define C_LOSS (C_B3 + F3P)                     /* the chunk's summed loss and correct count */
#define C_SIZE ROUNDV(C_LOSS + 2)
#define T_H1 0                                  /* per thread, for one chunk: h1, h2, logits' gradient, ... */
#define T_H2 (T_H1 + FCHUNK * F1P)
#define T_DZ (T_H2 + FCHUNK * F2P)
#define T_G2 (T_DZ + FCHUNK * F3P)
#define T_G1 (T_G2 + FCHUNK * F2P)
#define T_FP (T_G1 + FCHUNK * F1P)              /* f's rows padded to NFP (when NF is not whole vectors) */
#define T_GF (T_FP + FCHUNK * NFP)              /* and gf's */
#define C_THREAD (T_GF + FCHUNK * NFP)

typedef struct {
    const float *w1, *b1, *w2, *b2, *w3, *b3; /* PyTorch's Linear weights (out, in) and biases */
} Classifier;

long lenet_classifier_workspace_floats(int batch, int threads) {
    return Q_SIZE + (long)((batch + FCHUNK - 1) / FCHUNK) * C_SIZE + (long)threads * C_THREAD;
}
int lenet_classifier_grad_floats(void) { return H1 * NF + H1 + H2 * H1 + H2 + NCLS * H2 + NCLS; }

/* The classifier's matrix products, all as C[i][j] (+)= sum_t A[i][t] B[t][j], j in whole vectors: a block
 * of 6 rows by NV vectors of C is 6 * NV accumulators in registers; each step t loads NV vectors of B and
 * broadcasts 6 values of A (rows of A given by pointers, a_t apart; rows of B b_t apart). */
#define DEFINE_BLOCK(NV)                                                                                      \
    static void block6x##NV(int steps, const float *const *a, long a_t, const float *b, long b_t,             \
                            float *const *c, int accumulate) {                                                \
        vf acc[6][NV];                                                                                        \
        for (int i = 0; i < 6; i++)                                                                           \
            for (int v = 0; v < NV; v++) acc[i][v] = accumulate && c[i] ? *(const vf *)(c[i] + v * V) : (vf){0}; \
        for (int t = 0; t < steps; t++) {                                                                     \
            vf bv[NV];                                                                                        \
            for (int v = 0; v < NV; v++) bv[v] = *(const vf *)(b + t * b_t + v * V);                          \
            for (int i = 0; i < 6; i++) {                                                                     \
                const float av = a[i][t * a_t];                                                               \
                for (int v = 0; v < NV; v++) acc[i][v] += bv[v] * av;                                         \
            }                                                                                                 \
        }                                                                                                     \
        for (int i = 0; i < 6; i++)                                                                           \
            if (c[i])                                                                                         \
                for (int v = 0; v < NV; v++) *(vf *)(c[i] + v * V) = acc[i][v];                               \
    }
DEFINE_BLOCK(1)
DEFINE_BLOCK(2)
DEFINE_BLOCK(3)
DEFINE_BLOCK(4)

/* C (rows x cols, rows c_row apart) (+)= A (rows x steps; element (i, t) at a + i * a_row + t * a_t) times
 * B (steps x cols, rows b_t apart); cols a multiple of V. Rows beyond the last block are computed on row 0's
 * data and not stored. */
static void product(int rows, int cols, int steps, const float *a, long a_row, long a_t, const float *b, long b_t,
                    float *c, long c_row, int accumulate) {
    for (int i0 = 0; i0 < rows; i0 += 6) {
        const float *ap[6];
        float *cp[6];
        for (int i = 0; i < 6; i++) {
            ap[i] = a + (long)(i0 + i < rows ? i0 + i : i0) * a_row;
            cp[i] = i0 + i < rows ? c + (long)(i0 + i) * c_row : NULL;
        }
        for (int j0 = 0; j0 < cols; j0 += 4 * V) {
            float *cj[6];
            for (int i = 0; i < 6; i++) cj[i] = cp[i] ? cp[i] + j0 : NULL;
            switch ((cols - j0) / V < 4 ? (cols - j0) / V : 4) {
            case 1: block6x1(steps, ap, a_t, b + j0, b_t, cj, accumulate); break;
            case 2: block6x2(steps, ap, a_t, b + j0, b_t, cj, accumulate); break;
            case 3: block6x3(steps, ap, a_t, b + j0, b_t, cj, accumulate); break;
            default: block6x4(steps, ap, a_t, b + j0, b_t, cj, accumulate); break;
            }
        }
    }
}

/* y = act(y + bias) on n rows of `width` floats (the bias broadcast along rows). */
static void bias_act(int n, int width, const float *bias, float *y, int kind) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < width; i++) y[s * width + i] = act(y[s * width + i] + bias[i], kind);
}

/* sums[o] += sum over n rows of g[row][o] (rows `width` floats). */
static void column_sums(int n, int width, const float *g, float *sums) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < width; i++) sums[i] += g[s * width + i];
}

/* One training step's classifier: from f (B, NF) and labels y, the summed per-sample loss and the number of
 * correct predictions (out[0], out[1]); gf (B, NF), d loss / d f; and the classifier's weight and bias
 * gradients in PyTorch's layouts, one after the other (lenet_classifier_grad_floats() floats). The loss of
 * a sample is PyTorch's cross-entropy with label smoothing; every gradient is scaled by `scale` (the
 * trainer's 1 / denominator). Returns -1 if a label is out of range, else 0. */
int lenet_classifier(int batch, int threads, const Classifier *prm, const float *f, const int64_t *y,
                     float smoothing, float scale, float *gf, float *grads, float *out, float *ws) {
    if (OUT_CLIPLOG) return -2; /* Keras' head is lenet_step's alone (fastpath.py never asks this for it) */
    for (int i = 0; i < batch; i++)
        if (y[i] < 0 || y[i] >= NCLS) return -1;
    const int chunks = (batch + FCHUNK - 1) / FCHUNK;
    float *q = ws, *parts = ws + Q_SIZE;
    const float *b1 = q + Q_B, *b2 = b1 + F1P, *b3 = b2 + F2P;
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        /* repack the weights, row by row (rows of the transposed copies: input features) */
#pragma omp for schedule(static)
        for (int k = 0; k < NF; k++) {
            float *row = q + Q_W1T + k * F1P;
            for (int o = 0; o < F1P; o++) row[o] = o < H1 ? prm->w1[o * NF + k] : 0.0f;
        }
#pragma omp for schedule(static) nowait
        for (int o = 0; o < H1; o++) {
            float *row = q + Q_W1 + o * NFP;
            memcpy(row, prm->w1 + o * NF, sizeof(float) * NF);
            for (int k = NF; k < NFP; k++) row[k] = 0.0f;
        }
#pragma omp single
        {
            for (int k = 0; k < H1; k++)
                for (int o = 0; o < F2P; o++) q[Q_W2T + k * F2P + o] = o < H2 ? prm->w2[o * H1 + k] : 0.0f;
            for (int k = 0; k < H2; k++)
                for (int o = 0; o < F3P; o++) q[Q_W3T + k * F3P + o] = o < NCLS ? prm->w3[o * H2 + k] : 0.0f;
            for (int o = 0; o < H2; o++)
                for (int k = 0; k < F1P; k++) q[Q_W2 + o * F1P + k] = k < H1 ? prm->w2[o * H1 + k] : 0.0f;
            for (int o = 0; o < NCLS; o++)
                for (int k = 0; k < F2P; k++) q[Q_W3 + o * F2P + k] = k < H2 ? prm->w3[o * H2 + k] : 0.0f;
            float *b = q + Q_B;
            for (int o = 0; o < F1P + F2P + F3P; o++) b[o] = 0.0f;
            for (int o = 0; o < H1; o++) b[o] = prm->b1 ? prm->b1[o] : 0.0f;
            for (int o = 0; o < H2; o++) b[F1P + o] = prm->b2 ? prm->b2[o] : 0.0f;
            for (int o = 0; o < NCLS; o++) b[F1P + F2P + o] = prm->b3 ? prm->b3[o] : 0.0f;
        } /* (the barrier at its end: every thread sees the whole repacked copy) */
        float *w = ws + Q_SIZE + (long)chunks * C_SIZE + (long)t * C_THREAD;
        float *h1 = w + T_H1, *h2 = w + T_H2, *dz = w + T_DZ, *g2 = w + T_G2, *g1 = w + T_G1;
#pragma omp for schedule(dynamic, 1)
        for (int chunk = 0; chunk < chunks; chunk++) {
            float *part = parts + (long)chunk * C_SIZE;
            memset(part, 0, sizeof(float) * C_SIZE);
            const int start = chunk * FCHUNK, n = batch - start < FCHUNK ? batch - start : FCHUNK;
            const float *x = f + (long)start * NF;
            long xrow = NF;
            if (NF != NFP) { /* rows of f padded to whole vectors, for the weight gradient */
                float *fp = w + T_FP;
                memset(fp, 0, sizeof(float) * FCHUNK * NFP);
                for (int s = 0; s < n; s++) memcpy(fp + s * NFP, x + s * NF, sizeof(float) * NF);
                x = fp;
                xrow = NFP;
            }
            /* forward */
            product(n, F1P, NF, x, xrow, 1, q + Q_W1T, F1P, h1, F1P, 0);
            bias_act(n, F1P, b1, h1, ACTF);
            product(n, F2P, H1, h1, F1P, 1, q + Q_W2T, F2P, h2, F2P, 0);
            bias_act(n, F2P, b2, h2, ACTF);
            product(n, F3P, H2, h2, F2P, 1, q + Q_W3T, F3P, dz, F3P, 0);
            bias_act(n, F3P, b3, dz, ACT_NONE);
            /* loss, correct count, d loss / d logits (in place of the logits) */
            float loss = 0.0f, correct = 0.0f;
            for (int s = 0; s < n; s++) {
                float *z = dz + s * F3P;
                const int label = (int)y[start + s];
                float m = z[0];
                int best = 0;
                for (int o = 1; o < NCLS; o++)
                    if (z[o] > m) {
                        m = z[o];
                        best = o;
                    }
                double sum = 0.0;
                for (int o = 0; o < NCLS; o++) sum += exp((double)(z[o] - m));
                const float lse = m + (float)log(sum);
                float mean_logp = 0.0f;
                for (int o = 0; o < NCLS; o++) mean_logp += z[o] - lse;
                mean_logp /= NCLS;
                loss += -(1.0f - smoothing) * (z[label] - lse) - smoothing * mean_logp;
                correct += best == label;
                for (int o = 0; o < F3P; o++) {
                    const float p = o < NCLS ? expf(z[o] - lse) : 0.0f;
                    const float target = o < NCLS ? smoothing / NCLS + (o == label ? 1.0f - smoothing : 0.0f) : 0.0f;
                    z[o] = (p - target) * scale;
                }
            }
            part[C_LOSS] = loss;
            part[C_LOSS + 1] = correct;
            /* backward: g2 = dz W3 * act'(h2), g1 = g2 W2 * act'(h1), gf = g1 W1 */
            product(n, F2P, NCLS, dz, F3P, 1, q + Q_W3, F2P, g2, F2P, 0);
            for (int s = 0; s < n; s++)
                for (int i = 0; i < F2P; i++) g2[s * F2P + i] = i < H2 ? dact(g2[s * F2P + i], h2[s * F2P + i], ACTF) : 0.0f;
            product(n, F1P, H2, g2, F2P, 1, q + Q_W2, F1P, g1, F1P, 0);
            for (int s = 0; s < n; s++)
                for (int i = 0; i < F1P; i++) g1[s * F1P + i] = i < H1 ? dact(g1[s * F1P + i], h1[s * F1P + i], ACTF) : 0.0f;
            if (NF == NFP) {
                product(n, NFP, H1, g1, F1P, 1, q + Q_W1, NFP, gf + (long)start * NF, NF, 0);
            } else {
                float *row = w + T_GF;
                product(n, NFP, H1, g1, F1P, 1, q + Q_W1, NFP, row, NFP, 0);
                for (int s = 0; s < n; s++) memcpy(gf + (long)(start + s) * NF, row + s * NFP, sizeof(float) * NF);
            }
            /* the chunk's weight gradients: gW[o][k] = sum_s g[s][o] x[s][k] */
            product(NCLS, F2P, n, dz, 1, F3P, h2, F2P, part + C_W3, F2P, 0);
            product(H2, F1P, n, g2, 1, F2P, h1, F1P, part + C_W2, F1P, 0);
            product(H1, NFP, n, g1, 1, F1P, x, xrow, part + C_W1, NFP, 0);
            column_sums(n, F3P, dz, part + C_B3);
            column_sums(n, F2P, g2, part + C_B2);
            column_sums(n, F1P, g1, part + C_B1);
        }
        /* the chunks' sums, in chunk order, into chunk 0's slot (vectors of the slot split among threads) */
#pragma omp for schedule(static)
        for (int k = 0; k < C_SIZE; k += V) {
            vf sum = *(const vf *)(parts + k);
            for (int chunk = 1; chunk < chunks; chunk++) sum += *(const vf *)(parts + (long)chunk * C_SIZE + k);
            *(vf *)(parts + k) = sum;
        }
    }
    float *g = grads;
    for (int o = 0; o < H1; o++, g += NF) memcpy(g, parts + C_W1 + o * NFP, sizeof(float) * NF);
    memcpy(g, parts + C_B1, sizeof(float) * H1), g += H1;
    for (int o = 0; o < H2; o++, g += H1) memcpy(g, parts + C_W2 + o * F1P, sizeof(float) * H1);
    memcpy(g, parts + C_B2, sizeof(float) * H2), g += H2;
    for (int o = 0; o < NCLS; o++, g += H2) memcpy(g, parts + C_W3 + o * F2P, sizeof(float) * H2);
    memcpy(g, parts + C_B3, sizeof(float) * NCLS);
    out[0] = parts[C_LOSS];
    out[1] = parts[C_LOSS + 1];
    return 0;
}
#endif

/* ---------------------------------------------------------------------------------------------------- */
/* A whole training step, V samples per vector: FC=1 without batch norm, compiled for AVX-512 (V = 16) or for
 * AVX2 with FMA (V = 8).
 *
 * Here a group of V samples is laid out with the sample as the fastest axis ("lanes"): every pixel of every
 * feature map is one vector holding that pixel of the V samples. A convolution is then a sum of vector x
 * broadcast-weight products with no shuffles, blocked so that its accumulators stay in the registers (ACC
 * of AVX-512's 32, of AVX2's 16; with AVX-512 the FMA units stay busy: ~95 % of their peak), and
 * activations, pooling and their gradients are lane-wise. The blocking is in register counts, so the same
 * code serves both widths, and an AVX2 group costs about what an AVX-512 one does for half the samples. A
 * thread takes a group through the whole step, front end, classifier, loss and back, while its activations
 * (~0.6 MB with AVX-512, half that with AVX2) sit in its core's L2 cache; what the classifier's weight gradients need
 * is kept per group, and they are summed over the whole batch at the end, in blocks shared among the
 * threads. Every sum over samples runs in a fixed order (the front end's per group, then over the groups in
 * order), so no result depends on the thread count. */
#if FC && !BN && Q1 <= 16 && O2 <= 16 && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
#define LANES 1
#else
#define LANES 0
#endif
int lenet_step_supported(void) { return LANES; }

#if LANES
#include <immintrin.h>

typedef int32_t vi __attribute__((vector_size(4 * V), aligned(4), may_alias));

/* the kernels stay separate functions: inlined into one, they compete for the registers */
#define NOINLINE __attribute__((noinline))
#if V == 16
#define ACC 24 /* accumulators a kernel keeps in registers (of AVX-512's 32) */
#else
#define ACC 12 /* (of AVX2's 16) */
#endif
/* the largest divisor of n up to min(m, 8) */
#define DIV_LE(n, m) ((m) >= 8 && (n) % 8 == 0 ? 8 : (m) >= 7 && (n) % 7 == 0 ? 7 : (m) >= 6 && (n) % 6 == 0 ? 6 \
    : (m) >= 5 && (n) % 5 == 0 ? 5 : (m) >= 4 && (n) % 4 == 0 ? 4 : (m) >= 3 && (n) % 3 == 0 ? 3            \
    : (m) >= 2 && (n) % 2 == 0 ? 2 : 1)
#define CF1 DIV_LE(C1, 8)        /* conv1: channels x columns per block */
#define XF1 DIV_LE(O1, ACC / CF1)
#define XF2 DIV_LE(O2, 6)        /* conv2: columns x channels per block */
#define CF2 DIV_LE(C2, ACC / XF2)
#define CW1 DIV_LE(C1, ACC / K1) /* weight gradients: channels x kernel columns per block */
#define CW2 DIV_LE(C2, ACC / K2)
#define OR 6                     /* the classifier's weight gradients: rows x vectors per block */
#define OC (ACC / OR)

static inline vf vsplat(float a) { return (vf){0} + a; }
static inline vf vselect(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vmax(vf a, vf b) { return vselect(b > a, b, a); }

/* sigmoid(z) = 1 / (1 + exp(-z)), exp(-z) = 2^n exp(r) with r = -z - n ln 2 in [-ln 2 / 2, ln 2 / 2]: exp(r)
 * by a degree-6 polynomial fitted for relative error (under 1e-7 in float), 2^n by vscalefps, 1 / a by
 * vrcp14ps and a Newton step. 16 instructions, to about 1 ulp as exp_approx and reciprocal. */
#if V == 16
static inline vf vsigmoid(vf z) {
    const __m512 zc = _mm512_max_ps((__m512)z, _mm512_set1_ps(-88.0f)); /* exp(-z) stays finite */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(zc, _mm512_set1_ps(-1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmsub_ps(n, _mm512_set1_ps(0.693359375f), zc); /* ln 2 in two parts */
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.3843644410e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3741638809e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1668001562e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666431725e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.9999994040e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512 a = _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_set1_ps(1.0f));
    const __m512 e = _mm512_rcp14_ps(a);
    return (vf)_mm512_fmadd_ps(e, _mm512_fnmadd_ps(a, e, _mm512_set1_ps(1.0f)), e);
}
#else
/* AVX2 has neither vscalefps nor vrcp14ps: 2^n is built in the exponent bits, which needs n >= -126 (z held
 * to at most 87, where sigmoid is 1 in float anyway), and vrcpps's 12-bit guess takes two Newton steps. */
static inline vf vsigmoid(vf z) {
    const __m256 zc = _mm256_min_ps(_mm256_max_ps((__m256)z, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(zc, _mm256_set1_ps(-1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmsub_ps(n, _mm256_set1_ps(0.693359375f), zc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.3843644410e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3741638809e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1668001562e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666431725e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.9999994040e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 a = _mm256_add_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), _mm256_set1_ps(1.0f));
    __m256 e = _mm256_rcp_ps(a);
    e = _mm256_fmadd_ps(e, _mm256_fnmadd_ps(a, e, _mm256_set1_ps(1.0f)), e);
    return (vf)_mm256_fmadd_ps(e, _mm256_fnmadd_ps(a, e, _mm256_set1_ps(1.0f)), e);
}
#endif

static inline vf vact(vf z, int kind) {
    if (kind == ACT_SIGMOID) return vsigmoid(z);
    if (kind == ACT_RELU) return vselect(z > 0.0f, z, (vf){0});
    return z;
}

static inline vf vdact(vf g, vf s, int kind) {
    if (kind == ACT_SIGMOID) return g * (1.0f - s) * s;
    if (kind == ACT_RELU) return vselect(s > 0.0f, g, (vf){0});
    return g;
}

static inline vf vpool(int kind, vf a, vf b, vf c, vf d) {
    if (kind == POOL_AVG) return (((a + b) + c) + d) * 0.25f;
    return vmax(vmax(vmax(a, b), c), d);
}

/* The gradient g of a 2x2 window routed back to its four inputs as POOL_BACKWARD does, then through the
 * activation: out[0..3] for a, b (top row), c, d. */
static inline void vpool_backward(int kind, int actkind, vf g, vf a, vf b, vf c, vf d, vf *out) {
    if (kind == POOL_AVG) {
        const vf h = g * 0.25f;
        out[0] = vdact(h, a, actkind), out[1] = vdact(h, b, actkind);
        out[2] = vdact(h, c, actkind), out[3] = vdact(h, d, actkind);
    } else {
        const vf m = vmax(vmax(vmax(a, b), c), d), zero = {0};
        const vi ka = a == m, kb = ~ka & (b == m), kc = ~(ka | kb) & (c == m), kd = ~(ka | kb | kc);
        out[0] = vselect(ka, vdact(g, a, actkind), zero), out[1] = vselect(kb, vdact(g, b, actkind), zero);
        out[2] = vselect(kc, vdact(g, c, actkind), zero), out[3] = vselect(kd, vdact(g, d, actkind), zero);
    }
}

#if (defined(__clang__) || __GNUC__ >= 12) && V == 16
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
/* o0, o1 = a and b's first halves, a and b's second halves; then quarters, pairs, single lanes */
#define HALVES(o0, o1, a, b) (o0 = SHUF(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23), \
                              o1 = SHUF(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
#define QUARTERS(o0, o1, a, b) (o0 = SHUF(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27), \
                                o1 = SHUF(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
#define PAIRS(o0, o1, a, b) (o0 = SHUF(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29), \
                             o1 = SHUF(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
#define SINGLES(o0, o1, a, b) (o0 = SHUF(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30), \
                               o1 = SHUF(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))

/* out[i] = the sum of v[i]'s lanes, i < V: four rounds of pairwise shuffles and adds; the sums come out in
 * bit-reversed order, which a last shuffle puts right. */
static inline void hsum_block(const vf *v, float *out) {
    vf w[8], u[4], t[2], a, b;
    for (int j = 0; j < 8; j++) HALVES(a, b, v[2 * j], v[2 * j + 1]), w[j] = a + b;
    for (int j = 0; j < 4; j++) QUARTERS(a, b, w[2 * j], w[2 * j + 1]), u[j] = a + b;
    for (int j = 0; j < 2; j++) PAIRS(a, b, u[2 * j], u[2 * j + 1]), t[j] = a + b;
    SINGLES(a, b, t[0], t[1]);
    const vf r = a + b;
    *(vf *)out = SHUF(r, r, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

/* out[j][i] = in[i][j], a 16 x 16 transpose: the off-diagonal blocks of 8, 4, 2 and 1 swapped in turn. */
static inline void transpose_block(const vf *in, vf *out) {
    vf t[V], u[V];
    for (int i = 0; i < 8; i++) HALVES(t[i], t[i + 8], in[i], in[i + 8]);
    for (int i = 0; i < V; i++)
        if (!(i & 4)) QUARTERS(u[i], u[i + 4], t[i], t[i + 4]);
    for (int i = 0; i < V; i++)
        if (!(i & 2)) PAIRS(t[i], t[i + 2], u[i], u[i + 2]);
    for (int i = 0; i < V; i += 2) SINGLES(out[i], out[i + 1], t[i], t[i + 1]);
}
#elif defined(__clang__) || __GNUC__ >= 12
/* The same for 8 lanes: halves, pairs, single lanes. */
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define HALVES(o0, o1, a, b) (o0 = SHUF(a, b, 0, 1, 2, 3, 8, 9, 10, 11), o1 = SHUF(a, b, 4, 5, 6, 7, 12, 13, 14, 15))
#define PAIRS(o0, o1, a, b) (o0 = SHUF(a, b, 0, 1, 8, 9, 4, 5, 12, 13), o1 = SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15))
#define SINGLES(o0, o1, a, b) (o0 = SHUF(a, b, 0, 8, 2, 10, 4, 12, 6, 14), o1 = SHUF(a, b, 1, 9, 3, 11, 5, 13, 7, 15))

static inline void hsum_block(const vf *v, float *out) {
    vf w[4], u[2], a, b;
    for (int j = 0; j < 4; j++) HALVES(a, b, v[2 * j], v[2 * j + 1]), w[j] = a + b;
    for (int j = 0; j < 2; j++) PAIRS(a, b, w[2 * j], w[2 * j + 1]), u[j] = a + b;
    SINGLES(a, b, u[0], u[1]);
    const vf r = a + b;
    *(vf *)out = SHUF(r, r, 0, 4, 2, 6, 1, 5, 3, 7);
}

static inline void transpose_block(const vf *in, vf *out) {
    vf t[V], u[V];
    for (int i = 0; i < 4; i++) HALVES(t[i], t[i + 4], in[i], in[i + 4]);
    for (int i = 0; i < V; i++)
        if (!(i & 2)) PAIRS(u[i], u[i + 2], t[i], t[i + 2]);
    for (int i = 0; i < V; i += 2) SINGLES(out[i], out[i + 1], u[i], u[i + 1]);
}
#else
static inline void hsum_block(const vf *v, float *out) {
    for (int i = 0; i < V; i++) {
        float t[V];
        memcpy(t, &v[i], sizeof t);
        for (int w = V / 2; w >= 1; w /= 2)
            for (int k = 0; k < w; k++) t[k] += t[k + w];
        out[i] = t[0];
    }
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

/* Per group, in vectors of lanes: xg (XS, XS) the padded input; s1 (C1, O1, O1) conv1's output after its
 * activation, then its gradient gz1 in place; p1 (C1, P1S, P1S) pool1's, inside a zero border; s2 (C2, O2, O2)
 * conv2's after its activation, then gz2; f (NF) the features in PyTorch's flatten order (channel, row,
 * column); h1, h2 the classifier's hidden layers. */

/* The group's images (n of them; the other lanes zero) into xg's interior. */
NOINLINE static void lane_input(const float *x, int n, vf *xg) {
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

/* conv1 + bias (b1 may be NULL) + activation: xg -> s1. Blocks of CF1 channels x XF1 columns; per kernel
 * tap, XF1 input vectors and CF1 broadcast weights. */
NOINLINE static void lane_conv1(const vf *xg, const float *w1, const float *b1, vf *s1) {
    for (int c0 = 0; c0 < C1; c0 += CF1)
        for (int y = 0; y < O1; y++)
            for (int x0 = 0; x0 < O1; x0 += XF1) {
                vf acc[CF1][XF1];
                for (int c = 0; c < CF1; c++)
                    for (int j = 0; j < XF1; j++) acc[c][j] = vsplat(b1 ? b1[c0 + c] : 0.0f);
                for (int ky = 0; ky < K1; ky++)
                    for (int kx = 0; kx < K1; kx++) {
                        const vf *row = xg + (y + ky) * XS + x0 + kx;
                        vf in[XF1];
                        for (int j = 0; j < XF1; j++) in[j] = row[j];
                        for (int c = 0; c < CF1; c++) {
                            const float w = w1[((c0 + c) * K1 + ky) * K1 + kx];
                            for (int j = 0; j < XF1; j++) acc[c][j] += in[j] * w;
                        }
                    }
                for (int c = 0; c < CF1; c++)
                    for (int j = 0; j < XF1; j++) s1[((c0 + c) * O1 + y) * O1 + x0 + j] = vact(acc[c][j], ACT1);
            }
}

/* pool1: s1 -> p1's interior (its border stays zero). */
NOINLINE static void lane_pool1(const vf *s1, vf *p1) {
    for (int c = 0; c < C1; c++)
        for (int r = 0; r < Q1; r++) {
            const vf *top = s1 + (c * O1 + 2 * r) * O1, *bottom = top + O1;
            vf *out = p1 + (c * P1S + r + PAD2) * P1S + PAD2;
            for (int q = 0; q < Q1; q++) out[q] = vpool(POOL1, top[2 * q], top[2 * q + 1], bottom[2 * q], bottom[2 * q + 1]);
        }
}

/* conv2 + bias (b2 may be NULL) + activation: p1 -> s2, blocks of CF2 channels x XF2 columns. */
NOINLINE static void lane_conv2(const vf *p1, const float *w2, const float *b2, vf *s2) {
    for (int c0 = 0; c0 < C2; c0 += CF2)
        for (int y = 0; y < O2; y++)
            for (int x0 = 0; x0 < O2; x0 += XF2) {
                vf acc[CF2][XF2];
                for (int c = 0; c < CF2; c++)
                    for (int j = 0; j < XF2; j++) acc[c][j] = vsplat(b2 ? b2[c0 + c] : 0.0f);
                for (int ci = 0; ci < C1; ci++)
                    for (int ky = 0; ky < K2; ky++)
                        for (int kx = 0; kx < K2; kx++) {
                            const vf *row = p1 + (ci * P1S + y + ky) * P1S + x0 + kx;
                            vf in[XF2];
                            for (int j = 0; j < XF2; j++) in[j] = row[j];
                            for (int c = 0; c < CF2; c++) {
                                const float w = w2[(((c0 + c) * C1 + ci) * K2 + ky) * K2 + kx];
                                for (int j = 0; j < XF2; j++) acc[c][j] += in[j] * w;
                            }
                        }
                for (int c = 0; c < CF2; c++)
                    for (int j = 0; j < XF2; j++) s2[((c0 + c) * O2 + y) * O2 + x0 + j] = vact(acc[c][j], ACT2);
            }
}

/* pool2: s2 -> f, in PyTorch's flatten order (channel, row, column). */
NOINLINE static void lane_pool2(const vf *s2, vf *f) {
    for (int c = 0; c < C2; c++)
        for (int r = 0; r < Q2; r++) {
            const vf *top = s2 + (c * O2 + 2 * r) * O2, *bottom = top + O2;
            for (int q = 0; q < Q2; q++)
                f[(c * Q2 + r) * Q2 + q] = vpool(POOL2, top[2 * q], top[2 * q + 1], bottom[2 * q], bottom[2 * q + 1]);
        }
}

/* pool2 and act2 backward: gf -> gz2 in place of s2; gb2[c] = the gradient's sum over positions. */
NOINLINE static void lane_pool2_backward(const vf *gf, vf *s2, vf *gb2) {
    for (int c = 0; c < C2; c++) {
        vf sum = {0};
        for (int r = 0; r < Q2; r++) {
            vf *top = s2 + (c * O2 + 2 * r) * O2, *bottom = top + O2;
            for (int q = 0; q < Q2; q++) {
                vf g[4];
                vpool_backward(POOL2, ACT2, gf[(c * Q2 + r) * Q2 + q], top[2 * q], top[2 * q + 1], bottom[2 * q],
                               bottom[2 * q + 1], g);
                top[2 * q] = g[0], top[2 * q + 1] = g[1], bottom[2 * q] = g[2], bottom[2 * q + 1] = g[3];
                sum += (g[0] + g[1]) + (g[2] + g[3]);
            }
        }
        gb2[c] = sum;
    }
}

/* conv2's weight gradient, in lanes: gw2[co][ci][ky][kx] = sum over positions of gz2[co][y][x] *
 * p1[ci][y + ky][x + kx]. Blocks of CW2 output channels x K2 kernel columns. */
NOINLINE static void lane_conv2_weight_grad(const vf *p1, const vf *gz2, vf *gw2) {
    for (int c0 = 0; c0 < C2; c0 += CW2) /* outermost: the block's gz2 stays in L1 */
        for (int ci = 0; ci < C1; ci++)
            for (int ky = 0; ky < K2; ky++) {
                vf acc[CW2][K2];
                for (int c = 0; c < CW2; c++)
                    for (int kx = 0; kx < K2; kx++) acc[c][kx] = (vf){0};
                for (int y = 0; y < O2; y++)
                    for (int x = 0; x < O2; x++) {
                        const vf *in = p1 + (ci * P1S + y + ky) * P1S + x;
                        vf iv[K2], gv[CW2];
                        for (int kx = 0; kx < K2; kx++) iv[kx] = in[kx];
                        for (int c = 0; c < CW2; c++) gv[c] = gz2[((c0 + c) * O2 + y) * O2 + x];
                        for (int c = 0; c < CW2; c++)
                            for (int kx = 0; kx < K2; kx++) acc[c][kx] += gv[c] * iv[kx];
                    }
                for (int c = 0; c < CW2; c++)
                    for (int kx = 0; kx < K2; kx++) gw2[(((c0 + c) * C1 + ci) * K2 + ky) * K2 + kx] = acc[c][kx];
            }
}

/* conv2's input gradient inside pool1's border, then pool1 and act1 backward: gz1 in place of s1, and
 * gb1[c] = its sum. A row of the pooled gradient, gp1[ci][r][q] = sum over co, ky, kx of w2[co][ci][ky][kx] *
 * gz2[co][r + PAD2 - ky][q + PAD2 - kx] (terms outside conv2's output left out), is Q1 accumulators; per
 * (ky, co), one row of gz2 in registers. */
NOINLINE static void lane_conv2_input_grad(const vf *gz2, const float *w2, vf *s1, vf *gb1) {
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
                vpool_backward(POOL1, ACT1, acc[q], top[2 * q], top[2 * q + 1], bottom[2 * q], bottom[2 * q + 1], gz);
                top[2 * q] = gz[0], top[2 * q + 1] = gz[1], bottom[2 * q] = gz[2], bottom[2 * q + 1] = gz[3];
                sum += (gz[0] + gz[1]) + (gz[2] + gz[3]);
            }
        }
        gb1[ci] = sum;
    }
}

/* conv1's weight gradient, in lanes: gw1[c][ky][kx] = sum over positions of gz1[c][y][x] * xg[y + ky][x + kx].
 * Blocks of CW1 channels x K1 kernel columns. */
NOINLINE static void lane_conv1_weight_grad(const vf *xg, const vf *gz1, vf *gw1) {
    enum { YT = 4 }; /* rows per tile: the tile's gz1 and inputs stay in L1 while every ky passes over them */
    for (int c0 = 0; c0 < C1; c0 += CW1)
        for (int y0 = 0; y0 < O1; y0 += YT)
            for (int ky = 0; ky < K1; ky++) {
                vf acc[CW1][K1];
                for (int c = 0; c < CW1; c++)
                    for (int kx = 0; kx < K1; kx++) acc[c][kx] = y0 ? gw1[((c0 + c) * K1 + ky) * K1 + kx] : (vf){0};
                for (int y = y0; y < y0 + YT && y < O1; y++)
                    for (int x = 0; x < O1; x++) {
                        const vf *in = xg + (y + ky) * XS + x;
                        vf iv[K1], gv[CW1];
                        for (int kx = 0; kx < K1; kx++) iv[kx] = in[kx];
                        for (int c = 0; c < CW1; c++) gv[c] = gz1[((c0 + c) * O1 + y) * O1 + x];
                        for (int c = 0; c < CW1; c++)
                            for (int kx = 0; kx < K1; kx++) acc[c][kx] += gv[c] * iv[kx];
                    }
                for (int c = 0; c < CW1; c++)
                    for (int kx = 0; kx < K1; kx++) gw1[((c0 + c) * K1 + ky) * K1 + kx] = acc[c][kx];
            }
}

/* c[i] = sum over t < steps of a[i * a_row + t * a_t] * b[t], for i < rows: a matrix (strides in floats)
 * times V samples' vectors. Blocks of up to ACC rows (the last one overlapping the one before: its rows are
 * computed again, identically); always inlined, so that the strides are constants in the addresses. */
static inline __attribute__((always_inline)) void lane_dense(const int rows, const int steps, const float *a,
                                                            const long a_row, const long a_t, const vf *b, vf *c) {
    enum { R = ACC };
    const int r = rows < R ? rows : R;
    for (int i0 = 0;; i0 += r) {
        if (i0 > rows - r) i0 = rows - r;
        vf acc[R];
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

/* c[i][j] = sum over samples s < n of a(s, i) * b(s, j), for i in [i0, i0 + nr) and j in [j0, j0 + nv vectors):
 * a block of a classifier weight's gradient (rows x cols) from the batch's output gradients (in lanes, a(s, i)
 * = a[s / V * gs + i * V + s % V]) and inputs (rows of samples, b(s, j) = b[s / V * gs + s % V * ldb + j]),
 * kept per group gs floats apart. The sum runs over the samples in order, whichever thread computes it. */
static inline __attribute__((always_inline)) void outer_block(const int cols, int n, int i0, int j0, const int nr,
                                                             const int nv, const float *a, const float *b,
                                                             const long ldb, const long gs, float *c) {
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

/* Block `task` of the (rows x cols) gradient c, in blocks of OR rows by OC vectors (rows in the outer order). */
static inline __attribute__((always_inline)) void batch_outer(const int rows, const int cols, int n, int task,
                                                             const float *a, const float *b, const long ldb,
                                                             const long gs, float *c) {
    const int per_row = (cols / V + OC - 1) / OC, i0 = task / per_row * OR, j0 = task % per_row * OC * V;
    const int nr = rows - i0 < OR ? rows - i0 : OR, nv = (cols - j0) / V < OC ? (cols - j0) / V : OC;
    if (nr == OR && nv == OC) /* whole blocks, with the loops' bounds constants */
        outer_block(cols, n, i0, j0, OR, OC, a, b, ldb, gs, c);
    else
        outer_block(cols, n, i0, j0, nr, nv, a, b, ldb, gs, c);
}

/* out[i] = sum over samples s < n of a(s, i) (as in batch_outer), i < rows. */
static void batch_bias(int rows, int n, const float *a, long gs, float *out) {
    for (int i = 0; i < rows; i++) {
        vf sum = {0};
        for (int g = 0; g * V < n; g++) sum += *(const vf *)(a + g * gs + i * V);
        lane_sums(&sum, 1, out + i);
    }
}

/* out[l * ld + r] = in[r][l]: n lane vectors to V rows of n floats. */
static void lanes_to_rows(const vf *in, int n, float *out, long ld) {
    for (int r = 0; r < n; r++)
        for (int l = 0; l < V; l++) out[l * ld + r] = in[r][l];
}

/* The front end's gradients while summed: per group, in PyTorch's layouts (as lenet_backward writes them);
 * then the group's loss and correct count. */
#define L_W1 0
#define L_B1 (L_W1 + C1 * K1 * K1)
#define L_W2 (L_B1 + C1)
#define L_B2 (L_W2 + C2 * C1 * K2 * K2)
#define L_LOSS (L_B2 + C2)
#define L_SIZE ROUNDV(L_LOSS + 2)

/* What the classifier's weight gradients need of each group, kept for all groups: the inputs of its three
 * layers as rows of samples (f, h1, h2: NFP, F1P, F2P floats per sample), the gradients of their outputs in
 * lanes (g1, g2, dz: H1, H2, NCLS vectors per group). Then the classifier's gradients, padded rows. */
#define B_FT 0
#define B_H1T (B_FT + V * NFP)
#define B_H2T (B_H1T + V * F1P)
#define B_G1 (B_H2T + V * F2P)
#define B_G2 (B_G1 + V * H1)
#define B_DZ (B_G2 + V * H2)
#define B_SIZE ROUNDV(B_DZ + V * NCLS)           /* floats per group */
#define M_W1 0                                   /* the classifier's gradients: W1 (H1, NFP), b1, W2 (H2, F1P), ... */
#define M_B1 (M_W1 + H1 * NFP)
#define M_W2 ROUNDV(M_B1 + H1)
#define M_B2 (M_W2 + H2 * F1P)
#define M_W3 ROUNDV(M_B2 + H2)
#define M_B3 (M_W3 + NCLS * F2P)
#define M_SIZE ROUNDV(M_B3 + NCLS)

/* Per thread, in vectors: the group's activations and gradients, and its front-end gradients in lanes. */
#define LT_XG 0
#define LT_S1 (LT_XG + XS * XS)
#define LT_P1 (LT_S1 + C1 * O1 * O1)
#define LT_S2 (LT_P1 + C1 * P1S * P1S)
#define LT_F (LT_S2 + C2 * O2 * O2)
#define LT_GF (LT_F + NF)
#define LT_H1 (LT_GF + NF)
#define LT_H2 (LT_H1 + H1)
#define LT_SUMS (LT_H2 + H2)                     /* the group's front-end gradients in lanes, in L_* order */
#define LT_SIZE (LT_SUMS + L_LOSS)

long lenet_step_workspace_floats(int batch, int threads) {
    const long groups = (batch + V - 1) / V;
    return V + groups * (L_SIZE + B_SIZE) + M_SIZE + (long)threads * LT_SIZE * V;
}

/* The loss of each sample in the group (n real ones) and d loss / d logits, scaled, in place of the logits
 * (zero for the lanes beyond n); the summed loss and correct count added onto out[0], out[1].
 * With OUT_CLIPLOG, z is the last Linear's output and the logits are Keras' log(clamp(sigmoid(z), lo, hi)),
 * clamped in float as torch clamps; d logit / d z is (1 / c) * sigmoid' = 1 - sigmoid(z) where the clamp
 * lets the gradient through, which is torch's rule: lo <= sigmoid(z) <= hi, bounds included. */
static void lane_loss(vf *z, const int64_t *y, int n, float smoothing, float scale, float *out) {
#if OUT_CLIPLOG
    const float lo = (float)CLIP_EPS, hi = (float)(1.0 - CLIP_EPS); /* torch's casts of Python's floats */
    vf gate[NCLS];
    for (int o = 0; o < NCLS; o++) {
        const vf p = vsigmoid(z[o]);
        const vi inside = (p >= lo) & (p <= hi);
        gate[o] = vselect(inside, 1.0f - p, (vf){0});
        const vf c = vselect(p < lo, vsplat(lo), vselect(p > hi, vsplat(hi), p));
        for (int l = 0; l < V; l++) z[o][l] = logf(c[l]);
    }
#endif
    float loss = 0.0f, correct = 0.0f;
    for (int l = 0; l < V; l++) {
        if (l >= n) {
            for (int o = 0; o < NCLS; o++) z[o][l] = 0.0f;
            continue;
        }
        const int label = (int)y[l];
        float m = z[0][l];
        int best = 0;
        for (int o = 1; o < NCLS; o++)
            if (z[o][l] > m) {
                m = z[o][l];
                best = o;
            }
        double sum = 0.0;
        for (int o = 0; o < NCLS; o++) sum += exp((double)(z[o][l] - m));
        const float lse = m + (float)log(sum);
        float mean_logp = 0.0f;
        for (int o = 0; o < NCLS; o++) mean_logp += z[o][l] - lse;
        mean_logp /= NCLS;
        loss += -(1.0f - smoothing) * (z[label][l] - lse) - smoothing * mean_logp;
        correct += best == label;
        for (int o = 0; o < NCLS; o++) {
            const float p = expf(z[o][l] - lse);
            const float target = smoothing / NCLS + (o == label ? 1.0f - smoothing : 0.0f);
            z[o][l] = (p - target) * scale;
#if OUT_CLIPLOG
            z[o][l] *= gate[o][l];
#endif
        }
    }
    out[0] += loss;
    out[1] += correct;
}

/* One group of n samples through the whole step but the classifier's weight gradients: what those need into
 * keep (B_SIZE floats), the front end's gradients into part (L_SIZE floats, zeroed) by way of the thread's
 * lanes, and the group's summed loss and correct count. */
static void lane_group(const Params *prm, const Classifier *cls, const float *x, const int64_t *y, int n,
                       float smoothing, float scale, float *part, float *keep, vf *w) {
    vf *xg = w + LT_XG, *s1 = w + LT_S1, *p1 = w + LT_P1, *s2 = w + LT_S2, *f = w + LT_F;
    vf *gf = w + LT_GF, *h1 = w + LT_H1, *h2 = w + LT_H2;
    vf *g1 = (vf *)(keep + B_G1), *g2 = (vf *)(keep + B_G2), *dz = (vf *)(keep + B_DZ);
    vf *sums = w + LT_SUMS;
    /* forward */
    lane_input(x, n, xg);
    lane_conv1(xg, prm->w1, prm->b1, s1);
    lane_pool1(s1, p1);
    lane_conv2(p1, prm->w2, prm->b2, s2);
    lane_pool2(s2, f);
    lane_dense(H1, NF, cls->w1, NF, 1, f, h1);
    for (int o = 0; o < H1; o++) h1[o] = vact(h1[o] + (cls->b1 ? cls->b1[o] : 0.0f), ACTF);
    lane_dense(H2, H1, cls->w2, H1, 1, h1, h2);
    for (int o = 0; o < H2; o++) h2[o] = vact(h2[o] + (cls->b2 ? cls->b2[o] : 0.0f), ACTF);
    lane_dense(NCLS, H2, cls->w3, H2, 1, h2, dz);
    for (int o = 0; o < NCLS; o++) dz[o] += cls->b3 ? cls->b3[o] : 0.0f;
    /* loss; classifier backward but its weights */
    lane_loss(dz, y, n, smoothing, scale, part + L_LOSS);
    lane_dense(H2, NCLS, cls->w3, 1, H2, dz, g2);
    for (int o = 0; o < H2; o++) g2[o] = vdact(g2[o], h2[o], ACTF);
    lane_dense(H1, H2, cls->w2, 1, H1, g2, g1);
    for (int o = 0; o < H1; o++) g1[o] = vdact(g1[o], h1[o], ACTF);
    lane_dense(NF, H1, cls->w1, 1, NF, g1, gf);
    lanes_to_rows(f, NF, keep + B_FT, NFP);
    lanes_to_rows(h1, H1, keep + B_H1T, F1P);
    lanes_to_rows(h2, H2, keep + B_H2T, F2P);
    /* front end backward */
    lane_pool2_backward(gf, s2, sums + L_B2);
    lane_conv2_weight_grad(p1, s2, sums + L_W2);
    lane_conv2_input_grad(s2, prm->w2, s1, sums + L_B1);
    lane_conv1_weight_grad(xg, s1, sums + L_W1);
    lane_sums(sums, L_LOSS, part);
}

/* A whole training step: from x (B, S, S) and labels y, every parameter's gradient of scale * the summed
 * cross-entropy (with label smoothing), into grads as lenet_backward and lenet_classifier write theirs (the
 * front end's, then the classifier's); the summed loss and correct count into out[0], out[1]. Returns -1 if
 * a label is out of range, else 0. */
int lenet_step(int batch, int threads, const Params *prm, const Classifier *cls, const float *x, const int64_t *y,
               float smoothing, float scale, float *grads, float *out, float *ws) {
    for (int i = 0; i < batch; i++)
        if (y[i] < 0 || y[i] >= NCLS) return -1;
    const int groups = (batch + V - 1) / V;
    float *parts = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    float *kept = parts + (long)groups * L_SIZE, *q = kept + (long)groups * B_SIZE;
    vf *threads_ws = (vf *)(q + M_SIZE);
    enum { T1 = (H1 + OR - 1) / OR * ((NFP / V + OC - 1) / OC), T2 = (H2 + OR - 1) / OR * ((F1P / V + OC - 1) / OC) };
    enum { T3 = (NCLS + OR - 1) / OR * ((F2P / V + OC - 1) / OC) };
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        /* Denormals flushed to zero, in and out (FTZ, DAZ), for this call: raw 0..255 pixels saturate the
         * sigmoids, and the activations and gradients under 2^-126 (~1.2e-38) that PyTorch keeps cost a
         * microcode assist per operation, which made the Keras net's step ~8x slower. Values that small
         * become 0 here, where PyTorch keeps them. */
        const unsigned csr = _mm_getcsr();
        _mm_setcsr(csr | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
        vf *w = threads_ws + (long)t * LT_SIZE;
        memset(w + LT_XG, 0, sizeof(vf) * XS * XS); /* the borders stay zero */
        memset(w + LT_P1, 0, sizeof(vf) * C1 * P1S * P1S);
        /* 1: each group through the step but the classifier's weight gradients */
#pragma omp for schedule(dynamic, 1)
        for (int g = 0; g < groups; g++) {
            float *part = parts + (long)g * L_SIZE;
            memset(part, 0, sizeof(float) * L_SIZE);
            const int n = batch - g * V < V ? batch - g * V : V;
            lane_group(prm, cls, x + (long)g * V * S * S, y + (long)g * V, n, smoothing, scale, part,
                       kept + (long)g * B_SIZE, w);
        }
        /* 2: the classifier's weight gradients over the whole batch, in blocks of rows and columns; and the
         * groups' sums in group order (in group 0's place) */
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < T1 + T2 + T3 + 1; task++) {
            if (task < T1)
                batch_outer(H1, NFP, batch, task, kept + B_G1, kept + B_FT, NFP, B_SIZE, q + M_W1);
            else if (task < T1 + T2)
                batch_outer(H2, F1P, batch, task - T1, kept + B_G2, kept + B_H1T, F1P, B_SIZE, q + M_W2);
            else if (task < T1 + T2 + T3)
                batch_outer(NCLS, F2P, batch, task - T1 - T2, kept + B_DZ, kept + B_H2T, F2P, B_SIZE, q + M_W3);
            else {
                batch_bias(H1, batch, kept + B_G1, B_SIZE, q + M_B1);
                batch_bias(H2, batch, kept + B_G2, B_SIZE, q + M_B2);
                batch_bias(NCLS, batch, kept + B_DZ, B_SIZE, q + M_B3);
                for (int k = 0; k < L_SIZE; k += V) {
                    vf sum = *(const vf *)(parts + k);
                    for (int g = 1; g < groups; g++) sum += *(const vf *)(parts + (long)g * L_SIZE + k);
                    *(vf *)(parts + k) = sum;
                }
            }
        }
        _mm_setcsr(csr); /* OpenMP's threads live on, and may be PyTorch's */
    }
    float *g = grads;
    memcpy(g, parts, sizeof(float) * L_LOSS), g += L_LOSS;
    for (int o = 0; o < H1; o++, g += NF) memcpy(g, q + M_W1 + o * NFP, sizeof(float) * NF);
    memcpy(g, q + M_B1, sizeof(float) * H1), g += H1;
    for (int o = 0; o < H2; o++, g += H1) memcpy(g, q + M_W2 + o * F1P, sizeof(float) * H1);
    memcpy(g, q + M_B2, sizeof(float) * H2), g += H2;
    for (int o = 0; o < NCLS; o++, g += H2) memcpy(g, q + M_W3 + o * F2P, sizeof(float) * H2);
    memcpy(g, q + M_B3, sizeof(float) * NCLS);
    out[0] = parts[L_LOSS];
    out[1] = parts[L_LOSS + 1];
    return 0;
}
#endif /* LANES */
