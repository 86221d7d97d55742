/* The vector kernels of iotnas_ops_kernels.h compiled for AVX2, 8 floats a vector, where the
 * build's own width is 4 (x86 without -mavx); iotnas_ops.c calls them where the processor has AVX2.
 * On other targets, and with -DIOTNAS_NO_AVX2, this file is empty. */
#include "iotnas_avx2.h"

#if defined(IOTNAS_AVX2) && !defined(__AVX__)
#include <float.h>
#include <string.h>

#include "iotnas_ops.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif
#define IOTNAS_OPS_AVX2 1
#include "iotnas_ops_kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int iotnas_ops_avx2_unused; /* ISO C: a file declares something */
#endif
