/* What the library is: its vectors, its interface (api.h) and the shape's sizes. */
#include <stdio.h>

#include "common.h"

/* V when built for AVX-512 (16), AVX2 with FMA (8) or NEON (4), else 0: Python takes no other build. */
int lenet_vector_floats(void) { return LENET_ISA[0] ? V : 0; }
const char *lenet_isa(void) { return LENET_ISA; }

/* "version=2 vector=16 params=112 classifier=48 lenet_frontend_forward=12 ...": struct sizes in bytes and
 * each entry point's argument count, as kernels.py checks them. */
const char *lenet_interface(void) {
    static char text[1024];
    int n = snprintf(text, sizeof text, "version=%d vector=%d params=%d classifier=%d", LENET_INTERFACE_VERSION,
                     lenet_vector_floats(), (int)sizeof(LenetParams), (int)sizeof(LenetClassifier));
#define LENET_COUNT(ret, name, params)                                                                          \
    if (n > 0 && n < (int)sizeof text) n += snprintf(text + n, sizeof text - n, " %s=%d", #name, LENET_NARGS params);
    LENET_API(LENET_COUNT)
#undef LENET_COUNT
    return text;
}

int lenet_features(void) { return NF; }
int lenet_front_grad_floats(void) { return FRONT_GRADS; }
int lenet_classifier_grad_floats(void) {
#if LENET_FC
    return CLASSIFIER_GRADS;
#else
    return 0;
#endif
}
