/* Internals of the fused ClimbQ conv-and-count kernel shared by the portable code
 * (climbq_conv_count.c) and the SIMD paths (cc_x86.c, cc_arm.c). Not a public header.
 *
 * A packed layer holds the parameters, the original weights and thresholds (the scalar path and
 * the binary-search epilogue read those) and the layout the chosen SIMD path wants:
 *
 *   dense:     wpack[chunk][tap][c / g][v][lane][g]   g input channels per group (4 for the
 *              int8 dot products, 2 for int16 pairs, 1 for NEON int16 lanes), `lanes` output
 *              channels per vector v, up to `chunk_vecs` vectors per chunk, zeros past in_c and
 *              out_c; chunk k starts at wpack + chunk_off[k] bytes.
 *   depthwise: wpack[tap][vec][lanes]  int32 (w & 0xffff, for vpmaddwd) on x86, int16 on arm.
 *   theta_vec: [vec][t][lanes] int32 (theta16 the same as int16 where it fits), bias: [vec * lanes] int32 added to the accumulator
 *              (-128 sum W for the uint8 VNNI input; 0 elsewhere).
 *
 * The padded input (per image, in the calling thread's scratch buffer, so that runs are
 * thread-safe) is [in_h + 2 pad][in_w + 2 pad][cin_pad] elements of the path's input mode.
 * The int32-input mode has its own layout, described in cc_int32.c.
 */
#ifndef CLIMBQ_CC_INTERNAL_H
#define CLIMBQ_CC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "climbq_conv_count.h"

enum cc_isa { CC_SCALAR = 0, CC_AVX2, CC_AVX512VNNI, CC_NEON, CC_NEON_DOT, CC_ISA_COUNT };

/* U8X: x + 128 as uint8; S32: the int32-input mode's int32 elements (cc_int32.c) */
enum cc_input_mode { CC_IN_S8 = 0, CC_IN_U8X, CC_IN_S16, CC_IN_S32 };

/* Up to this many levels the SIMD epilogue compares against every threshold; beyond, the count
 * is a binary search over the sorted thresholds, one element at a time. */
#define CC_LINEAR_LEVELS 16

struct climbq_cc_layer {
  climbq_cc_params p;
  int isa;
  int depthwise;
  int lanes;      /* output channels per vector */
  int nvec;       /* ceil(out_c / lanes) */
  int chunk_vecs; /* vectors per chunk (dense) */
  int group;      /* input channels per weight group (dense) */
  int cin_pad;    /* channels of the padded input */
  int in_mode;
  int in_elem; /* bytes per padded input element */
  int8_t* weight;   /* original OHWI copy */
  int32_t* theta;   /* original (out_c, levels) copy */
  void* wpack;
  size_t* chunk_off;
  int32_t* theta_vec;
  int32_t* bias;
  int16_t* theta16; /* theta_vec as int16 when every threshold is in [-32767, 32767] and levels
                       <= CC_LINEAR_LEVELS, else NULL: then comparing the int16-saturated
                       accumulator gives the same count, two vectors per compare */
  int32_t* theta_search; /* int32-input mode with levels > CC_LINEAR_LEVELS: [out_c][search_len]
                            rows of theta padded with INT32_MAX (cc_int32.c), else NULL */
  int search_len;        /* 2**k - 1 >= levels */
};

/* count = #{t : a >= theta[t]} for sorted theta (binary search). */
static inline int cc_count_sorted(int32_t a, const int32_t* theta, int levels) {
  int count = 0;
  int step = 1;
  while (step * 2 <= levels) step *= 2;
  for (; step; step >>= 1)
    if (count + step <= levels && theta[count + step - 1] <= a) count += step;
  return count;
}

static inline int8_t cc_code(const climbq_cc_params* p, int count) {
  int32_t y = p->mult * count + p->offset;
  if (p->relu && y < 0) y = 0;
  return (int8_t)y;
}

/* Binary-search epilogue for one vector of accumulators (already bias-corrected):
 * out channels o0 .. o0 + n - 1. */
static inline void cc_epilogue_sorted(const struct climbq_cc_layer* L, const int32_t* acc, int o0,
                                      int n, int8_t* dst) {
  const int levels = L->p.levels;
  for (int i = 0; i < n; i++)
    dst[i] = cc_code(&L->p, cc_count_sorted(acc[i], L->theta + (size_t)(o0 + i) * levels, levels));
}

/* The int32-input mode (cc_int32.c): output channels padded to a multiple of CC32_LANES. */
#define CC32_LANES 16
/* Sets the layout fields of L and packs L->weight / L->theta into L->wpack / L->theta_vec;
 * 0, or -1 when out of memory. */
int cc_int32_pack(struct climbq_cc_layer* L);
/* The zero-padded int32 image [in_h + 2 pad][in_w + 2 pad][cin_pad] from int32 NHWC x. */
void cc_int32_pad_image(const struct climbq_cc_layer* L, const int32_t* x, int32_t* buf);
/* Y of one image from its padded input. */
void cc_int32_image(const struct climbq_cc_layer* L, const void* in, int8_t* y);

typedef void (*cc_image_fn)(const struct climbq_cc_layer* L, const void* in, int8_t* y);

#if defined(__x86_64__) || defined(__i386__)
void cc_avx512vnni_dense(const struct climbq_cc_layer* L, const void* in, int8_t* y);
void cc_avx512vnni_depthwise(const struct climbq_cc_layer* L, const void* in, int8_t* y);
void cc_avx2_dense(const struct climbq_cc_layer* L, const void* in, int8_t* y);
void cc_avx2_depthwise(const struct climbq_cc_layer* L, const void* in, int8_t* y);
#endif
#if defined(__aarch64__)
void cc_neon_dot_dense(const struct climbq_cc_layer* L, const void* in, int8_t* y);
void cc_neon_dense(const struct climbq_cc_layer* L, const void* in, int8_t* y);
void cc_neon_depthwise(const struct climbq_cc_layer* L, const void* in, int8_t* y);
#endif

#endif /* CLIMBQ_CC_INTERNAL_H */
