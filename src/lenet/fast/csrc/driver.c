/* A test driver, not part of the library: runs the engines on inputs read from a file and writes what they
 * computed, so that kernels built for another machine (ARM64 under qemu-user, tests/test_fast_arm.py) can be
 * checked against PyTorch's results computed on this one.
 *
 *   driver IN OUT THREADS
 *
 * IN: int32 batch; float32 smoothing, scale, eps, momentum; then arrays, each an int32 count (0: NULL) and
 * its values: float32 w1 b1 w2 b2 gamma1 beta1 gamma2 beta2 mean1 var1 mean2 var2 (LenetParams), fw1 fb1 fw2
 * fb2 fw3 fb3 (LenetClassifier), x (B, S, S), gf (B, NF); int64 y (B).
 * OUT: float32 arrays, each an int32 count and its values:
 *   f        lenet_frontend_forward, training (batch statistics with batch norm)
 *   stats    the running statistics after it: mean1 var1 mean2 var2 (empty without batch norm)
 *   grads    lenet_frontend_backward from gf
 *   step     the whole training step's gradients, then the summed loss and correct count: lenet_lanes_step
 *            where the lane engine takes the net, else forward, lenet_classifier_step and backward
 *   lanes_f, lanes_z   lenet_lanes_forward (empty where the lane engine does not take the net)
 * and on stdout the build's vectors: "NEON 4".
 */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

static FILE *in, *out;

static void *read_array(size_t item) {
    int32_t n;
    if (fread(&n, 4, 1, in) != 1) exit(3);
    if (n == 0) return NULL;
    void *p = malloc((size_t)n * item);
    if (!p || fread(p, item, (size_t)n, in) != (size_t)n) exit(3);
    return p;
}

static void write_array(const float *p, long n) {
    const int32_t count = (int32_t)n;
    fwrite(&count, 4, 1, out);
    if (n) fwrite(p, 4, (size_t)n, out);
}

static float *floats(long n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

int main(int argc, char **argv) {
    if (argc != 4 || !(in = fopen(argv[1], "rb")) || !(out = fopen(argv[2], "wb"))) return 2;
    const int threads = atoi(argv[3]);
    printf("%s %d\n", lenet_isa(), lenet_vector_floats());
    int32_t batch;
    float hyper[4]; /* smoothing, scale, eps, momentum */
    if (fread(&batch, 4, 1, in) != 1 || fread(hyper, 4, 4, in) != 4) return 3;
    float *t[18];
    for (int i = 0; i < 18; i++) t[i] = read_array(4);
    const float *x = read_array(4), *gf = read_array(4);
    const int64_t *y = read_array(8);
    LenetParams prm = {t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], hyper[2], hyper[3]};
    LenetClassifier cls = {t[12], t[13], t[14], t[15], t[16], t[17]};
    const long b = batch;

    /* the front end, forward (training) and backward */
    float *stats = floats(2 * (C1 + C2)), *s1 = floats(b * lenet_s1_floats()), *p1 = floats(b * lenet_p1_floats());
    float *s2 = floats(b * lenet_s2_floats()), *f = floats(b * NF);
    float *ws = floats(lenet_frontend_workspace_floats(threads));
    double *dsum = calloc((size_t)lenet_frontend_chunk_doubles(batch) + 1, sizeof(double));
    lenet_frontend_forward(batch, threads, &prm, 1, x, stats, s1, p1, s2, f, ws, dsum);
    write_array(f, b * NF);
    if (BN) {
        write_array(prm.mean1, C1), write_array(prm.var1, C1), write_array(prm.mean2, C2), write_array(prm.var2, C2);
    } else {
        write_array(NULL, 0), write_array(NULL, 0), write_array(NULL, 0), write_array(NULL, 0);
    }
    float *grads = floats(FRONT_GRADS + lenet_classifier_grad_floats() + 2);
    float *parts = floats(lenet_frontend_chunk_floats(batch)), *gy1 = floats(b * lenet_s1_floats());
    float *gy2 = floats(b * lenet_s2_floats());
    prm.momentum = 0.0f;
    lenet_frontend_backward(batch, threads, &prm, stats, x, s1, p1, s2, gf, gy1, gy2, grads, parts, dsum, ws);
    write_array(grads, FRONT_GRADS);

#if LENET_FC
    /* the whole step */
    float result[2] = {0, 0};
    int status;
    if (lenet_lanes_supported()) {
        float *lanes = floats(lenet_lanes_workspace_floats(batch, threads));
        status = lenet_lanes_step(batch, threads, &prm, &cls, x, y, hyper[0], hyper[1], grads, result, lanes);
        write_array(grads, FRONT_GRADS + CLASSIFIER_GRADS);
        write_array(result, 2);
        float *z = floats(b * NCLS);
        lenet_lanes_forward(batch, threads, &prm, &cls, x, f, z, lanes);
        write_array(f, b * NF), write_array(z, b * NCLS);
    } else {
        float *cws = floats(lenet_classifier_workspace_floats(batch, threads)), *g = floats(b * NF);
        lenet_frontend_forward(batch, threads, &prm, 1, x, stats, s1, p1, s2, f, ws, dsum);
        status = lenet_classifier_step(batch, threads, &cls, f, y, hyper[0], hyper[1], g, grads + FRONT_GRADS,
                                       result, cws);
        lenet_frontend_backward(batch, threads, &prm, stats, x, s1, p1, s2, g, gy1, gy2, grads, parts, dsum, ws);
        write_array(grads, FRONT_GRADS + CLASSIFIER_GRADS);
        write_array(result, 2);
        write_array(NULL, 0), write_array(NULL, 0);
    }
    if (status) return 4;
#else
    (void)cls, (void)y;
#endif
    return fclose(out) == 0 ? 0 : 5;
}
