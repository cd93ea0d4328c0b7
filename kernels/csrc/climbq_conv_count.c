/* The fused ClimbQ conv-and-count kernel: parameter checks, packing, run-time ISA choice, the
 * padded-input builder and the scalar reference path. The SIMD inner loops live in cc_x86.c
 * (AVX2, AVX-512 VNNI) and cc_arm.c (NEON, NEON dot product), the int32-input mode in
 * cc_int32.c (portable C, vectorised by the compiler); they are compiled with
 * function-level target attributes, so one library built with baseline flags runs everywhere
 * and picks the best path for the CPU it runs on. See climbq_conv_count.h for the semantics. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cc_internal.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static const char* const ISA_NAMES[CC_ISA_COUNT] = {"scalar", "avx2", "avx512vnni", "neon",
                                                    "neon-dot"};

static int cpu_supports(int isa) {
  switch (isa) {
    case CC_SCALAR:
      return 1;
#if defined(__x86_64__) || defined(__i386__)
    case CC_AVX2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2");
    case CC_AVX512VNNI:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    case CC_NEON:
      return 1; /* Advanced SIMD is part of every AArch64 CPU */
    case CC_NEON_DOT:
#if defined(__linux__)
      return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
      return 0;
#endif
#endif
    default:
      return 0;
  }
}

static int best_isa(void) {
  static const int order[] = {CC_AVX512VNNI, CC_AVX2, CC_NEON_DOT, CC_NEON};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
    if (cpu_supports(order[i])) return order[i];
  return CC_SCALAR;
}

static int chosen_isa(void) {
  const char* forced = getenv("CLIMBQ_NATIVE_ISA");
  if (forced && *forced)
    for (int i = 0; i < CC_ISA_COUNT; i++)
      if (strcmp(forced, ISA_NAMES[i]) == 0 && cpu_supports(i)) return i;
  return best_isa();
}

const char* climbq_cc_isa(void) { return ISA_NAMES[chosen_isa()]; }

int climbq_cc_abi_version(void) { return CLIMBQ_CC_ABI_VERSION; }

/* ------------------------------------------------------------------------------------------ */
/* Parameter checks                                                                            */

static int fail(char* err, int code, const char* fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, 256, fmt, ap);
    va_end(ap);
  }
  return code;
}

enum { CC_E_ARG = -1, CC_E_SHAPE = -2, CC_E_LEVELS = -3, CC_E_CODES = -4, CC_E_BOUND = -5,
       CC_E_ORDER = -6, CC_E_NOMEM = -7 };

static int check_params(const climbq_cc_params* p, const int8_t* weight, const int32_t* theta,
                        char* err) {
  if (!p || !weight || !theta) return fail(err, CC_E_ARG, "params, weight and thresholds must not be NULL");
#define POSITIVE(f) \
  if (p->f < 1) return fail(err, CC_E_SHAPE, #f " must be >= 1, got %d", (int)p->f)
  POSITIVE(in_h); POSITIVE(in_w); POSITIVE(in_c); POSITIVE(out_h); POSITIVE(out_w);
  POSITIVE(out_c); POSITIVE(kernel_h); POSITIVE(kernel_w); POSITIVE(stride); POSITIVE(groups);
#undef POSITIVE
  if (p->pad < 0) return fail(err, CC_E_SHAPE, "pad must be >= 0, got %d", (int)p->pad);
  if (p->pad >= 65536 || p->stride >= 65536 || p->kernel_h >= 65536 || p->kernel_w >= 65536)
    return fail(err, CC_E_SHAPE, "pad, stride and kernel sizes must be below 65536");
  if ((int64_t)p->in_h + 2 * p->pad < p->kernel_h || (int64_t)p->in_w + 2 * p->pad < p->kernel_w)
    return fail(err, CC_E_SHAPE, "kernel %dx%d larger than the padded input %dx%d",
                (int)p->kernel_h, (int)p->kernel_w, (int)(p->in_h + 2 * p->pad),
                (int)(p->in_w + 2 * p->pad));
  int64_t oh = ((int64_t)p->in_h + 2 * p->pad - p->kernel_h) / p->stride + 1;
  int64_t ow = ((int64_t)p->in_w + 2 * p->pad - p->kernel_w) / p->stride + 1;
  if (oh != p->out_h || ow != p->out_w)
    return fail(err, CC_E_SHAPE, "out_h, out_w = %d, %d but the input, kernel, stride and pad give %lld, %lld",
                (int)p->out_h, (int)p->out_w, (long long)oh, (long long)ow);
  if (p->groups != 1 && !(p->groups == p->in_c && p->groups == p->out_c))
    return fail(err, CC_E_SHAPE, "groups = %d: only 1 (dense) or in_c == out_c == groups (depthwise, in_c %d, out_c %d)",
                (int)p->groups, (int)p->in_c, (int)p->out_c);
  if (p->levels < 1 || p->levels > 255)
    return fail(err, CC_E_LEVELS, "levels must be in 1..255, got %d", (int)p->levels);
  if (p->relu != 0 && p->relu != 1) return fail(err, CC_E_ARG, "relu must be 0 or 1, got %d", (int)p->relu);
  if (p->input_type != CLIMBQ_CC_INPUT_INT8 && p->input_type != CLIMBQ_CC_INPUT_INT32)
    return fail(err, CC_E_ARG, "input_type must be 0 (int8) or 1 (int32), got %d",
                (int)p->input_type);
  int64_t lo = p->offset, hi = (int64_t)p->mult * p->levels + p->offset;
  if (lo < -128 || lo > 127 || hi < -128 || hi > 127)
    return fail(err, CC_E_CODES, "codes mult * count + offset = %lld .. %lld beyond int8 (mult %d, offset %d, levels %d)",
                (long long)(lo < hi ? lo : hi), (long long)(lo < hi ? hi : lo), (int)p->mult,
                (int)p->offset, (int)p->levels);
  const int64_t per_out = (int64_t)p->kernel_h * p->kernel_w * (p->in_c / p->groups);
  int64_t worst = 0;
  for (int64_t o = 0; o < p->out_c && p->input_type == CLIMBQ_CC_INPUT_INT8; o++) {
    int64_t s = 0;
    for (int64_t i = 0; i < per_out; i++) {
      int w = weight[o * per_out + i];
      s += w < 0 ? -w : w;
    }
    if (s > worst) worst = s;
  }
  /* int8 input: |x| <= 128, so |acc| <= 128 max_o sum |W_o| must fit int32. int32 input: the
   * range of x is the caller's guarantee (see the header); no check is possible here. */
  if (p->input_type == CLIMBQ_CC_INPUT_INT8 && worst * 128 > INT32_MAX)
    return fail(err, CC_E_BOUND, "weight sum |W| = %lld: accumulators up to %lld do not fit int32",
                (long long)worst, (long long)(worst * 128));
  for (int64_t o = 0; o < p->out_c; o++)
    for (int t = 1; t < p->levels; t++)
      if (theta[o * p->levels + t] < theta[o * p->levels + t - 1])
        return fail(err, CC_E_ORDER, "thresholds of channel %lld decrease at level %d (%d < %d)",
                    (long long)o, t, (int)theta[o * p->levels + t], (int)theta[o * p->levels + t - 1]);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Packing                                                                                     */

struct path_desc {
  int lanes, chunk_vecs, group, cin_mult, in_mode, in_elem, welem;
};

static struct path_desc describe(int isa, int depthwise) {
  struct path_desc d = {1, 1, 1, 1, CC_IN_S8, 1, 1};
  switch (isa) {
    case CC_AVX512VNNI:
      if (depthwise) d = (struct path_desc){16, 1, 1, 16, CC_IN_S8, 1, 4};
      else d = (struct path_desc){16, 4, 4, 4, CC_IN_U8X, 1, 1};
      break;
    case CC_AVX2:
      if (depthwise) d = (struct path_desc){8, 1, 1, 8, CC_IN_S8, 1, 4};
      else d = (struct path_desc){8, 2, 2, 2, CC_IN_S16, 2, 2};
      break;
    case CC_NEON_DOT:
      if (depthwise) d = (struct path_desc){8, 1, 1, 8, CC_IN_S8, 1, 2};
      else d = (struct path_desc){4, 4, 4, 4, CC_IN_S8, 1, 1};
      break;
    case CC_NEON:
      if (depthwise) d = (struct path_desc){8, 1, 1, 8, CC_IN_S8, 1, 2};
      else d = (struct path_desc){4, 4, 1, 4, CC_IN_S16, 2, 2};
      break;
    default:
      break;
  }
  return d;
}

static void put_weight(void* base, size_t index, int welem, int w) {
  if (welem == 1) ((int8_t*)base)[index] = (int8_t)w;
  else if (welem == 2) ((int16_t*)base)[index] = (int16_t)w;
  else ((uint32_t*)base)[index] = (uint32_t)(uint16_t)(int16_t)w; /* (w, 0) int16 pair */
}

void climbq_cc_free(climbq_cc_layer* L) {
  if (!L) return;
  free(L->weight);
  free(L->theta);
  free(L->wpack);
  free(L->chunk_off);
  free(L->theta_vec);
  free(L->bias);
  free(L->theta16);
  free(L->theta_search);
  free(L);
}

int climbq_cc_pack(const climbq_cc_params* params, const int8_t* weight, const int32_t* thresholds,
                   climbq_cc_layer** out, char* err) {
  if (err) err[0] = '\0';
  if (!out) return fail(err, CC_E_ARG, "out must not be NULL");
  *out = NULL;
  int rc = check_params(params, weight, thresholds, err);
  if (rc) return rc;
  const climbq_cc_params* p = params;
  climbq_cc_layer* L = calloc(1, sizeof *L);
  if (!L) return fail(err, CC_E_NOMEM, "out of memory");
  L->p = *p;
  L->isa = chosen_isa();
  if (p->input_type == CLIMBQ_CC_INPUT_INT32) { /* one portable layout for every ISA */
    const size_t wn = (size_t)p->out_c * p->kernel_h * p->kernel_w * (p->in_c / p->groups);
    const size_t tn = (size_t)p->out_c * p->levels;
    L->weight = malloc(wn);
    L->theta = malloc(tn * sizeof(int32_t));
    if (!L->weight || !L->theta) goto nomem;
    memcpy(L->weight, weight, wn);
    memcpy(L->theta, thresholds, tn * sizeof(int32_t));
    if (cc_int32_pack(L) != 0) goto nomem;
    *out = L;
    return 0;
  }
  L->depthwise = p->groups != 1;
  if (L->depthwise && p->in_c == 1) L->depthwise = 0; /* a 1-channel depthwise is dense */
  struct path_desc d = describe(L->isa, L->depthwise);
  L->lanes = d.lanes;
  L->chunk_vecs = d.chunk_vecs;
  L->group = d.group;
  L->cin_pad = (p->in_c + d.cin_mult - 1) / d.cin_mult * d.cin_mult;
  L->in_mode = d.in_mode;
  L->in_elem = d.in_elem;
  L->nvec = (p->out_c + d.lanes - 1) / d.lanes;

  const size_t taps = (size_t)p->kernel_h * p->kernel_w;
  const size_t cin_g = (size_t)(p->in_c / p->groups);
  const size_t wcount = (size_t)p->out_c * taps * cin_g;
  const size_t tcount = (size_t)p->out_c * p->levels;
  const size_t padded_oc = (size_t)L->nvec * L->lanes;
  L->weight = malloc(wcount);
  L->theta = malloc(tcount * sizeof(int32_t));
  L->theta_vec = malloc(padded_oc * p->levels * sizeof(int32_t));
  L->bias = calloc(padded_oc, sizeof(int32_t));
  if (!L->weight || !L->theta || !L->theta_vec || !L->bias) goto nomem;
  memcpy(L->weight, weight, wcount);
  memcpy(L->theta, thresholds, tcount * sizeof(int32_t));
  for (size_t v = 0; v < (size_t)L->nvec; v++)
    for (size_t t = 0; t < (size_t)p->levels; t++)
      for (size_t l = 0; l < (size_t)L->lanes; l++) {
        size_t o = v * L->lanes + l;
        L->theta_vec[(v * p->levels + t) * L->lanes + l] =
            o < (size_t)p->out_c ? thresholds[o * p->levels + t] : INT32_MAX;
      }
  int narrow = p->levels <= CC_LINEAR_LEVELS;
  for (size_t i = 0; i < tcount && narrow; i++)
    narrow = thresholds[i] >= -32767 && thresholds[i] <= 32767;
  if (narrow && L->isa != CC_SCALAR) {
    const size_t n = padded_oc * p->levels;
    L->theta16 = malloc(n * sizeof(int16_t));
    if (!L->theta16) goto nomem;
    for (size_t i = 0; i < n; i++) /* padded lanes (INT32_MAX) are never stored */
      L->theta16[i] = (int16_t)(L->theta_vec[i] > 32767 ? 32767 : L->theta_vec[i]);
  }
  if (L->isa == CC_SCALAR) {
    *out = L;
    return 0;
  }

  if (L->depthwise) {
    size_t n = taps * padded_oc;
    L->wpack = calloc(n, (size_t)d.welem);
    if (!L->wpack) goto nomem;
    for (size_t t = 0; t < taps; t++)
      for (size_t o = 0; o < (size_t)p->out_c; o++)
        put_weight(L->wpack, t * padded_oc + o, d.welem, weight[o * taps + t]);
  } else {
    const size_t cgroups = (size_t)L->cin_pad / d.group;
    const int nchunks = (L->nvec + d.chunk_vecs - 1) / d.chunk_vecs;
    L->chunk_off = malloc((size_t)nchunks * sizeof(size_t));
    size_t n = taps * (size_t)L->cin_pad * padded_oc;
    L->wpack = calloc(n, (size_t)d.welem);
    if (!L->chunk_off || !L->wpack) goto nomem;
    size_t index = 0;
    for (int k = 0; k < nchunks; k++) {
      const int v0 = k * d.chunk_vecs;
      const int nv = L->nvec - v0 < d.chunk_vecs ? L->nvec - v0 : d.chunk_vecs;
      L->chunk_off[k] = index * d.welem;
      for (size_t t = 0; t < taps; t++)
        for (size_t cg = 0; cg < cgroups; cg++)
          for (int v = 0; v < nv; v++)
            for (int l = 0; l < d.lanes; l++)
              for (int g = 0; g < d.group; g++, index++) {
                size_t o = (size_t)(v0 + v) * d.lanes + l, c = cg * d.group + g;
                if (o < (size_t)p->out_c && c < cin_g)
                  put_weight(L->wpack, index, d.welem, weight[(o * taps + t) * cin_g + c]);
              }
    }
    if (L->in_mode == CC_IN_U8X) /* sum (x + 128) w - 128 sum w, exact modulo 2**32 */
      for (size_t o = 0; o < (size_t)p->out_c; o++) {
        int64_t s = 0;
        for (size_t i = 0; i < taps * cin_g; i++) s += weight[o * taps * cin_g + i];
        L->bias[o] = (int32_t)(-128 * s);
      }
  }
  *out = L;
  return 0;
nomem:
  climbq_cc_free(L);
  return fail(err, CC_E_NOMEM, "out of memory packing the layer");
}

/* ------------------------------------------------------------------------------------------ */
/* Running                                                                                     */

/* The scalar reference: the formula of the header, accumulated modulo 2**32 like the SIMD
 * paths (exact under the header's bound, defined behaviour outside it). */
static void scalar_image(const climbq_cc_layer* L, const int8_t* x, int8_t* y) {
  const climbq_cc_params* p = &L->p;
  const int cin_g = p->in_c / p->groups, per_group = p->out_c / p->groups;
  for (int oy = 0; oy < p->out_h; oy++)
    for (int ox = 0; ox < p->out_w; ox++)
      for (int o = 0; o < p->out_c; o++) {
        const int c0 = (o / per_group) * cin_g;
        uint32_t acc = 0;
        for (int i = 0; i < p->kernel_h; i++) {
          const int iy = oy * p->stride + i - p->pad;
          if (iy < 0 || iy >= p->in_h) continue;
          for (int j = 0; j < p->kernel_w; j++) {
            const int ix = ox * p->stride + j - p->pad;
            if (ix < 0 || ix >= p->in_w) continue;
            const int8_t* xr = x + ((size_t)iy * p->in_w + ix) * p->in_c + c0;
            const int8_t* wr = L->weight + (((size_t)o * p->kernel_h + i) * p->kernel_w + j) * cin_g;
            for (int c = 0; c < cin_g; c++) acc += (uint32_t)((int32_t)xr[c] * wr[c]);
          }
        }
        const int32_t* th = L->theta + (size_t)o * p->levels;
        y[((size_t)oy * p->out_w + ox) * p->out_c + o] =
            cc_code(p, cc_count_sorted((int32_t)acc, th, p->levels));
      }
}

static void pad_image(const climbq_cc_layer* L, const int8_t* x, void* buf) {
  const climbq_cc_params* p = &L->p;
  const size_t hp = (size_t)p->in_h + 2 * p->pad, wp = (size_t)p->in_w + 2 * p->pad;
  const size_t cp = (size_t)L->cin_pad, c = (size_t)p->in_c;
  if (L->in_mode == CC_IN_S16) {
    int16_t* b = buf;
    memset(b, 0, hp * wp * cp * sizeof(int16_t));
    for (size_t r = 0; r < (size_t)p->in_h; r++)
      for (size_t q = 0; q < (size_t)p->in_w; q++) {
        int16_t* dst = b + ((r + p->pad) * wp + q + p->pad) * cp;
        const int8_t* src = x + (r * p->in_w + q) * c;
        for (size_t k = 0; k < c; k++) dst[k] = src[k];
      }
    return;
  }
  uint8_t* b = buf;
  const uint8_t flip = L->in_mode == CC_IN_U8X ? 0x80 : 0;
  memset(b, flip, hp * wp * cp); /* a zero input: 128 in the uint8 VNNI domain */
  for (size_t r = 0; r < (size_t)p->in_h; r++) {
    if (cp == c) { /* one contiguous row: a memcpy or a vectorizable xor */
      uint8_t* dst = b + ((r + p->pad) * wp + p->pad) * cp;
      const uint8_t* src = (const uint8_t*)x + r * p->in_w * c;
      const size_t len = (size_t)p->in_w * c;
      if (!flip) memcpy(dst, src, len);
      else
        for (size_t k = 0; k < len; k++) dst[k] = src[k] ^ 0x80;
      continue;
    }
    for (size_t q = 0; q < (size_t)p->in_w; q++) {
      uint8_t* dst = b + ((r + p->pad) * wp + q + p->pad) * cp;
      const uint8_t* src = (const uint8_t*)x + (r * p->in_w + q) * c;
      for (size_t k = 0; k < c; k++) dst[k] = src[k] ^ flip;
    }
  }
}

static cc_image_fn image_fn(const climbq_cc_layer* L) {
  switch (L->isa) {
#if defined(__x86_64__) || defined(__i386__)
    case CC_AVX512VNNI:
      return L->depthwise ? cc_avx512vnni_depthwise : cc_avx512vnni_dense;
    case CC_AVX2:
      return L->depthwise ? cc_avx2_depthwise : cc_avx2_dense;
#endif
#if defined(__aarch64__)
    case CC_NEON_DOT:
      return L->depthwise ? cc_neon_depthwise : cc_neon_dot_dense;
    case CC_NEON:
      return L->depthwise ? cc_neon_depthwise : cc_neon_dense;
#endif
    default:
      return NULL;
  }
}

/* The padded-input scratch of the calling thread, kept between calls and grown on demand: a
 * model runs its layers one after another, so one buffer per thread serves them all (a fresh
 * malloc per call meant an mmap and page faults per layer for large inputs). Released when
 * the process ends. */
static _Thread_local void* thread_scratch = NULL;
static _Thread_local size_t thread_scratch_size = 0;

static void* scratch(size_t size) {
  if (size > thread_scratch_size) {
    void* grown = realloc(thread_scratch, size);
    if (!grown) return NULL;
    thread_scratch = grown;
    thread_scratch_size = size;
  }
  return thread_scratch;
}

int climbq_cc_run(const climbq_cc_layer* L, int32_t batch, const void* input, int8_t* y) {
  if (!L || !input || !y || batch < 0) return CC_E_ARG;
  const climbq_cc_params* p = &L->p;
  const size_t in_size = (size_t)p->in_h * p->in_w * p->in_c; /* elements per image */
  const size_t out_size = (size_t)p->out_h * p->out_w * p->out_c;
  const size_t padded = ((size_t)p->in_h + 2 * p->pad) * ((size_t)p->in_w + 2 * p->pad) *
                        (size_t)L->cin_pad; /* elements of the padded image */
  if (p->input_type == CLIMBQ_CC_INPUT_INT32) {
    const int32_t* x = input;
    int32_t* buf = scratch(padded * sizeof(int32_t) + 64);
    if (!buf) return CC_E_NOMEM;
    for (int32_t n = 0; n < batch; n++) {
      cc_int32_pad_image(L, x + n * in_size, buf);
      cc_int32_image(L, buf, y + n * out_size);
    }
    return 0;
  }
  const int8_t* x = input;
  if (L->isa == CC_SCALAR) {
    for (int32_t n = 0; n < batch; n++) scalar_image(L, x + n * in_size, y + n * out_size);
    return 0;
  }
  cc_image_fn fn = image_fn(L);
  if (!fn) return CC_E_ARG;
  /* + 64: vector loads may read a little past the end */
  void* buf = scratch(padded * L->in_elem + 64);
  if (!buf) return CC_E_NOMEM;
  for (int32_t n = 0; n < batch; n++) {
    pad_image(L, x + n * in_size, buf);
    fn(L, buf, y + n * out_size);
  }
  return 0;
}
