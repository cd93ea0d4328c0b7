/* Test driver for the fused conv-and-count kernel on any target (used under qemu-aarch64 by
 * tests/kernels/test_native_arm64.py): reads cases written from the NumPy reference, packs and
 * runs each one, compares every output byte.
 *
 * File (little-endian): "CCT2", int32 cases; per case: climbq_cc_params (16 int32, the last
 * input_type), int32 batch, int8 weight[out_c * kernel_h * kernel_w * in_c / groups], int32
 * thresholds[out_c * levels], x[batch * in_h * in_w * in_c] (int8, or int32 when input_type
 * is CLIMBQ_CC_INPUT_INT32), int8 expected[batch * out_h * out_w * out_c].
 * Prints one line per failing case and a summary "isa=NAME cases=N failed=F mismatches=M";
 * exit status 0 only when every output matches.
 *
 * Build: cc -O3 -I kernels/csrc kernels/csrc/test_driver.c kernels/csrc/climbq_conv_count.c
 *        kernels/csrc/cc_x86.c kernels/csrc/cc_arm.c kernels/csrc/cc_int32.c -o test_driver */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "climbq_conv_count.h"

static void* read_exact(FILE* f, size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p || fread(p, 1, n, f) != n) {
    fprintf(stderr, "truncated case file\n");
    exit(2);
  }
  return p;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CASES.bin\n", argv[0]);
    return 2;
  }
  FILE* f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  char magic[4];
  int32_t cases;
  if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "CCT2", 4) != 0 || fread(&cases, 4, 1, f) != 1) {
    fprintf(stderr, "%s: not a CCT2 case file\n", argv[1]);
    return 2;
  }
  int failed = 0;
  long long mismatches = 0;
  for (int32_t k = 0; k < cases; k++) {
    climbq_cc_params p;
    int32_t batch;
    if (fread(&p, sizeof p, 1, f) != 1 || fread(&batch, 4, 1, f) != 1) {
      fprintf(stderr, "truncated case file\n");
      return 2;
    }
    const size_t wn = (size_t)p.out_c * p.kernel_h * p.kernel_w * (p.in_c / p.groups);
    const size_t tn = (size_t)p.out_c * p.levels;
    const size_t xn = (size_t)batch * p.in_h * p.in_w * p.in_c;
    const size_t yn = (size_t)batch * p.out_h * p.out_w * p.out_c;
    int8_t* w = read_exact(f, wn);
    int32_t* t = read_exact(f, tn * 4);
    const size_t x_elem = p.input_type == CLIMBQ_CC_INPUT_INT32 ? 4 : 1; /* bytes per x element */
    void* x = read_exact(f, xn * x_elem);
    int8_t* want = read_exact(f, yn);
    int8_t* got = malloc(yn ? yn : 1);
    climbq_cc_layer* layer = NULL;
    char err[256];
    int rc = climbq_cc_pack(&p, w, t, &layer, err);
    if (rc != 0) {
      printf("case %d: pack failed (%d): %s\n", (int)k, rc, err);
      failed++;
    } else if ((rc = climbq_cc_run(layer, batch, x, got)) != 0) {
      printf("case %d: run failed (%d)\n", (int)k, rc);
      failed++;
    } else {
      long long bad = 0, first = -1;
      for (size_t i = 0; i < yn; i++)
        if (got[i] != want[i]) {
          if (first < 0) first = (long long)i;
          bad++;
        }
      if (bad) {
        printf("case %d: %lld of %zu outputs differ, first at %lld: got %d want %d "
               "(in %dx%dx%d out_c %d k %dx%d s %d p %d g %d levels %d input_type %d)\n",
               (int)k, bad, yn, first, got[first], want[first], (int)p.in_h, (int)p.in_w,
               (int)p.in_c, (int)p.out_c, (int)p.kernel_h, (int)p.kernel_w, (int)p.stride,
               (int)p.pad, (int)p.groups, (int)p.levels, (int)p.input_type);
        failed++;
        mismatches += bad;
      }
    }
    climbq_cc_free(layer);
    free(w);
    free(t);
    free(x);
    free(want);
    free(got);
  }
  fclose(f);
  printf("isa=%s cases=%d failed=%d mismatches=%lld\n", climbq_cc_isa(), (int)cases, failed,
         mismatches);
  return failed ? 1 : 0;
}
