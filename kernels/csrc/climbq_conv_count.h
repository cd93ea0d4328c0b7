/* The fused ClimbQ layer: an int8 convolution with int32 accumulators and the per-channel
 * compare-and-count in registers, writing int8 codes.
 *
 *   acc[n, y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[n, s*y + i - p, s*x + j - p, g(o)*Cg + c]
 *   count           = #{t : acc[n, y, x, o] >= theta[o, t]}            (0..levels)
 *   Y[n, y, x, o]   = mult * count + offset, then max(Y, 0) when relu is set
 *
 * X int8 NHWC, W int8 OHWI (the direction d_o already folded in: W = d_o W_int), theta int32
 * (out_c, levels) non-decreasing along t, Y int8 NHWC. Zero padding p on every side, stride s,
 * groups 1 (dense) or groups == in_c == out_c (depthwise, W is (out_c, kh, kw, 1)).
 * The accumulator is the exact int32 sum; the caller guarantees |acc| <= 2**31 - 1
 * (max_o sum |W_o| * 128 fits) and that every code fits int8. No rounding anywhere.
 *
 * Usage: climbq_cc_pack() once per layer (reorders W and theta for the SIMD path the CPU
 * has), climbq_cc_run() per batch, climbq_cc_free(). All functions are thread-compatible;
 * one packed layer may be run from several threads on disjoint outputs.
 */
#ifndef CLIMBQ_CONV_COUNT_H
#define CLIMBQ_CONV_COUNT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLIMBQ_CC_ABI_VERSION 1

typedef struct {
  int32_t in_h, in_w, in_c;      /* input NHWC (batch is a run argument) */
  int32_t out_h, out_w, out_c;   /* output NHWC */
  int32_t kernel_h, kernel_w;
  int32_t stride, pad, groups;
  int32_t levels;                /* thresholds per output channel, 1..255 */
  int32_t mult, offset, relu;    /* Y = mult * count + offset; relu: max(Y, 0) */
} climbq_cc_params;

typedef struct climbq_cc_layer climbq_cc_layer; /* opaque packed layer */

/* 0 on success; otherwise a negative code and, if err != NULL, a message (<= 255 bytes)
 * naming the bad field: shapes inconsistent, levels out of range, codes beyond int8. */
int climbq_cc_pack(const climbq_cc_params* params, const int8_t* weight, const int32_t* thresholds,
                   climbq_cc_layer** out, char* err);

/* Y for `batch` images; 0 on success. The padded-input scratch is one buffer per calling
 * thread, kept between calls (grown on demand). */
int climbq_cc_run(const climbq_cc_layer* layer, int32_t batch, const int8_t* x, int8_t* y);

void climbq_cc_free(climbq_cc_layer* layer);

/* The code path chosen at run time for this CPU: "avx512vnni", "avx2", "neon-dot", "neon",
 * "scalar". The environment variable CLIMBQ_NATIVE_ISA (one of those names) forces a path
 * that the CPU supports (for tests); an unsupported name falls back to the best path. */
const char* climbq_cc_isa(void);

int climbq_cc_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* CLIMBQ_CONV_COUNT_H */
