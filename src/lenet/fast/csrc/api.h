/* The library's interface: every function Python calls with arguments, declared once here (kernels.py
 * mirrors it in ctypes). lenet_interface() describes it, struct sizes and argument counts included, and
 * Python compares that with its own before the first call: a library from another version of this source
 * is then one clear error instead of a crash. */
#ifndef LENET_API_H
#define LENET_API_H

#define LENET_INTERFACE_VERSION 2 /* 1: the single fastpath.c */

#define LENET_API(X)                                                                                             \
    X(void, lenet_use_host_threads, (void *parallel, void *thread_num))                                          \
    X(long, lenet_frontend_workspace_floats, (int threads))                                                    \
    X(long, lenet_frontend_chunk_floats, (int batch))                                                          \
    X(long, lenet_frontend_chunk_doubles, (int batch))                                                         \
    X(void, lenet_frontend_forward, (int batch, int threads, const LenetParams *prm, int train, const float *x, \
                                     float *stats, float *s1, float *p1, float *s2, float *f, float *ws,         \
                                     double *dsum))                                                            \
    X(void, lenet_frontend_backward, (int batch, int threads, const LenetParams *prm, const float *stats,        \
                                      const float *x, const float *s1, const float *p1, const float *s2,         \
                                      const float *gf, float *gy1, float *gy2, float *grads, float *parts,       \
                                      double *dsum, float *ws))                                                \
    X(long, lenet_classifier_workspace_floats, (int batch, int threads))                                       \
    X(int, lenet_classifier_step, (int batch, int threads, const LenetClassifier *prm, const float *f,           \
                                   const int64_t *y, float smoothing, float scale, float *gf, float *grads,      \
                                   float *out, float *ws))                                                     \
    X(long, lenet_lanes_workspace_floats, (int batch, int threads))                                            \
    X(int, lenet_lanes_step, (int batch, int threads, const LenetParams *prm, const LenetClassifier *cls,        \
                              const float *x, const int64_t *y, float smoothing, float scale, float *grads,      \
                              float *out, float *ws))                                                          \
    X(void, lenet_lanes_forward, (int batch, int threads, const LenetParams *prm, const LenetClassifier *cls,    \
                                  const float *x, float *f, float *z, float *ws))                            \
    X(int, lenet_reference_step, (int batch, const LenetParams *prm, const LenetClassifier *cls, const float *x, \
                                  const int64_t *y, float smoothing, float scale, float *grads, float *out,      \
                                  float *features))

/* and without arguments: the shape's sizes and what the build supports */
#define LENET_QUERIES(X)                                                                                         \
    X(int, lenet_vector_floats)                                                                                  \
    X(const char *, lenet_isa)                                                                                   \
    X(const char *, lenet_interface)                                                                             \
    X(int, lenet_features)                                                                                       \
    X(int, lenet_front_grad_floats)                                                                              \
    X(int, lenet_classifier_grad_floats)                                                                         \
    X(int, lenet_s1_floats)                                                                                      \
    X(int, lenet_p1_floats)                                                                                      \
    X(int, lenet_s2_floats)                                                                                      \
    X(int, lenet_lanes_supported)

#define LENET_DECLARE(ret, name, params) ret name params;
#define LENET_DECLARE_QUERY(ret, name) ret name(void);
LENET_API(LENET_DECLARE)
LENET_QUERIES(LENET_DECLARE_QUERY)

/* The number of parameters in a parenthesised list of declarations (none of which has a comma in it). */
#define LENET_NARGS(...) LENET_NARGS_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define LENET_NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, n, ...) n

#endif /* LENET_API_H */
