/* The per-sample classifier, for training: Linear(NF, H1) -> act -> Linear(H1, H2) -> act -> Linear(H2, NCLS)
 * (with LENET_CLIPLOG, then Keras' head), the cross-entropy with label smoothing, and back: forward, loss
 * and backward in one pass over the batch, from the front end's features f to their gradient gf, so that a
 * training step with batch norm costs no PyTorch operation. Compiled when LENET_FC = 1.
 *
 * Threads take chunks of FCHUNK samples; a chunk's products are register-blocked 6 x 4V tiles, and its
 * weight gradients are summed per chunk, then over the chunks in chunk order (reduce_parts).
 */
#include "common.h"

#if LENET_FC
enum { FCHUNK = 48 }; /* samples per chunk */

/* Repacked weights (in-major for the forward, padded out-major for the input gradients) and biases, at the
 * head of the workspace; then each chunk's partial sums (C_SIZE floats each); then each thread's rows. */
enum {
    Q_W1T = 0,                      /* (NF, F1P) */
    Q_W2T = Q_W1T + NF * F1P,       /* (H1, F2P) */
    Q_W3T = Q_W2T + H1 * F2P,       /* (H2, F3P) */
    Q_W1 = Q_W3T + H2 * F3P,        /* (H1, NFP) */
    Q_W2 = Q_W1 + H1 * NFP,         /* (H2, F1P) */
    Q_W3 = Q_W2 + H2 * F1P,         /* (NCLS, F2P) */
    Q_B = Q_W3 + NCLS * F2P,        /* biases: F1P, F2P, F3P */
    Q_SIZE = LENET_ROUNDV(Q_B + F1P + F2P + F3P),
    C_W1 = 0,                       /* a chunk's sums: gW1 (H1, NFP), gb1 (F1P), gW2 (H2, F1P), ... */
    C_B1 = C_W1 + H1 * NFP,
    C_W2 = C_B1 + F1P,
    C_B2 = C_W2 + H2 * F1P,
    C_W3 = C_B2 + F2P,
    C_B3 = C_W3 + NCLS * F2P,
    C_LOSS = C_B3 + F3P,            /* the chunk's summed loss and correct count */
    C_SIZE = LENET_ROUNDV(C_LOSS + 2),
    T_H1 = 0,                       /* per thread, for one chunk: h1, h2, the logits' gradient, ... */
    T_H2 = T_H1 + FCHUNK * F1P,
    T_DZ = T_H2 + FCHUNK * F2P,
    T_GATE = T_DZ + FCHUNK * F3P,   /* Keras' head's gates */
    T_G2 = T_GATE + FCHUNK * F3P,
    T_G1 = T_G2 + FCHUNK * F2P,
    T_FP = T_G1 + FCHUNK * F1P,     /* f's rows padded to NFP (when NF is not whole vectors) */
    T_GF = T_FP + FCHUNK * NFP,     /* and gf's */
    C_THREAD = T_GF + FCHUNK * NFP,
};

long lenet_classifier_workspace_floats(int batch, int threads) {
    return Q_SIZE + (long)((batch + FCHUNK - 1) / FCHUNK) * C_SIZE + (long)threads * C_THREAD;
}

/* The products, all as C[i][j] (+)= sum_t A[i][t] B[t][j], j in whole vectors: a block of 6 rows by NV
 * vectors of C is 6 * NV accumulators in registers; each step t loads NV vectors of B and broadcasts 6 values
 * of A (rows of A given by pointers, a_t apart; rows of B b_t apart). */
LENET_INLINE void block6(const int nv, int steps, const float *const *a, long a_t, const float *b, long b_t,
                         float *const *c) {
    vf acc[6][4];
    for (int i = 0; i < 6; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = (vf){0};
    for (int t = 0; t < steps; t++) {
        vf bv[4];
        for (int v = 0; v < nv; v++) bv[v] = *(const vf *)(b + t * b_t + v * V);
        for (int i = 0; i < 6; i++) {
            const float av = a[i][t * a_t];
            for (int v = 0; v < nv; v++) acc[i][v] += bv[v] * av;
        }
    }
    for (int i = 0; i < 6; i++)
        if (c[i])
            for (int v = 0; v < nv; v++) *(vf *)(c[i] + v * V) = acc[i][v];
}

LENET_NOINLINE void block6x1(int steps, const float *const *a, long a_t, const float *b, long b_t, float *const *c) {
    block6(1, steps, a, a_t, b, b_t, c);
}
LENET_NOINLINE void block6x2(int steps, const float *const *a, long a_t, const float *b, long b_t, float *const *c) {
    block6(2, steps, a, a_t, b, b_t, c);
}
LENET_NOINLINE void block6x3(int steps, const float *const *a, long a_t, const float *b, long b_t, float *const *c) {
    block6(3, steps, a, a_t, b, b_t, c);
}
LENET_NOINLINE void block6x4(int steps, const float *const *a, long a_t, const float *b, long b_t, float *const *c) {
    block6(4, steps, a, a_t, b, b_t, c);
}

/* C (rows x cols, rows c_row apart) = A (rows x steps; element (i, t) at a + i * a_row + t * a_t) times B
 * (steps x cols, rows b_t apart); cols a multiple of V. Rows beyond the last block are computed on row 0's
 * data and not stored. */
static void product(int rows, int cols, int steps, const float *a, long a_row, long a_t, const float *b, long b_t,
                    float *c, long c_row) {
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
            switch (LENET_MIN((cols - j0) / V, 4)) {
            case 1: block6x1(steps, ap, a_t, b + j0, b_t, cj); break;
            case 2: block6x2(steps, ap, a_t, b + j0, b_t, cj); break;
            case 3: block6x3(steps, ap, a_t, b + j0, b_t, cj); break;
            default: block6x4(steps, ap, a_t, b + j0, b_t, cj); break;
            }
        }
    }
}

/* y = act(y + bias) on n rows of `width` floats (a multiple of V; the bias broadcast along rows). */
static void bias_act_forward(int n, int width, const float *bias, float *y, int kind, float slope) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < width; i += V)
            *(vf *)(y + s * width + i) = act_forward(*(vf *)(y + s * width + i) + *(const vf *)(bias + i), kind, slope);
}

/* g = act'(h) g on n rows of `width` floats, the lanes from `real` on zero. */
static void act_rows_backward(int n, int width, int real, const float *h, float *g, int kind, float slope) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < width; i += V) {
            vf lane;
            for (int l = 0; l < V; l++) lane[l] = (float)(i + l);
            const vf d = act_backward(*(vf *)(g + s * width + i), *(const vf *)(h + s * width + i), kind, slope);
            *(vf *)(g + s * width + i) = vselect(lane < (float)real, d, (vf){0});
        }
}

/* sums[o] += sum over n rows of g[row][o] (rows `width` floats). */
static void column_sums(int n, int width, const float *g, float *sums) {
    for (int s = 0; s < n; s++)
        for (int i = 0; i < width; i++) sums[i] += g[s * width + i];
}

typedef struct {
    int batch, chunks;
    const LenetClassifier *prm;
    const float *f;
    const int64_t *y;
    float smoothing, scale;
    float *gf, *ws, *q, *parts;
} Step;

/* The weights repacked: task 0 the small layers and the biases, then rows of W1 (both layouts) in blocks. */
enum { REPACK = 64, W1T_TASKS = (NF + REPACK - 1) / REPACK, W1_TASKS = (H1 + REPACK - 1) / REPACK };
static void repack_task(void *ctx, int task, int thread) {
    const Step *st = ctx;
    const LenetClassifier *prm = st->prm;
    float *q = st->q;
    (void)thread;
    if (task < 0) return;
    if (task == 0) {
        for (int k = 0; k < H1; k++)
            for (int o = 0; o < F2P; o++) q[Q_W2T + k * F2P + o] = o < H2 ? prm->w2[o * H1 + k] : 0.0f;
        for (int k = 0; k < H2; k++)
            for (int o = 0; o < F3P; o++) q[Q_W3T + k * F3P + o] = o < NCLS ? prm->w3[o * H2 + k] : 0.0f;
        for (int o = 0; o < H2; o++)
            for (int k = 0; k < F1P; k++) q[Q_W2 + o * F1P + k] = k < H1 ? prm->w2[o * H1 + k] : 0.0f;
        for (int o = 0; o < NCLS; o++)
            for (int k = 0; k < F2P; k++) q[Q_W3 + o * F2P + k] = k < H2 ? prm->w3[o * H2 + k] : 0.0f;
        float *b = q + Q_B;
        memset(b, 0, sizeof(float) * (F1P + F2P + F3P));
        for (int o = 0; o < H1; o++) b[o] = prm->b1 ? prm->b1[o] : 0.0f;
        for (int o = 0; o < H2; o++) b[F1P + o] = prm->b2 ? prm->b2[o] : 0.0f;
        for (int o = 0; o < NCLS; o++) b[F1P + F2P + o] = prm->b3 ? prm->b3[o] : 0.0f;
        return;
    }
    if (task <= W1T_TASKS) { /* W1 transposed: rows are input features */
        const int k0 = (task - 1) * REPACK;
        for (int k = k0; k < LENET_MIN(k0 + REPACK, NF); k++)
            for (int o = 0; o < F1P; o++) q[Q_W1T + k * F1P + o] = o < H1 ? prm->w1[o * NF + k] : 0.0f;
    } else { /* W1 padded */
        const int o0 = (task - 1 - W1T_TASKS) * REPACK;
        for (int o = o0; o < LENET_MIN(o0 + REPACK, H1); o++) {
            memcpy(q + Q_W1 + o * NFP, prm->w1 + o * NF, sizeof(float) * NF);
            memset(q + Q_W1 + o * NFP + NF, 0, sizeof(float) * (NFP - NF));
        }
    }
}

/* One chunk of samples forward, through the loss and back, its weight gradients into its part. */
static void chunk_task(void *ctx, int chunk, int thread) {
    const Step *st = ctx;
    if (chunk < 0) return;
    const float *q = st->q, *b1 = q + Q_B, *b2 = b1 + F1P, *b3 = b2 + F2P;
    float *w = st->ws + Q_SIZE + (long)st->chunks * C_SIZE + (long)thread * C_THREAD;
    float *h1 = w + T_H1, *h2 = w + T_H2, *dz = w + T_DZ, *g2 = w + T_G2, *g1 = w + T_G1;
    float *part = st->parts + (long)chunk * C_SIZE;
    memset(part, 0, sizeof(float) * C_SIZE);
    const int start = chunk * FCHUNK, n = LENET_MIN(st->batch - start, FCHUNK);
    const float *x = st->f + (long)start * NF;
    long xrow = NF;
    if (NF != NFP) { /* rows of f padded to whole vectors, for the weight gradient */
        float *fp = w + T_FP;
        memset(fp, 0, sizeof(float) * FCHUNK * NFP);
        for (int s = 0; s < n; s++) memcpy(fp + s * NFP, x + s * NF, sizeof(float) * NF);
        x = fp;
        xrow = NFP;
    }
    /* forward */
    product(n, F1P, NF, x, xrow, 1, q + Q_W1T, F1P, h1, F1P);
    bias_act_forward(n, F1P, b1, h1, LENET_ACTF, LENET_SLOPEF);
    product(n, F2P, H1, h1, F1P, 1, q + Q_W2T, F2P, h2, F2P);
    bias_act_forward(n, F2P, b2, h2, LENET_ACTF, LENET_SLOPEF);
    product(n, F3P, H2, h2, F2P, 1, q + Q_W3T, F3P, dz, F3P);
    bias_act_forward(n, F3P, b3, dz, ACT_NONE, 0.0f);
    /* loss, correct count, d loss / d logits (in place of the logits) */
#if LENET_CLIPLOG
    cliplog_forward((vf *)dz, (vf *)(w + T_GATE), n * F3P / V, LENET_CLIP_EPS);
#endif
    float loss = 0.0f, correct = 0.0f;
    for (int s = 0; s < n; s++) {
        loss += cross_entropy(dz + s * F3P, 1, NCLS, (int)st->y[start + s], st->smoothing, st->scale, &correct);
        for (int o = 0; o < F3P; o++) /* through Keras' head's gates; the padding lanes zero */
            dz[s * F3P + o] = o < NCLS ? dz[s * F3P + o] * (LENET_CLIPLOG ? w[T_GATE + s * F3P + o] : 1.0f) : 0.0f;
    }
    part[C_LOSS] = loss;
    part[C_LOSS + 1] = correct;
    /* backward: g2 = dz W3 * act'(h2), g1 = g2 W2 * act'(h1), gf = g1 W1 */
    product(n, F2P, NCLS, dz, F3P, 1, q + Q_W3, F2P, g2, F2P);
    act_rows_backward(n, F2P, H2, h2, g2, LENET_ACTF, LENET_SLOPEF);
    product(n, F1P, H2, g2, F2P, 1, q + Q_W2, F1P, g1, F1P);
    act_rows_backward(n, F1P, H1, h1, g1, LENET_ACTF, LENET_SLOPEF);
    if (NF == NFP) {
        product(n, NFP, H1, g1, F1P, 1, q + Q_W1, NFP, st->gf + (long)start * NF, NF);
    } else {
        float *rows = w + T_GF;
        product(n, NFP, H1, g1, F1P, 1, q + Q_W1, NFP, rows, NFP);
        for (int s = 0; s < n; s++) memcpy(st->gf + (long)(start + s) * NF, rows + s * NFP, sizeof(float) * NF);
    }
    /* the chunk's weight gradients: gW[o][k] = sum_s g[s][o] x[s][k] */
    product(NCLS, F2P, n, dz, 1, F3P, h2, F2P, part + C_W3, F2P);
    product(H2, F1P, n, g2, 1, F2P, h1, F1P, part + C_W2, F1P);
    product(H1, NFP, n, g1, 1, F1P, x, xrow, part + C_W1, NFP);
    column_sums(n, F3P, dz, part + C_B3);
    column_sums(n, F2P, g2, part + C_B2);
    column_sums(n, F1P, g1, part + C_B1);
}

/* The chunks' sums in chunk order, into chunk 0's place, a block of REDUCE floats per task. */
enum { REDUCE = 64 * V };
static void reduce_task(void *ctx, int task, int thread) {
    const Step *st = ctx;
    (void)thread;
    if (task < 0) return;
    const int from = task * REDUCE;
    reduce_parts(st->parts + from, C_SIZE, st->chunks, LENET_MIN(REDUCE, C_SIZE - from), st->parts + from);
}

/* One training step's classifier: from f (B, NF) and labels y, the summed per-sample loss and the number of
 * correct predictions (out[0], out[1]); gf (B, NF), d loss / d f; and the classifier's weight and bias
 * gradients in PyTorch's layouts, one after the other (CLASSIFIER_GRADS floats). The loss of a sample is
 * PyTorch's cross-entropy with label smoothing; every gradient is scaled by `scale` (the trainer's
 * 1 / denominator). Returns -1 if a label is out of range, else 0. */
int lenet_classifier_step(int batch, int threads, const LenetClassifier *prm, const float *f, const int64_t *y,
                          float smoothing, float scale, float *gf, float *grads, float *out, float *ws) {
    for (int i = 0; i < batch; i++)
        if (y[i] < 0 || y[i] >= NCLS) return -1;
    Step st = {.batch = batch, .chunks = (batch + FCHUNK - 1) / FCHUNK, .prm = prm, .f = f, .y = y,
               .smoothing = smoothing, .scale = scale, .gf = gf, .ws = ws, .q = ws, .parts = ws + Q_SIZE};
    lenet_parallel(threads, 1 + W1T_TASKS + W1_TASKS, repack_task, &st);
    lenet_parallel(threads, st.chunks, chunk_task, &st);
    lenet_parallel(threads, (C_SIZE + REDUCE - 1) / REDUCE, reduce_task, &st);
    const float *p = st.parts;
    classifier_grads_out(grads, p + C_W1, p + C_B1, p + C_W2, p + C_B2, p + C_W3, p + C_B3);
    out[0] = p[C_LOSS];
    out[1] = p[C_LOSS + 1];
    return 0;
}
#endif
