/* AVX2, where the processor has it, for both libraries (float and int8): the build targets the
 * compiler's baseline (SSE2 on x86-64, so -O2 alone), and code compiled for AVX2 (functions marked
 * IOTNAS_AVX2_FN, or a file under a target pragma) runs only after iotnas_avx2_present() says so
 * (gcc and clang; -DIOTNAS_NO_AVX2 leaves it out). Other targets (Cortex-M) define nothing here. */
#ifndef IOTNAS_AVX2_H
#define IOTNAS_AVX2_H

#if defined(__SSE2__) && defined(__GNUC__) && !defined(IOTNAS_NO_AVX2)
#define IOTNAS_AVX2 1
#define IOTNAS_AVX2_FN __attribute__((target("avx2")))

static inline int iotnas_avx2_present(void) {
    static int present = -1; /* asked once; a race writes the same value */
    if (present < 0) present = __builtin_cpu_supports("avx2") ? 1 : 0;
    return present;
}
#endif

#endif /* IOTNAS_AVX2_H */
