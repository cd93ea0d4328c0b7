/* The fused ClimbQ layer: a convolution of int8 (or int32) inputs with int8 weights and int32
 * accumulators, and the per-channel compare-and-count in registers, writing int8 codes.
 *
 *   acc[n, y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[n, s*y + i - p, s*x + j - p, g(o)*Cg + c]
 *   count           = #{t : acc[n, y, x, o] >= theta[o, t]}            (0..levels)
 *   Y[n, y, x, o]   = mult * count + offset, then max(Y, 0) when relu is set
 *
 * X int8 NHWC (input_type CLIMBQ_CC_INPUT_INT8) or int32 NHWC (CLIMBQ_CC_INPUT_INT32), W int8
 * OHWI (the direction d_o already folded in: W = d_o W_int), theta int32 (out_c, levels)
 * non-decreasing along t, Y int8 NHWC. Zero padding p on every side, stride s, groups 1
 * (dense) or groups == in_c == out_c (depthwise, W is (out_c, kh, kw, 1)), for both input types.
 * Every code mult * count + offset must fit int8. No rounding anywhere.
 *
 * The accumulator is the int32 sum computed modulo 2**32 (defined behaviour, no UB):
 *   int8 input:  exact, because climbq_cc_pack refuses weights with max_o sum |W_o| * 128 >
 *                2**31 - 1 (|x| <= 128, so |acc| <= 2**31 - 1 for every input);
 *   int32 input: the kernel cannot know the input's range, so the CALLER guarantees that the
 *                true sum fits int32 (e.g. max_o sum |W_o| * max |x| <= 2**31 - 1; a stem with
 *                |x| < 2**19 and sum |W_o| <= 4096 fits). Outside it the sum wraps modulo 2**32
 *                and the count is of the wrapped value. The weight-sum check is int8-only.
 *
 * Usage: climbq_cc_pack() once per layer (reorders W and theta for the SIMD path the CPU
 * has; int32 input uses one portable C path, vectorised by the compiler, on every ISA),
 * climbq_cc_run() per batch, climbq_cc_free(). All functions are thread-compatible;
 * one packed layer may be run from several threads on disjoint outputs.
 */
#ifndef CLIMBQ_CONV_COUNT_H
#define CLIMBQ_CONV_COUNT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLIMBQ_CC_ABI_VERSION 2 /* 2: climbq_cc_params.input_type (int32-input mode) */

/* climbq_cc_params.input_type: the element type of x */
#define CLIMBQ_CC_INPUT_INT8 0
#define CLIMBQ_CC_INPUT_INT32 1

typedef struct {
  int32_t in_h, in_w, in_c;      /* input NHWC (batch is a run argument) */
  int32_t out_h, out_w, out_c;   /* output NHWC */
  int32_t kernel_h, kernel_w;
  int32_t stride, pad, groups;
  int32_t levels;                /* thresholds per output channel, 1..255 */
  int32_t mult, offset, relu;    /* Y = mult * count + offset; relu: max(Y, 0) */
  int32_t input_type;            /* CLIMBQ_CC_INPUT_INT8 or CLIMBQ_CC_INPUT_INT32 */
} climbq_cc_params;

typedef struct climbq_cc_layer climbq_cc_layer; /* opaque packed layer */

/* 0 on success; otherwise a negative code and, if err != NULL, a message (<= 255 bytes)
 * naming the bad field: shapes inconsistent, levels out of range, codes beyond int8,
 * input_type neither 0 nor 1, (int8 input only) weight sums whose accumulators leave int32. */
int climbq_cc_pack(const climbq_cc_params* params, const int8_t* weight, const int32_t* thresholds,
                   climbq_cc_layer** out, char* err);

/* Y for `batch` images; 0 on success. x holds int8 or int32 elements as params.input_type
 * says (batch * in_h * in_w * in_c of them). The padded-input scratch is one buffer per
 * calling thread, kept between calls (grown on demand). */
int climbq_cc_run(const climbq_cc_layer* layer, int32_t batch, const void* x, int8_t* y);

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
