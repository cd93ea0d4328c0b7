/* arm64 paths of the fused conv-and-count kernel: NEON (every AArch64 CPU) and NEON with the
 * ARMv8.2 dot product (sdot; Raspberry Pi 5, Apple M, Neoverse).
 *
 * Dense (direct convolution): a block of PX output pixels of one row times NV vectors of 4
 * output channels stays in registers.
 *   neon-dot: sdot (int8 x int8, 4 input channels per int32 lane; signed on both sides, so no
 *     offset correction), one broadcast of 4 input bytes meets NV weight vectors.
 *   neon: int16 inputs and weights, smlal by lane (int16 x int16 -> int32), exact.
 * Depthwise (both): 8 channels per step, int8 inputs widened to int16, smlal/smlal2 with int16
 * weights into two int32x4 accumulators.
 * Epilogue: acc >= theta compared level by level (CC_LINEAR_LEVELS) or by binary search, code
 * = mult * count + offset, relu, stored as int8 (the codes fit by the pack checks).
 * Only the sdot functions carry a target attribute (+dotprod); the library is built for
 * baseline armv8-a and chooses the path at run time (getauxval(AT_HWCAP) & HWCAP_ASIMDDP). */
#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>

#include "cc_internal.h"

#define INLINE static inline __attribute__((always_inline))
#define MAXPX 8

static inline size_t out_index(const climbq_cc_params* p, int oy, int ox, int o) {
  return ((size_t)oy * p->out_w + ox) * p->out_c + o;
}

/* One int32x4 of accumulators for out channels o0..o0+3 (theta rows th[t * tstride]). */
INLINE void epilogue4(const struct climbq_cc_layer* L, int32x4_t a, const int32_t* th,
                      int tstride, int o0, int8_t* dst) {
  const climbq_cc_params* p = &L->p;
  if (o0 >= p->out_c) return;
  const int n = p->out_c - o0 < 4 ? p->out_c - o0 : 4;
  int32_t code[4];
  if (p->levels <= CC_LINEAR_LEVELS) {
    int32x4_t count = vdupq_n_s32(0);
    for (int t = 0; t < p->levels; t++)
      count = vsubq_s32(count, vreinterpretq_s32_u32(vcgeq_s32(a, vld1q_s32(th + t * tstride))));
    int32x4_t c = vmlaq_n_s32(vdupq_n_s32(p->offset), count, p->mult);
    if (p->relu) c = vmaxq_s32(c, vdupq_n_s32(0));
    vst1q_s32(code, c);
    for (int i = 0; i < n; i++) dst[i] = (int8_t)code[i];
  } else {
    vst1q_s32(code, a);
    cc_epilogue_sorted(L, code, o0, n, dst);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* neon-dot dense                                                                              */

#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")

INLINE void dot_block(const struct climbq_cc_layer* L, const int8_t* in, const int8_t* w, int v0,
                      int oy, int ox0, int8_t* y, const int PX, const int NV) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad, C4 = Cp / 4;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, xstep = (size_t)S * Cp;
  int32x4_t acc[MAXPX][4];
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) acc[q][cb] = vdupq_n_s32(0);
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int8_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const int8_t* px = row + (size_t)kx * Cp;
      for (int c4 = 0; c4 < C4; c4++, w += NV * 16) {
        int8x16_t wv[4];
        for (int cb = 0; cb < NV; cb++) wv[cb] = vld1q_s8(w + cb * 16);
        for (int q = 0; q < PX; q++) {
          int32_t xv;
          memcpy(&xv, px + q * xstep + (size_t)c4 * 4, 4);
          const int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(xv));
          for (int cb = 0; cb < NV; cb++) acc[q][cb] = vdotq_s32(acc[q][cb], wv[cb], xb);
        }
      }
    }
  }
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) {
      const int v = v0 + cb;
      epilogue4(L, acc[q][cb], L->theta_vec + (size_t)v * p->levels * 4, 4, v * 4,
                y + out_index(p, oy, ox0 + q, v * 4));
    }
}

#define DOT_ROW(PX, NV)                                                               \
  do {                                                                                \
    int ox = 0;                                                                       \
    for (; ox + (PX) <= p->out_w; ox += (PX)) dot_block(L, in, w, v0, oy, ox, y, PX, NV); \
    for (; ox < p->out_w; ox++) dot_block(L, in, w, v0, oy, ox, y, 1, NV);            \
  } while (0)

void cc_neon_dot_dense(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int8_t* in = input;
  const int nchunks = (L->nvec + 3) / 4;
  for (int k = 0; k < nchunks; k++) {
    const int v0 = k * 4, nv = L->nvec - v0 < 4 ? L->nvec - v0 : 4;
    const int8_t* w = (const int8_t*)L->wpack + L->chunk_off[k];
    for (int oy = 0; oy < p->out_h; oy++) switch (nv) {
        case 1: DOT_ROW(8, 1); break;
        case 2: DOT_ROW(8, 2); break;
        case 3: DOT_ROW(6, 3); break;
        default: DOT_ROW(4, 4); break;
      }
  }
}

#pragma GCC pop_options

/* ------------------------------------------------------------------------------------------ */
/* neon dense (int16)                                                                          */

INLINE void neon_block(const struct climbq_cc_layer* L, const int16_t* in, const int16_t* w,
                       int v0, int oy, int ox0, int8_t* y, const int PX, const int NV) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad, C4 = Cp / 4;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, xstep = (size_t)S * Cp;
  int32x4_t acc[MAXPX][4];
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) acc[q][cb] = vdupq_n_s32(0);
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int16_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const int16_t* px = row + (size_t)kx * Cp;
      for (int c4 = 0; c4 < C4; c4++) {
        int16x4_t xv[MAXPX];
        for (int q = 0; q < PX; q++) xv[q] = vld1_s16(px + q * xstep + (size_t)c4 * 4);
#define NEON_LANE(K)                                                                     \
  do {                                                                                   \
    int16x4_t wv[4];                                                                     \
    for (int cb = 0; cb < NV; cb++) wv[cb] = vld1_s16(w + cb * 4);                       \
    for (int q = 0; q < PX; q++)                                                         \
      for (int cb = 0; cb < NV; cb++) acc[q][cb] = vmlal_lane_s16(acc[q][cb], wv[cb], xv[q], K); \
    w += NV * 4;                                                                         \
  } while (0)
        NEON_LANE(0);
        NEON_LANE(1);
        NEON_LANE(2);
        NEON_LANE(3);
#undef NEON_LANE
      }
    }
  }
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) {
      const int v = v0 + cb;
      epilogue4(L, acc[q][cb], L->theta_vec + (size_t)v * p->levels * 4, 4, v * 4,
                y + out_index(p, oy, ox0 + q, v * 4));
    }
}

#define NEON_ROW(PX, NV)                                                               \
  do {                                                                                 \
    int ox = 0;                                                                        \
    for (; ox + (PX) <= p->out_w; ox += (PX)) neon_block(L, in, w, v0, oy, ox, y, PX, NV); \
    for (; ox < p->out_w; ox++) neon_block(L, in, w, v0, oy, ox, y, 1, NV);            \
  } while (0)

void cc_neon_dense(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int16_t* in = input;
  const int nchunks = (L->nvec + 3) / 4;
  for (int k = 0; k < nchunks; k++) {
    const int v0 = k * 4, nv = L->nvec - v0 < 4 ? L->nvec - v0 : 4;
    const int16_t* w = (const int16_t*)((const char*)L->wpack + L->chunk_off[k]);
    for (int oy = 0; oy < p->out_h; oy++) switch (nv) {
        case 1: NEON_ROW(8, 1); break;
        case 2: NEON_ROW(6, 2); break;
        case 3: NEON_ROW(4, 3); break;
        default: NEON_ROW(4, 4); break;
      }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* depthwise (neon and neon-dot)                                                               */

INLINE void dw_block(const struct climbq_cc_layer* L, const int8_t* in, int v, int oy, int ox0,
                     int8_t* y, const int PX) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, padded_oc = (size_t)L->nvec * 8;
  const int16_t* w = (const int16_t*)L->wpack + (size_t)v * 8;
  int32x4_t lo[MAXPX], hi[MAXPX];
  for (int q = 0; q < PX; q++) lo[q] = hi[q] = vdupq_n_s32(0);
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int8_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp + (size_t)v * 8;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const int16x8_t wv = vld1q_s16(w + ((size_t)ky * p->kernel_w + kx) * padded_oc);
      for (int q = 0; q < PX; q++) {
        const int16x8_t xv = vmovl_s8(vld1_s8(row + ((size_t)q * S + kx) * Cp));
        lo[q] = vmlal_s16(lo[q], vget_low_s16(xv), vget_low_s16(wv));
        hi[q] = vmlal_high_s16(hi[q], xv, wv);
      }
    }
  }
  const int32_t* th = L->theta_vec + (size_t)v * p->levels * 8;
  for (int q = 0; q < PX; q++) {
    int8_t* dst = y + out_index(p, oy, ox0 + q, v * 8);
    epilogue4(L, lo[q], th, 8, v * 8, dst);
    epilogue4(L, hi[q], th + 4, 8, v * 8 + 4, dst + 4);
  }
}

void cc_neon_depthwise(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int8_t* in = input;
  for (int oy = 0; oy < p->out_h; oy++) {
    int ox = 0;
    for (; ox + 8 <= p->out_w; ox += 8)
      for (int v = 0; v < L->nvec; v++) dw_block(L, in, v, oy, ox, y, 8);
    for (; ox < p->out_w; ox++)
      for (int v = 0; v < L->nvec; v++) dw_block(L, in, v, oy, ox, y, 1);
  }
}

#endif /* __aarch64__ */
