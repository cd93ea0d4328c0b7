/* x86-64 paths of the fused conv-and-count kernel: AVX-512 VNNI and AVX2.
 *
 * Dense (direct convolution, no im2col): a block of PX output pixels of one row times NV
 * vectors of output channels stays in registers; for every tap and every group of input
 * channels one broadcast of the input meets NV weight vectors.
 *   AVX-512 VNNI: vpdpbusd (uint8 x int8, 4 channels per int32 lane). The input is x + 128 as
 *     uint8 (padding is 128, a zero input); the packed bias -128 sum W restores the signed sum.
 *     vpdpbusd wraps modulo 2**32, so intermediate sums beyond int32 still give the exact
 *     int32 result whenever it fits (the header's bound).
 *   AVX2: vpmaddwd on int16 (2 channels per int32 lane), exact: |x w + x' w'| <= 2 * 128 * 128.
 * Depthwise: per channel vector, widened int8 inputs times int32 weights (w, 0) with vpmaddwd
 * (vpdpwssd on VNNI): the high int16 of every weight lane is 0, so the lane is exactly x w.
 * Epilogue: acc >= theta compared level by level (CC_LINEAR_LEVELS) or by binary search, code
 * = mult * count + offset, relu, truncated to int8 (the codes fit by the pack checks).
 * Functions carry target attributes; the library itself is built for baseline x86-64. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "cc_internal.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define T256 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

#define MAXPX 8

static inline size_t out_index(const climbq_cc_params* p, int oy, int ox, int o) {
  return ((size_t)oy * p->out_w + ox) * p->out_c + o;
}

/* ------------------------------------------------------------------------------------------ */
/* AVX-512                                                                                     */

INLINE T512 void epilogue512(const struct climbq_cc_layer* L, __m512i a, int v, int8_t* dst) {
  const climbq_cc_params* p = &L->p;
  const int o0 = v * 16, n = p->out_c - o0 < 16 ? p->out_c - o0 : 16;
  a = _mm512_add_epi32(a, _mm512_loadu_si512(L->bias + o0));
  if (p->levels <= CC_LINEAR_LEVELS) {
    const int32_t* th = L->theta_vec + (size_t)v * p->levels * 16;
    const __m512i one = _mm512_set1_epi32(1);
    __m512i count = _mm512_setzero_si512();
    for (int t = 0; t < p->levels; t++)
      count = _mm512_mask_add_epi32(
          count, _mm512_cmpge_epi32_mask(a, _mm512_loadu_si512(th + t * 16)), count, one);
    __m512i code = _mm512_add_epi32(_mm512_mullo_epi32(count, _mm512_set1_epi32(p->mult)),
                                    _mm512_set1_epi32(p->offset));
    if (p->relu) code = _mm512_max_epi32(code, _mm512_setzero_si512());
    _mm512_mask_cvtepi32_storeu_epi8(dst, (__mmask16)((1u << n) - 1), code);
  } else { /* binary search over the sorted levels, 16 lanes at once (one gather a round) */
    const int32_t* th = L->theta_vec + (size_t)v * p->levels * 16;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i levels = _mm512_set1_epi32(p->levels);
    int step = 1;
    while (step * 2 <= p->levels) step *= 2;
    __m512i count = _mm512_setzero_si512();
    for (; step; step >>= 1) {
      const __m512i candidate = _mm512_add_epi32(count, _mm512_set1_epi32(step));
      const __mmask16 valid = _mm512_cmple_epi32_mask(candidate, levels);
      const __m512i index = _mm512_add_epi32(
          _mm512_slli_epi32(_mm512_sub_epi32(candidate, _mm512_set1_epi32(1)), 4), lane);
      const __m512i level = _mm512_mask_i32gather_epi32(a, valid, index, th, 4);
      const __mmask16 reached = _mm512_mask_cmpge_epi32_mask(valid, a, level);
      count = _mm512_mask_mov_epi32(count, reached, candidate);
    }
    __m512i code = _mm512_add_epi32(_mm512_mullo_epi32(count, _mm512_set1_epi32(p->mult)),
                                    _mm512_set1_epi32(p->offset));
    if (p->relu) code = _mm512_max_epi32(code, _mm512_setzero_si512());
    _mm512_mask_cvtepi32_storeu_epi8(dst, (__mmask16)((1u << n) - 1), code);
  }
}

/* Two accumulator vectors of the same 16 channels (two pixels): saturated to int16 side by
 * side, so each compare counts 32 outputs. Exact because every threshold is in
 * [-32767, 32767] (L->theta16): acc >= theta <=> sat16(acc) >= theta. db may be NULL. */
INLINE T512 void epilogue512_pair(const struct climbq_cc_layer* L, __m512i a, __m512i b, int v,
                                  int8_t* da, int8_t* db) {
  const climbq_cc_params* p = &L->p;
  if (!L->theta16) {
    epilogue512(L, a, v, da);
    if (db) epilogue512(L, b, v, db);
    return;
  }
  const int o0 = v * 16, n = p->out_c - o0 < 16 ? p->out_c - o0 : 16;
  const __m512i bias = _mm512_loadu_si512(L->bias + o0);
  a = _mm512_add_epi32(a, bias);
  b = _mm512_add_epi32(b, bias);
  const __m512i s = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtsepi32_epi16(a)),
                                       _mm512_cvtsepi32_epi16(b), 1);
  const int16_t* th = L->theta16 + (size_t)v * p->levels * 16;
  const __m512i one = _mm512_set1_epi16(1);
  __m512i count = _mm512_setzero_si512();
  for (int t = 0; t < p->levels; t++) {
    const __m512i tv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(th + t * 16)));
    count = _mm512_mask_add_epi16(count, _mm512_cmpge_epi16_mask(s, tv), count, one);
  }
  __m512i code = _mm512_add_epi16(_mm512_mullo_epi16(count, _mm512_set1_epi16((short)p->mult)),
                                  _mm512_set1_epi16((short)p->offset));
  if (p->relu) code = _mm512_max_epi16(code, _mm512_setzero_si512());
  const __m256i bytes = _mm512_cvtepi16_epi8(code);
  const __mmask16 m = (__mmask16)((1u << n) - 1);
  _mm_mask_storeu_epi8(da, m, _mm256_castsi256_si128(bytes));
  if (db) _mm_mask_storeu_epi8(db, m, _mm256_extracti128_si256(bytes, 1));
}

INLINE T512 void vnni_block(const struct climbq_cc_layer* L, const uint8_t* in, const int8_t* w,
                            int v0, int oy, int ox0, int8_t* y, const int PX, const int NV) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad, C4 = Cp / 4;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, xstep = (size_t)S * Cp;
  __m512i acc[MAXPX][4];
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) acc[q][cb] = _mm512_setzero_si512();
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const uint8_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const uint8_t* px = row + (size_t)kx * Cp;
      for (int c4 = 0; c4 < C4; c4++, w += NV * 64) {
        __m512i wv[4];
        for (int cb = 0; cb < NV; cb++) wv[cb] = _mm512_loadu_si512(w + cb * 64);
        for (int q = 0; q < PX; q++) {
          int32_t xv;
          memcpy(&xv, px + q * xstep + (size_t)c4 * 4, 4);
          const __m512i xb = _mm512_set1_epi32(xv);
          for (int cb = 0; cb < NV; cb++) acc[q][cb] = _mm512_dpbusd_epi32(acc[q][cb], xb, wv[cb]);
        }
      }
    }
  }
  for (int cb = 0; cb < NV; cb++)
    for (int q = 0; q < PX; q += 2) {
      const int o = (v0 + cb) * 16;
      epilogue512_pair(L, acc[q][cb], acc[q + 1 < PX ? q + 1 : q][cb], v0 + cb,
                       y + out_index(p, oy, ox0 + q, o),
                       q + 1 < PX ? y + out_index(p, oy, ox0 + q + 1, o) : NULL);
    }
}

#define VNNI_ROW(PX, NV)                                                               \
  do {                                                                                 \
    int ox = 0;                                                                        \
    for (; ox + (PX) <= p->out_w; ox += (PX)) vnni_block(L, in, w, v0, oy, ox, y, PX, NV); \
    for (; ox < p->out_w; ox++) vnni_block(L, in, w, v0, oy, ox, y, 1, NV);            \
  } while (0)

T512 void cc_avx512vnni_dense(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const uint8_t* in = input;
  const int nchunks = (L->nvec + 3) / 4;
  for (int k = 0; k < nchunks; k++) {
    const int v0 = k * 4, nv = L->nvec - v0 < 4 ? L->nvec - v0 : 4;
    const int8_t* w = (const int8_t*)L->wpack + L->chunk_off[k];
    for (int oy = 0; oy < p->out_h; oy++) switch (nv) {
        case 1: VNNI_ROW(8, 1); break;
        case 2: VNNI_ROW(8, 2); break;
        case 3: VNNI_ROW(6, 3); break;
        default: VNNI_ROW(4, 4); break;
      }
  }
}

INLINE T512 void dw512_block(const struct climbq_cc_layer* L, const int8_t* in, int v, int oy,
                             int ox0, int8_t* y, const int PX) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, padded_oc = (size_t)L->nvec * 16;
  const int32_t* w = (const int32_t*)L->wpack + (size_t)v * 16;
  __m512i acc[MAXPX];
  for (int q = 0; q < PX; q++) acc[q] = _mm512_setzero_si512();
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int8_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp + (size_t)v * 16;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const __m512i wv = _mm512_loadu_si512(w + ((size_t)ky * p->kernel_w + kx) * padded_oc);
      for (int q = 0; q < PX; q++) {
        const __m128i xb = _mm_loadu_si128((const __m128i*)(row + ((size_t)q * S + kx) * Cp));
        acc[q] = _mm512_dpwssd_epi32(acc[q], _mm512_cvtepi8_epi32(xb), wv);
      }
    }
  }
  for (int q = 0; q < PX; q += 2)
    epilogue512_pair(L, acc[q], acc[q + 1 < PX ? q + 1 : q], v,
                     y + out_index(p, oy, ox0 + q, v * 16),
                     q + 1 < PX ? y + out_index(p, oy, ox0 + q + 1, v * 16) : NULL);
}

T512 void cc_avx512vnni_depthwise(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int8_t* in = input;
  for (int oy = 0; oy < p->out_h; oy++) {
    int ox = 0;
    for (; ox + 8 <= p->out_w; ox += 8)
      for (int v = 0; v < L->nvec; v++) dw512_block(L, in, v, oy, ox, y, 8);
    for (; ox < p->out_w; ox++)
      for (int v = 0; v < L->nvec; v++) dw512_block(L, in, v, oy, ox, y, 1);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2                                                                                        */

INLINE T256 void epilogue256(const struct climbq_cc_layer* L, __m256i a, int v, int8_t* dst) {
  const climbq_cc_params* p = &L->p;
  const int o0 = v * 8, n = p->out_c - o0 < 8 ? p->out_c - o0 : 8;
  if (p->levels <= CC_LINEAR_LEVELS) {
    /* acc >= theta == !(theta > acc): count = levels + sum of the (-1) masks theta > acc,
     * no theta - 1 that could wrap at -2**31. */
    const int32_t* th = L->theta_vec + (size_t)v * p->levels * 8;
    __m256i missed = _mm256_setzero_si256();
    for (int t = 0; t < p->levels; t++)
      missed = _mm256_add_epi32(
          missed, _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i*)(th + t * 8)), a));
    const __m256i count = _mm256_add_epi32(_mm256_set1_epi32(p->levels), missed);
    __m256i code = _mm256_add_epi32(_mm256_mullo_epi32(count, _mm256_set1_epi32(p->mult)),
                                    _mm256_set1_epi32(p->offset));
    if (p->relu) code = _mm256_max_epi32(code, _mm256_setzero_si256());
    const __m128i s16 =
        _mm_packs_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    const __m128i s8 = _mm_packs_epi16(s16, s16);
    if (n == 8) {
      _mm_storel_epi64((__m128i*)dst, s8);
    } else {
      int8_t tmp[16];
      _mm_storeu_si128((__m128i*)tmp, s8);
      memcpy(dst, tmp, (size_t)n);
    }
  } else {
    int32_t acc[8];
    _mm256_storeu_si256((__m256i*)acc, a);
    cc_epilogue_sorted(L, acc, o0, n, dst);
  }
}

INLINE T256 void avx2_block(const struct climbq_cc_layer* L, const int16_t* in, const int16_t* w,
                            int v0, int oy, int ox0, int8_t* y, const int PX, const int NV) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad, C2 = Cp / 2;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, xstep = (size_t)S * Cp;
  __m256i acc[MAXPX][2];
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++) acc[q][cb] = _mm256_setzero_si256();
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int16_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const int16_t* px = row + (size_t)kx * Cp;
      for (int c2 = 0; c2 < C2; c2++, w += NV * 16) {
        __m256i wv[2];
        for (int cb = 0; cb < NV; cb++) wv[cb] = _mm256_loadu_si256((const __m256i*)(w + cb * 16));
        for (int q = 0; q < PX; q++) {
          int32_t xv;
          memcpy(&xv, px + q * xstep + (size_t)c2 * 2, 4);
          const __m256i xb = _mm256_set1_epi32(xv);
          for (int cb = 0; cb < NV; cb++)
            acc[q][cb] = _mm256_add_epi32(acc[q][cb], _mm256_madd_epi16(xb, wv[cb]));
        }
      }
    }
  }
  for (int q = 0; q < PX; q++)
    for (int cb = 0; cb < NV; cb++)
      epilogue256(L, acc[q][cb], v0 + cb, y + out_index(p, oy, ox0 + q, (v0 + cb) * 8));
}

#define AVX2_ROW(PX, NV)                                                               \
  do {                                                                                 \
    int ox = 0;                                                                        \
    for (; ox + (PX) <= p->out_w; ox += (PX)) avx2_block(L, in, w, v0, oy, ox, y, PX, NV); \
    for (; ox < p->out_w; ox++) avx2_block(L, in, w, v0, oy, ox, y, 1, NV);            \
  } while (0)

T256 void cc_avx2_dense(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int16_t* in = input;
  const int nchunks = (L->nvec + 1) / 2;
  for (int k = 0; k < nchunks; k++) {
    const int v0 = k * 2, nv = L->nvec - v0 < 2 ? L->nvec - v0 : 2;
    const int16_t* w = (const int16_t*)((const char*)L->wpack + L->chunk_off[k]);
    for (int oy = 0; oy < p->out_h; oy++) {
      if (nv == 1) AVX2_ROW(8, 1);
      else AVX2_ROW(4, 2);
    }
  }
}

INLINE T256 void dw256_block(const struct climbq_cc_layer* L, const int8_t* in, int v, int oy,
                             int ox0, int8_t* y, const int PX) {
  const climbq_cc_params* p = &L->p;
  const int S = p->stride, Cp = L->cin_pad;
  const size_t wp = (size_t)p->in_w + 2 * p->pad, padded_oc = (size_t)L->nvec * 8;
  const int32_t* w = (const int32_t*)L->wpack + (size_t)v * 8;
  __m256i acc[MAXPX];
  for (int q = 0; q < PX; q++) acc[q] = _mm256_setzero_si256();
  for (int ky = 0; ky < p->kernel_h; ky++) {
    const int8_t* row = in + (((size_t)oy * S + ky) * wp + (size_t)ox0 * S) * Cp + (size_t)v * 8;
    for (int kx = 0; kx < p->kernel_w; kx++) {
      const __m256i wv =
          _mm256_loadu_si256((const __m256i*)(w + ((size_t)ky * p->kernel_w + kx) * padded_oc));
      for (int q = 0; q < PX; q++) {
        const __m128i xb = _mm_loadl_epi64((const __m128i*)(row + ((size_t)q * S + kx) * Cp));
        acc[q] = _mm256_add_epi32(acc[q], _mm256_madd_epi16(_mm256_cvtepi8_epi32(xb), wv));
      }
    }
  }
  for (int q = 0; q < PX; q++) epilogue256(L, acc[q], v, y + out_index(p, oy, ox0 + q, v * 8));
}

T256 void cc_avx2_depthwise(const struct climbq_cc_layer* L, const void* input, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int8_t* in = input;
  for (int oy = 0; oy < p->out_h; oy++) {
    int ox = 0;
    for (; ox + 8 <= p->out_w; ox += 8)
      for (int v = 0; v < L->nvec; v++) dw256_block(L, in, v, oy, ox, y, 8);
    for (; ox < p->out_w; ox++)
      for (int v = 0; v < L->nvec; v++) dw256_block(L, in, v, oy, ox, y, 1);
  }
}

#endif /* x86 */
