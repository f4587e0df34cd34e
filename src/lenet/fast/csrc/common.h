/* What every engine shares: the network's sizes, the vector type, and the math written once (exp, sigmoid,
 * tanh, the activations, 2x2 pooling, the cross-entropy loss, the ordered sums, the copy into PyTorch's
 * layouts, the parallel loop and the floating-point mode).
 *
 * The network's shape comes from lenet_config.h, which build.py writes for each shape (LENET_* macros, read
 * after every system header). The sizes derived from it are enum constants, so every loop has a constant
 * trip count and every block of accumulators a constant size.
 */
#ifndef LENET_COMMON_H
#define LENET_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "lenet_config.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Vectors: LENET_V floats, one register. AVX-512 16, AVX2 with FMA 8, NEON (AArch64) 4; anything else
 * builds (GCC and Clang lower vector extensions to whatever the machine has) but reports 0 lanes, and
 * build.py's caller does not use it. */

#if defined(__AVX512F__)
#define LENET_V 16
#define LENET_ISA "AVX-512"
#elif defined(__AVX2__) && defined(__FMA__)
#define LENET_V 8
#define LENET_ISA "AVX2"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define LENET_V 4
#define LENET_ISA "NEON"
#else
#define LENET_V 4
#define LENET_ISA ""
#endif

/* Loads and stores through vf may be unaligned and may alias float arrays. */
typedef float vf __attribute__((vector_size(4 * LENET_V), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(4 * LENET_V), aligned(4), may_alias));

/* Accumulators a kernel keeps in registers: three quarters of them (AVX-512 and NEON have 32, AVX2 16). */
#if LENET_V == 8
#define LENET_ACC 12
#else
#define LENET_ACC 24
#endif

/* The largest divisor of n up to m (1 <= m; blocks that tile an extent exactly), for m up to 24. */
#define LENET_DIVIDES(n, m, d) ((m) >= (d) && (n) % (d) == 0)
#define LENET_DIV_LE(n, m)                                                                                         \
    (LENET_DIVIDES(n, m, 24) ? 24 : LENET_DIVIDES(n, m, 23) ? 23 : LENET_DIVIDES(n, m, 22) ? 22 :                  \
     LENET_DIVIDES(n, m, 21) ? 21 : LENET_DIVIDES(n, m, 20) ? 20 : LENET_DIVIDES(n, m, 19) ? 19 :                  \
     LENET_DIVIDES(n, m, 18) ? 18 : LENET_DIVIDES(n, m, 17) ? 17 : LENET_DIVIDES(n, m, 16) ? 16 :                  \
     LENET_DIVIDES(n, m, 15) ? 15 : LENET_DIVIDES(n, m, 14) ? 14 : LENET_DIVIDES(n, m, 13) ? 13 :                  \
     LENET_DIVIDES(n, m, 12) ? 12 : LENET_DIVIDES(n, m, 11) ? 11 : LENET_DIVIDES(n, m, 10) ? 10 :                  \
     LENET_DIVIDES(n, m, 9) ? 9 : LENET_DIVIDES(n, m, 8) ? 8 : LENET_DIVIDES(n, m, 7) ? 7 :                        \
     LENET_DIVIDES(n, m, 6) ? 6 : LENET_DIVIDES(n, m, 5) ? 5 : LENET_DIVIDES(n, m, 4) ? 4 :                        \
     LENET_DIVIDES(n, m, 3) ? 3 : LENET_DIVIDES(n, m, 2) ? 2 : 1)

#define LENET_INLINE static inline __attribute__((always_inline))
#define LENET_NOINLINE static __attribute__((noinline))
#define LENET_ROUNDV(n) ((((n) + LENET_V - 1) / LENET_V) * LENET_V)
#define LENET_MIN(a, b) ((a) < (b) ? (a) : (b))

#ifndef LENET_FC
#define LENET_FC 0
#endif
#ifndef LENET_CLIPLOG
#define LENET_CLIPLOG 0
#endif
#ifndef LENET_SLOPE1 /* LeakyReLU's negative slopes, after conv1, conv2 and in the classifier */
#define LENET_SLOPE1 0.0f
#endif
#ifndef LENET_SLOPE2
#define LENET_SLOPE2 0.0f
#endif
#ifndef LENET_SLOPEF
#define LENET_SLOPEF 0.0f
#endif

/* The activations and poolings as build.py numbers them. */
enum { ACT_NONE = 0, ACT_SIGMOID = 1, ACT_RELU = 2, ACT_TANH = 3, ACT_LEAKY = 4 };
enum { POOL_AVG = 0, POOL_MAX = 1 };

/* ---------------------------------------------------------------------------------------------------- */
/* The network's sizes */

enum {
    V = LENET_V,
    S = LENET_S,                        /* input side */
    C1 = LENET_C1, K1 = LENET_K1, PAD1 = LENET_PAD1,
    C2 = LENET_C2, K2 = LENET_K2, PAD2 = LENET_PAD2,
    BN = LENET_BN,
    XS = S + 2 * PAD1,                  /* padded input side */
    O1 = XS - K1 + 1,                   /* conv1's output side */
    Q1 = O1 / 2,                        /* pool1's output side */
    P1S = Q1 + 2 * PAD2,                /* padded pool1 side */
    O2 = P1S - K2 + 1,                  /* conv2's output side */
    Q2 = O2 / 2,                        /* pool2's output side */
    C2P = LENET_ROUNDV(C2),
    NF = C2 * Q2 * Q2,                  /* features per sample */
    NFP = LENET_ROUNDV(NF),
    FRONT_GRADS = C1 * K1 * K1 + C1 + C2 * C1 * K2 * K2 + C2 + BN * 2 * (C1 + C2), /* in PyTorch's layouts */
};
#if LENET_FC
enum {
    H1 = LENET_H1, H2 = LENET_H2, NCLS = LENET_NCLS,
    F1P = LENET_ROUNDV(H1), F2P = LENET_ROUNDV(H2), F3P = LENET_ROUNDV(NCLS),
    CLASSIFIER_GRADS = H1 * NF + H1 + H2 * H1 + H2 + NCLS * H2 + NCLS,
};
#endif

/* The parameters as PyTorch holds them (NULL for absent ones: no bias, no batch norm). */
typedef struct {
    const float *w1, *b1;                         /* conv1: (C1, 1, K1, K1), (C1) */
    const float *w2, *b2;                         /* conv2: (C2, C1, K2, K2), (C2) */
    const float *gamma1, *beta1, *gamma2, *beta2; /* batch norms' affine parameters (NULL: 1 and 0) */
    float *mean1, *var1, *mean2, *var2;           /* running statistics: read in inference, moved in training */
    float eps, momentum;                          /* momentum: this step's factor for the running statistics */
} LenetParams;

typedef struct {
    const float *w1, *b1, *w2, *b2, *w3, *b3; /* the three Linear layers: weights (out, in), biases */
} LenetClassifier;

/* ---------------------------------------------------------------------------------------------------- */
/* Lane-wise basics */

LENET_INLINE vf vsplat(float a) { return (vf){0} + a; }
LENET_INLINE vf vselect(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
/* b > a ? b : a, and b < a ? b : a (x86's max and min instructions, operands in this order, are exactly that) */
#if LENET_V == 16
LENET_INLINE vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)b, (__m512)a); }
LENET_INLINE vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)b, (__m512)a); }
#elif LENET_V == 8 && defined(__AVX2__)
LENET_INLINE vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)b, (__m256)a); }
LENET_INLINE vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)b, (__m256)a); }
#else
LENET_INLINE vf vmax(vf a, vf b) { return vselect(b > a, b, a); }
LENET_INLINE vf vmin(vf a, vf b) { return vselect(b < a, b, a); }
#endif

/* The sum of v's lanes, pairwise (the same order everywhere). */
LENET_INLINE float vhsum(vf v) {
    for (int w = V / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) v[l] += v[l + w];
    return v[0];
}

/* 1 / a for 1 <= a < 2^127: the hardware's estimate and Newton steps where division is slow, else divided. */
LENET_INLINE vf vrecip(vf a) {
#if LENET_V == 16
    const vf e = (vf)_mm512_rcp14_ps((__m512)a);
    return e * (1.0f - a * e) + e;
#elif LENET_V == 8 && defined(__AVX2__)
    vf e = (vf)_mm256_rcp_ps((__m256)a);
    e = e * (1.0f - a * e) + e;
    return e * (1.0f - a * e) + e;
#else
    return 1.0f / a;
#endif
}

/* exp(x), to about 1 ulp, for x held to [-87, 88] (beyond which sigmoid and tanh are 0 or 1 in float):
 * 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 (ln 2 in two parts), exp(r) by a degree-7 polynomial
 * fitted for relative error, 2^n put together in the exponent bits (n + 127 in 1..254). */
LENET_INLINE vf vexp(vf x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer, kept in the low bits */
    x = vmin(vmax(x, vsplat(-87.0f)), vsplat(88.0f));
    const vf t = x * 1.44269504088896341f + magic, n = t - magic;
    vf r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p = vsplat(1.3843644410e-3f);
    p = p * r + 8.3741638809e-3f;
    p = p * r + 4.1668001562e-2f;
    p = p * r + 1.6666431725e-1f;
    p = p * r + 4.9999994040e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const vi bits = ((vi)t - (0x4B400000 - 127)) << 23; /* t's low bits are n */
    return p * (vf)bits;
}

/* sigmoid(z) = 1 / (1 + exp(-z)): the only sigmoid, for every engine and Keras' output head. */
LENET_INLINE vf vsigmoid(vf z) { return vrecip(1.0f + vexp(-z)); }

/* tanh(z): z + z^3 P(z^2) for |z| < 0.625 (Cephes' tanhf), else sign(z) (1 - 2 / (exp(2 |z|) + 1)). */
LENET_INLINE vf vtanh(vf z) {
    const vf a = vselect(z < 0.0f, -z, z), zz = z * z;
    vf p = vsplat(-5.70498872745e-3f);
    p = p * zz + 2.06390887954e-2f;
    p = p * zz - 5.37397155531e-2f;
    p = p * zz + 1.33314422036e-1f;
    p = p * zz - 3.33332819422e-1f;
    const vf small = p * zz * z + z;
    const vf big = 1.0f - 2.0f * vrecip(vexp(a + a) + 1.0f);
    return vselect(a < 0.625f, small, vselect(z < 0.0f, -big, big));
}

/* The activation `kind` (slope: LeakyReLU's negative slope, >= 0). */
LENET_INLINE vf act_forward(vf z, int kind, float slope) {
    switch (kind) {
    case ACT_SIGMOID: return vsigmoid(z);
    case ACT_RELU: return vselect(z > 0.0f, z, (vf){0});
    case ACT_TANH: return vtanh(z);
    case ACT_LEAKY: return vselect(z > 0.0f, z, z * slope);
    default: return z;
    }
}

/* d loss / d z from g = d loss / d s and the stored s = act(z), as PyTorch's *_backward ops compute it
 * (LeakyReLU's from s: s > 0 exactly where z > 0, the slope being >= 0). */
LENET_INLINE vf act_backward(vf g, vf s, int kind, float slope) {
    switch (kind) {
    case ACT_SIGMOID: return g * (1.0f - s) * s;
    case ACT_RELU: return vselect(s > 0.0f, g, (vf){0});
    case ACT_TANH: return g * (1.0f - s * s);
    case ACT_LEAKY: return vselect(s > 0.0f, g, g * slope);
    default: return g;
    }
}

/* 2x2 pooling of a, b (top row) and c, d (bottom row), in PyTorch's order. */
LENET_INLINE vf pool_forward(int kind, vf a, vf b, vf c, vf d) {
    if (kind == POOL_AVG) return (((a + b) + c) + d) * 0.25f;
    return vmax(vmax(vmax(a, b), c), d);
}

/* The gradient g of one 2x2 window routed back to its four inputs (a, b top, c, d bottom, as stored after
 * the activation): a quarter each for average pooling; all of it to PyTorch's pick, the first maximum, for
 * max pooling; then through the activation. out[0..3] for a, b, c, d. */
LENET_INLINE void pool_backward(int kind, int act, float slope, vf g, vf a, vf b, vf c, vf d, vf *out) {
    if (kind == POOL_AVG) {
        const vf h = g * 0.25f;
        out[0] = act_backward(h, a, act, slope), out[1] = act_backward(h, b, act, slope);
        out[2] = act_backward(h, c, act, slope), out[3] = act_backward(h, d, act, slope);
    } else {
        const vf m = vmax(vmax(vmax(a, b), c), d), zero = {0};
        const vi ka = a == m, kb = ~ka & (b == m), kc = ~(ka | kb) & (c == m), kd = ~(ka | kb | kc);
        out[0] = vselect(ka, act_backward(g, a, act, slope), zero);
        out[1] = vselect(kb, act_backward(g, b, act, slope), zero);
        out[2] = vselect(kc, act_backward(g, c, act, slope), zero);
        out[3] = vselect(kd, act_backward(g, d, act, slope), zero);
    }
}

/* ---------------------------------------------------------------------------------------------------- */
/* The loss */

/* Keras' output head, in place on n vectors of the last Linear's outputs: logits log(clamp(sigmoid(z), eps,
 * 1 - eps)), clamped in float as torch clamps, and gate = d logit / d z = 1 - sigmoid(z) where the clamp lets
 * the gradient through (torch's rule: eps <= sigmoid(z) <= 1 - eps, bounds included), else 0. */
LENET_INLINE void cliplog_forward(vf *z, vf *gate, int n, double eps) {
    const float lo = (float)eps, hi = (float)(1.0 - eps); /* torch's casts of Python's floats */
    for (int i = 0; i < n; i++) {
        const vf p = vsigmoid(z[i]);
        gate[i] = vselect((p >= lo) & (p <= hi), 1.0f - p, (vf){0});
        const vf c = vselect(p < lo, vsplat(lo), vselect(p > hi, vsplat(hi), p));
        for (int l = 0; l < V; l++) z[i][l] = logf(c[l]);
    }
}

/* Cross-entropy with label smoothing of one sample's logits z[o * stride], o < classes, as PyTorch computes
 * it; returns the loss, adds 1 to *correct when the first largest logit is the label's, and overwrites the
 * logits with scale * d loss / d logit. */
static inline float cross_entropy(float *z, long stride, int classes, int label, float smoothing, float scale,
                                  float *correct) {
    float m = z[0];
    int best = 0;
    for (int o = 1; o < classes; o++)
        if (z[o * stride] > m) {
            m = z[o * stride];
            best = o;
        }
    double sum = 0.0;
    for (int o = 0; o < classes; o++) sum += exp((double)(z[o * stride] - m));
    const float lse = m + (float)log(sum);
    float mean_logp = 0.0f;
    for (int o = 0; o < classes; o++) mean_logp += z[o * stride] - lse;
    mean_logp /= classes;
    const float loss = -(1.0f - smoothing) * (z[label * stride] - lse) - smoothing * mean_logp;
    *correct += best == label;
    for (int o = 0; o < classes; o++) {
        const float p = expf(z[o * stride] - lse);
        const float target = smoothing / classes + (o == label ? 1.0f - smoothing : 0.0f);
        z[o * stride] = (p - target) * scale;
    }
    return loss;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Sums over the batch, and the copies into PyTorch's layouts */

/* out[k] = the sum over p < parts of in[p * stride + k], k < n, added in part order: sums over a batch are
 * taken per fixed part (chunk, group) and then added here, so that no result depends on which thread
 * computed which part, or how many there were. out may be in (part 0). */
static inline void reduce_parts(const float *in, long stride, int parts, int n, float *out) {
    int k = 0;
    for (; k + V <= n; k += V) { /* V sums at a time, each added in the same order as one alone */
        vf sum = *(const vf *)(in + k);
        for (int p = 1; p < parts; p++) sum += *(const vf *)(in + (long)p * stride + k);
        *(vf *)(out + k) = sum;
    }
    for (; k < n; k++) {
        float sum = in[k];
        for (int p = 1; p < parts; p++) sum += in[(long)p * stride + k];
        out[k] = sum;
    }
}

/* The same in double precision (batch norm's statistics). */
static inline void reduce_parts_double(const double *in, long stride, int parts, int n, double *out) {
    for (int k = 0; k < n; k++) {
        double sum = in[k];
        for (int p = 1; p < parts; p++) sum += in[(long)p * stride + k];
        out[k] = sum;
    }
}

/* rows x cols floats from rows `stride` apart (padded to whole vectors) into dst, packed; returns the end. */
static inline float *unpad_rows(float *dst, const float *src, int rows, int cols, long stride) {
    for (int r = 0; r < rows; r++, dst += cols) memcpy(dst, src + r * stride, sizeof(float) * cols);
    return dst;
}

#if LENET_FC
/* The classifier's weight and bias gradients, from rows padded to whole vectors (W1's NFP floats apart, W2's
 * F1P, W3's F2P) into PyTorch's layouts, one after the other (CLASSIFIER_GRADS floats). */
static inline void classifier_grads_out(float *g, const float *w1, const float *b1, const float *w2, const float *b2,
                                        const float *w3, const float *b3) {
    g = unpad_rows(g, w1, H1, NF, NFP);
    g = unpad_rows(g, b1, 1, H1, 0);
    g = unpad_rows(g, w2, H2, H1, F1P);
    g = unpad_rows(g, b2, 1, H2, 0);
    g = unpad_rows(g, w3, NCLS, H2, F2P);
    unpad_rows(g, b3, 1, NCLS, 0);
}
#endif

/* ---------------------------------------------------------------------------------------------------- */
/* Threads (pool.c) and the floating-point mode */

/* fn(ctx, task, thread) for every task < tasks, spread over `threads` threads (the caller's among them) as
 * they come free; each thread also gets fn(ctx, LENET_THREAD_START, thread) before its first task and
 * fn(ctx, LENET_THREAD_END, thread) after its last. thread < threads tells the thread's workspace. One
 * mechanism on every platform (POSIX threads), so no compiler needs OpenMP. */
enum { LENET_THREAD_START = -1, LENET_THREAD_END = -2 };
typedef void (*lenet_task)(void *ctx, int task, int thread);
void lenet_parallel(int threads, int tasks, lenet_task fn, void *ctx);

/* Denormals flushed to zero, in and out, until lenet_fp_restore: saturated sigmoids make activations and
 * gradients under 2^-126 that cost a microcode assist per operation on x86. */
static inline unsigned long lenet_fp_flush(void) {
#if defined(__x86_64__) || defined(__i386__)
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | _MM_FLUSH_ZERO_ON | _MM_DENORMALS_ZERO_ON);
    return csr;
#elif defined(__aarch64__)
    unsigned long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | (1ul << 24))); /* FZ */
    return fpcr;
#else
    return 0;
#endif
}

static inline void lenet_fp_restore(unsigned long mode) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr((unsigned)mode);
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, %0" : : "r"(mode));
#else
    (void)mode;
#endif
}

#include "api.h"

#endif /* LENET_COMMON_H */
