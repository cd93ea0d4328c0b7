/* The int32-input mode of the fused conv-and-count kernel (params.input_type ==
 * CLIMBQ_CC_INPUT_INT32; a network's first layer, whose input is a wide integer image):
 *
 *   acc[y, x, o] = sum_{i, j, c} W[o, i, j, c] * X[s*y + i - p, s*x + j - p, g(o)*Cg + c]
 *                  computed modulo 2**32 (uint32 products and sums: exact whenever the true sum
 *                  fits int32, which the caller guarantees; defined behaviour otherwise)
 *   count        = #{t : (int32)acc >= theta[o, t]},  Y = mult * count + offset, max(Y, 0) if relu
 *
 * One portable C path for every ISA: the loops run over contiguous output channels o with
 * constant trip counts, so the compiler vectorises them (vpmulld / vpaddd / vpcmpd on x86,
 * mul / add / cmge on NEON). GCC -O3 (setup.py's flag) also unrolls the pixel loop and keeps
 * the accumulators in registers; -O2 vectorises but keeps them in memory (the stem ~1.7x
 * slower). The same body is compiled three times on x86 with function target attributes
 * (AVX-512, AVX2, the baseline SSE2) and chosen by the run-time ISA choice (L->isa: avx512vnni,
 * avx2, scalar); on aarch64 NEON is the baseline, so one copy serves every path.
 *
 * Packed layout (cc_int32_pack), ocp = out_c rounded up to CC32_LANES, zeros past out_c:
 *   dense:     wpack int32 [kh][kw][in_c][ocp]   (the OHWI weights transposed, o innermost)
 *   depthwise: wpack int32 [kh][kw][ocp]
 *   theta_vec  int32 [levels][ocp]               (INT32_MAX past out_c; those lanes are never
 *                                                 stored)
 *   theta_search int32 [out_c][2**k - 1]         (levels > CC32_LINEAR_LEVELS only: each row
 *                                                 sorted, INT32_MAX past levels)
 * Padded input (per image, in the thread's scratch): int32 [in_h + 2p][in_w + 2p][cin_pad],
 * zeros in the border; cin_pad = in_c (dense) or ocp (depthwise, zero channels past in_c). */
#include <stdlib.h>
#include <string.h>

#include "cc_internal.h"

#define INLINE static inline __attribute__((always_inline))

/* Register blocking per ISA copy: BLOCK output channels (a multiple of CC32_LANES, at most
 * CC32_MAX_BLOCK) x PX output pixels of accumulators, sized to the vector registers and
 * measured on an AMD EPYC (Zen 4) with the stem shape (see the commit that added this file):
 *   AVX-512 (32 zmm): 64 x 4 = 16 registers;  AVX2 (16 ymm): 32 x 2 = 8 registers;
 *   x86-64 baseline SSE2 (16 xmm, no pmulld: the compiler emulates it): 16 x 4;
 *   aarch64 NEON (32 q registers): 32 x 2 = 16 registers. */
#define CC32_X86_512_BLOCK 64
#define CC32_X86_512_PX 4
#define CC32_X86_256_BLOCK 32
#define CC32_X86_256_PX 2
#if defined(__aarch64__)
#define CC32_BASE_BLOCK 32
#define CC32_BASE_PX 2
#else
#define CC32_BASE_BLOCK 16
#define CC32_BASE_PX 4
#endif
#define CC32_MAX_BLOCK 64
#define CC32_MAX_PX 4

/* Up to this many levels the count compares against every level, one vector compare per level
 * (further than the int8 paths' CC_LINEAR_LEVELS = 16: on the stem shape with AVX-512, 31
 * levels take 65 us per image linear against 171 us by binary search, 63 levels 104 against
 * 198, 127 levels 193 against 235; the baseline SSE2 copy breaks even near 100 levels).
 * Beyond, a branch-free binary search per channel. */
#define CC32_LINEAR_LEVELS 63

int cc_int32_pack(struct climbq_cc_layer* L) {
  const climbq_cc_params* p = &L->p;
  const size_t taps = (size_t)p->kernel_h * p->kernel_w;
  const size_t cin_g = (size_t)(p->in_c / p->groups);
  const size_t ocp = (size_t)(p->out_c + CC32_LANES - 1) / CC32_LANES * CC32_LANES;
  L->depthwise = p->groups != 1;
  L->lanes = CC32_LANES;
  L->nvec = (int)(ocp / CC32_LANES);
  L->chunk_vecs = 1;
  L->group = 1;
  L->cin_pad = L->depthwise ? (int)ocp : p->in_c;
  L->in_mode = CC_IN_S32;
  L->in_elem = 4;
  const size_t rows = L->depthwise ? taps : taps * cin_g; /* weight rows of ocp channels */
  int32_t* w = calloc(rows * ocp, sizeof(int32_t));
  int32_t* th = malloc((size_t)p->levels * ocp * sizeof(int32_t));
  if (!w || !th) {
    free(w);
    free(th);
    return -1;
  }
  /* dense: W[o][tap][c] -> w[(tap * cin_g + c) * ocp + o];
   * depthwise: W[o][tap] -> w[tap * ocp + o] */
  for (size_t o = 0; o < (size_t)p->out_c; o++)
    for (size_t r = 0; r < rows; r++) w[r * ocp + o] = L->weight[o * rows + r];
  for (size_t t = 0; t < (size_t)p->levels; t++)
    for (size_t o = 0; o < ocp; o++)
      th[t * ocp + o] = o < (size_t)p->out_c ? L->theta[o * p->levels + t] : INT32_MAX;
  L->wpack = w;
  L->theta_vec = th;
  if (p->levels > CC32_LINEAR_LEVELS) { /* the binary search's rows: 2**k - 1 >= levels */
    int len = 1;
    while (len < p->levels) len = 2 * len + 1;
    L->search_len = len;
    L->theta_search = malloc((size_t)p->out_c * len * sizeof(int32_t));
    if (!L->theta_search) return -1;
    for (size_t o = 0; o < (size_t)p->out_c; o++)
      for (size_t t = 0; t < (size_t)len; t++)
        L->theta_search[o * len + t] =
            t < (size_t)p->levels ? L->theta[o * p->levels + t] : INT32_MAX;
  }
  return 0;
}

void cc_int32_pad_image(const struct climbq_cc_layer* L, const int32_t* x, int32_t* buf) {
  const climbq_cc_params* p = &L->p;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, hp = (size_t)p->in_h + 2 * p->pad;
  const size_t cp = (size_t)L->cin_pad, c = (size_t)p->in_c;
  memset(buf, 0, hp * wp * cp * sizeof(int32_t));
  for (size_t r = 0; r < (size_t)p->in_h; r++) {
    int32_t* dst = buf + ((r + p->pad) * wp + p->pad) * cp;
    const int32_t* src = x + r * p->in_w * c;
    if (cp == c) {
      memcpy(dst, src, (size_t)p->in_w * c * sizeof(int32_t));
      continue;
    }
    for (size_t q = 0; q < (size_t)p->in_w; q++)
      memcpy(dst + q * cp, src + q * c, c * sizeof(int32_t));
  }
}

/* count, code, relu and store for NB accumulators of channels o0 .. o0 + NB - 1 of one pixel.
 * Up to CC32_LINEAR_LEVELS the count adds one compare per level (a vector compare over o);
 * beyond, a binary search over the sorted thresholds per channel (log2(levels + 1) rounds).
 * Both give #{t : acc >= theta[o, t]} because theta is sorted along t. */
INLINE void epilogue32(const struct climbq_cc_layer* L, const uint32_t* acc, int o0, int8_t* dst,
                       const int NB) {
  const climbq_cc_params* p = &L->p;
  const size_t ocp = (size_t)L->nvec * CC32_LANES;
  const int n = p->out_c - o0 < NB ? p->out_c - o0 : NB;
  int32_t count[CC32_MAX_BLOCK];
  if (p->levels <= CC32_LINEAR_LEVELS) {
    for (int l = 0; l < NB; l++) count[l] = 0;
    for (int t = 0; t < p->levels; t++) {
      const int32_t* th = L->theta_vec + t * ocp + o0;
      for (int l = 0; l < NB; l++) count[l] += (int32_t)acc[l] >= th[l];
    }
  } else { /* branch-free binary search per channel over theta_search (P = 2**k - 1 levels,
             * padded with INT32_MAX): c grows by step when level c + step is reached, for
             * step = 2**(k-1) .. 1, always in range. The padding is reached only by
             * acc == INT32_MAX, which reaches every real level too: min(c, levels) is exact. */
    const int search_len = L->search_len;
    for (int l = 0; l < n; l++) {
      const int32_t* th = L->theta_search + (size_t)(o0 + l) * search_len;
      const int32_t a = (int32_t)acc[l];
      int c = 0;
      for (int step = (search_len + 1) / 2; step; step >>= 1) c += th[c + step - 1] <= a ? step : 0;
      count[l] = c < p->levels ? c : p->levels;
    }
    for (int l = n; l < NB; l++) count[l] = 0;
  }
  /* code = mult * count + offset (fits int8 by the pack checks), then max(code, 0) with relu */
  const int32_t floor = p->relu ? 0 : INT32_MIN;
  int8_t code[CC32_MAX_BLOCK];
  for (int l = 0; l < NB; l++) {
    const int32_t y = p->mult * count[l] + p->offset;
    code[l] = (int8_t)(y < floor ? floor : y);
  }
  if (n == NB) memcpy(dst, code, (size_t)NB); /* a constant size: one vector store */
  else
    for (int l = 0; l < n; l++) dst[l] = code[l];
}

/* PX output pixels (oy, ox .. ox + PX - 1), channels o0 .. o0 + NB - 1, dense: for every kernel
 * row ky the kw * in_c input values under the kernel are contiguous in the padded input, and
 * so are the matching weight rows, so one loop over k = kx * in_c + c covers the row. Every
 * weight vector loaded meets PX broadcast inputs; acc[q][.] (PX * NB int32) stays in
 * registers. */
INLINE void dense_block(const struct climbq_cc_layer* L, const int32_t* in, int oy, int ox,
                        int o0, int8_t* dst, const int NB, const int PX) {
  const climbq_cc_params* p = &L->p;
  const size_t ocp = (size_t)L->nvec * CC32_LANES, wp = (size_t)p->in_w + 2 * p->pad;
  const size_t row_len = (size_t)p->kernel_w * p->in_c, xstep = (size_t)p->stride * p->in_c;
  uint32_t acc[CC32_MAX_PX][CC32_MAX_BLOCK];
  for (int q = 0; q < PX; q++)
    for (int l = 0; l < NB; l++) acc[q][l] = 0;
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int32_t* xr =
        in + (((size_t)oy * p->stride + ky) * wp + (size_t)ox * p->stride) * p->in_c;
    const int32_t* wr = (const int32_t*)L->wpack + (size_t)ky * row_len * ocp + o0;
    for (size_t k = 0; k < row_len; k++) {
      const int32_t* wk = wr + k * ocp;
      for (int q = 0; q < PX; q++) {
        const uint32_t xv = (uint32_t)xr[q * xstep + k];
        for (int l = 0; l < NB; l++) acc[q][l] += xv * (uint32_t)wk[l]; /* modulo 2**32 */
      }
    }
  }
  for (int q = 0; q < PX; q++) epilogue32(L, acc[q], o0, dst + (size_t)q * p->out_c, NB);
}

/* Depthwise: channel o reads input channel o; the padded input has ocp channels. */
INLINE void depthwise_block(const struct climbq_cc_layer* L, const int32_t* in, int oy, int ox,
                            int o0, int8_t* dst, const int NB, const int PX) {
  const climbq_cc_params* p = &L->p;
  const size_t ocp = (size_t)L->nvec * CC32_LANES, wp = (size_t)p->in_w + 2 * p->pad;
  const size_t xstep = (size_t)p->stride * ocp;
  uint32_t acc[CC32_MAX_PX][CC32_MAX_BLOCK];
  for (int q = 0; q < PX; q++)
    for (int l = 0; l < NB; l++) acc[q][l] = 0;
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int32_t* xr =
        in + (((size_t)oy * p->stride + ky) * wp + (size_t)ox * p->stride) * ocp + o0;
    const int32_t* wr = (const int32_t*)L->wpack + (size_t)ky * p->kernel_w * ocp + o0;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const int32_t* wk = wr + (size_t)kx * ocp;
      for (int q = 0; q < PX; q++) {
        const int32_t* xk = xr + q * xstep + (size_t)kx * ocp;
        for (int l = 0; l < NB; l++) acc[q][l] += (uint32_t)xk[l] * (uint32_t)wk[l]; /* mod 2**32 */
      }
    }
  }
  for (int q = 0; q < PX; q++) epilogue32(L, acc[q], o0, dst + (size_t)q * p->out_c, NB);
}

/* One row of output pixels for channels o0 .. o0 + NB - 1: blocks of PX pixels, then single
 * pixels. */
INLINE void row32(const struct climbq_cc_layer* L, const int32_t* in, int oy, int o0, int8_t* y,
                  const int NB, const int PX) {
  const climbq_cc_params* p = &L->p;
  int8_t* dst = y + (size_t)oy * p->out_w * p->out_c + o0;
  int ox = 0;
  if (L->depthwise) {
    for (; ox + PX <= p->out_w; ox += PX)
      depthwise_block(L, in, oy, ox, o0, dst + (size_t)ox * p->out_c, NB, PX);
    for (; ox < p->out_w; ox++)
      depthwise_block(L, in, oy, ox, o0, dst + (size_t)ox * p->out_c, NB, 1);
  } else {
    for (; ox + PX <= p->out_w; ox += PX)
      dense_block(L, in, oy, ox, o0, dst + (size_t)ox * p->out_c, NB, PX);
    for (; ox < p->out_w; ox++) dense_block(L, in, oy, ox, o0, dst + (size_t)ox * p->out_c, NB, 1);
  }
}

/* Every row and channel block of one image. BLOCK (channels per block, a multiple of
 * CC32_LANES) and PX (pixels per block) are constants of each ISA's copy, sized so that the
 * PX * BLOCK accumulators fit its vector registers; every channel loop has a constant trip
 * count (fully vectorised). */
INLINE void image_body(const struct climbq_cc_layer* L, const void* input, int8_t* y,
                       const int BLOCK, const int PX) {
  const climbq_cc_params* p = &L->p;
  const int32_t* in = input;
  const int ocp = L->nvec * CC32_LANES;
  for (int o0 = 0; o0 < ocp; o0 += BLOCK) {
    const int nb = ocp - o0 < BLOCK ? ocp - o0 : BLOCK;
    for (int oy = 0; oy < p->out_h; oy++) {
      if (nb >= 64 && BLOCK >= 64) row32(L, in, oy, o0, y, 64, PX);
      else if (nb == 48 && BLOCK >= 48) row32(L, in, oy, o0, y, 48, PX);
      else if (nb == 32 && BLOCK >= 32) row32(L, in, oy, o0, y, 32, PX);
      else row32(L, in, oy, o0, y, 16, PX);
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
/* 512-bit vectors even where the compiler's tuning prefers 256 bits */
#if defined(__clang__)
#define CC32_T512 __attribute__((target("avx512f,avx512bw,avx512vl"), min_vector_width(512)))
#else
#define CC32_T512 __attribute__((target("avx512f,avx512bw,avx512vl,prefer-vector-width=512")))
#endif
CC32_T512 static void image_avx512(const struct climbq_cc_layer* L, const void* in, int8_t* y) {
  image_body(L, in, y, CC32_X86_512_BLOCK, CC32_X86_512_PX);
}

__attribute__((target("avx2,fma"))) static void image_avx2(const struct climbq_cc_layer* L,
                                                            const void* in, int8_t* y) {
  image_body(L, in, y, CC32_X86_256_BLOCK, CC32_X86_256_PX);
}
#endif

/* the build's baseline: SSE2 on x86-64, NEON on aarch64 */
static void image_baseline(const struct climbq_cc_layer* L, const void* in, int8_t* y) {
  image_body(L, in, y, CC32_BASE_BLOCK, CC32_BASE_PX);
}

void cc_int32_image(const struct climbq_cc_layer* L, const void* in, int8_t* y) {
  switch (L->isa) {
#if defined(__x86_64__) || defined(__i386__)
    case CC_AVX512VNNI:
      image_avx512(L, in, y);
      return;
    case CC_AVX2:
      image_avx2(L, in, y);
      return;
#endif
    default: /* scalar (baseline SSE2 on x86-64) and every aarch64 path (NEON baseline) */
      image_baseline(L, in, y);
      return;
  }
}
