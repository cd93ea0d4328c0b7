/* Run a .tflite holding CLIMBQ_CONV_COUNT custom ops through LiteRT's public C API.
 *
 * Route: libLiteRt.so (shipped in the ai-edge-litert wheel) exports the versioned C API
 * (symbol version VERS_1.0): LiteRtCreateEnvironment, LiteRtCreateModelFromBuffer,
 * LiteRtCreateOptions, LiteRtAddCustomOpKernelOption, LiteRtCreateCompiledModel,
 * LiteRtRunCompiledModel and the tensor-buffer functions. The custom op kernel is a
 * LiteRtCustomOpKernel (Init / GetOutputLayouts / Run / Destroy) whose Run calls the fused
 * kernel of kernels/csrc/climbq_conv_count.h. Both libraries are opened with dlopen at run
 * time (paths from the caller), so this file links against neither and a missing symbol is a
 * clear error, not a load failure.
 *
 * LiteRT's kernel interface is per registration, not per node: Run receives the node's tensor
 * buffers but not the node. The caller therefore hands over every CLIMBQ_CONV_COUNT node of the
 * model (params, weight, thresholds; read from the file); Run finds its node by the weight and
 * thresholds tensors (pointer cache, then by content) and checks every shape. LiteRT ignores the
 * status returned by Run and GetOutputLayouts, so failures are recorded in the runner and
 * reported by cqlr_run / cqlr_create.
 *
 * Build: cc -O2 -fPIC -shared -I kernels/csrc climbq_litert_runner.c -o <lib> -ldl
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "climbq_conv_count.h"

#define CQLR_ERR 512 /* bytes of every error message buffer */

/* ---- LiteRT C API: the few declarations used, from LiteRT's litert/c headers at tag v2.2.0
 * (= main of 2026-08 for these; the ai-edge-litert 2.3.0 wheel's libLiteRt.so exports them at
 * VERS_1.0). Sources: litert_common.h (status, handles, accelerator and lock-mode enums),
 * litert_layout.h (LiteRtLayout, ABI-asserted 68 bytes), litert_model_types.h
 * (LiteRtRankedTensorType, 72 bytes), litert_custom_op_kernel.h (LiteRtCustomOpKernel),
 * litert_environment.h, litert_model.h, litert_options.h, litert_opaque_options.h,
 * litert_compiled_model.h, litert_tensor_buffer.h. */
typedef int LiteRtStatus; /* kLiteRtStatusOk = 0 */
typedef void* LiteRtEnvironment;
typedef void* LiteRtModel;
typedef void* LiteRtOptions;
typedef void* LiteRtOpaqueOptions;
typedef void* LiteRtCompiledModel;
typedef void* LiteRtTensorBuffer;
enum { kLiteRtStatusOk = 0, kLiteRtStatusErrorInvalidArgument = 1 };
enum { kLiteRtHwAcceleratorCpu = 1 };
enum { kLiteRtTensorBufferLockModeRead = 0, kLiteRtTensorBufferLockModeWrite = 1 };
enum { kLiteRtElementTypeInt8 = 9, kLiteRtElementTypeInt32 = 2 };
#define LITERT_TENSOR_MAX_RANK 8
#define LITERT_HOST_MEMORY_BUFFER_ALIGNMENT 64
typedef struct {
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dimensions[LITERT_TENSOR_MAX_RANK];
  uint32_t strides[LITERT_TENSOR_MAX_RANK];
} LiteRtLayout;
typedef struct {
  int element_type; /* LiteRtElementType */
  LiteRtLayout layout;
} LiteRtRankedTensorType;
typedef struct {
  LiteRtStatus (*Init)(void* user_data, const void* init_data, size_t init_data_size);
  LiteRtStatus (*GetOutputLayouts)(void* user_data, size_t num_inputs,
                                   const LiteRtLayout* input_layouts, size_t num_outputs,
                                   LiteRtLayout* output_layouts);
  LiteRtStatus (*Run)(void* user_data, size_t num_inputs, const LiteRtTensorBuffer* inputs,
                      size_t num_outputs, LiteRtTensorBuffer* outputs);
  LiteRtStatus (*Destroy)(void* user_data);
} LiteRtCustomOpKernel;
_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout is 68 bytes in LiteRT's ABI");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType is 72 bytes");

/* The functions, looked up with dlsym. */
static struct {
  int loaded;
  LiteRtStatus (*CreateEnvironment)(int, const void*, LiteRtEnvironment*);
  void (*DestroyEnvironment)(LiteRtEnvironment);
  LiteRtStatus (*CreateModelFromBuffer)(LiteRtEnvironment, const void*, size_t, LiteRtModel*);
  void (*DestroyModel)(LiteRtModel);
  LiteRtStatus (*CreateOptions)(LiteRtOptions*);
  void (*DestroyOptions)(LiteRtOptions);
  LiteRtStatus (*SetOptionsHardwareAccelerators)(LiteRtOptions, int);
  LiteRtStatus (*CreateOpaqueOptions)(const char*, void*, void (*)(void*), LiteRtOpaqueOptions*);
  LiteRtStatus (*AddOpaqueOptions)(LiteRtOptions, LiteRtOpaqueOptions);
  LiteRtStatus (*AddCustomOpKernelOption)(LiteRtOptions, const char*, int,
                                          const LiteRtCustomOpKernel*, void*);
  LiteRtStatus (*CreateCompiledModel)(LiteRtEnvironment, LiteRtModel, LiteRtOptions,
                                      LiteRtCompiledModel*);
  void (*DestroyCompiledModel)(LiteRtCompiledModel);
  LiteRtStatus (*RunCompiledModel)(LiteRtCompiledModel, size_t, size_t, LiteRtTensorBuffer*,
                                   size_t, LiteRtTensorBuffer*);
  LiteRtStatus (*CreateTensorBufferFromHostMemory)(const LiteRtRankedTensorType*, void*, size_t,
                                                   void (*)(void*), LiteRtTensorBuffer*);
  void (*DestroyTensorBuffer)(LiteRtTensorBuffer);
  LiteRtStatus (*GetTensorBufferTensorType)(LiteRtTensorBuffer, LiteRtRankedTensorType*);
  LiteRtStatus (*LockTensorBuffer)(LiteRtTensorBuffer, void**, int);
  LiteRtStatus (*UnlockTensorBuffer)(LiteRtTensorBuffer);
  int (*cc_pack)(const climbq_cc_params*, const int8_t*, const int32_t*, climbq_cc_layer**,
                 char*);
  int (*cc_run)(const climbq_cc_layer*, int32_t, const void*, int8_t*);
  void (*cc_free)(climbq_cc_layer*);
  int (*cc_abi_version)(void);
} api;

static void say(char* err, const char* fmt, ...) {
  if (!err) return;
  va_list args;
  va_start(args, fmt);
  vsnprintf(err, CQLR_ERR, fmt, args);
  va_end(args);
}

#define LOOKUP(handle, field, name)                                                   \
  do {                                                                                \
    *(void**)(&api.field) = dlsym(handle, name);                                      \
    if (!api.field) {                                                                 \
      say(err, "%s does not export %s (not the LiteRT C API this runner was written " \
               "for)", what, name);                                                   \
      return -2;                                                                      \
    }                                                                                 \
  } while (0)

/* Open libLiteRt.so and the fused kernel library, look up every function. 0 on success. */
int cqlr_load(const char* litert_path, const char* kernel_path, char* err) {
  void* litert = dlopen(litert_path, RTLD_NOW | RTLD_LOCAL);
  if (!litert) {
    say(err, "cannot open %s: %s", litert_path, dlerror());
    return -1;
  }
  const char* what = litert_path;
  LOOKUP(litert, CreateEnvironment, "LiteRtCreateEnvironment");
  LOOKUP(litert, DestroyEnvironment, "LiteRtDestroyEnvironment");
  LOOKUP(litert, CreateModelFromBuffer, "LiteRtCreateModelFromBuffer");
  LOOKUP(litert, DestroyModel, "LiteRtDestroyModel");
  LOOKUP(litert, CreateOptions, "LiteRtCreateOptions");
  LOOKUP(litert, DestroyOptions, "LiteRtDestroyOptions");
  LOOKUP(litert, SetOptionsHardwareAccelerators, "LiteRtSetOptionsHardwareAccelerators");
  LOOKUP(litert, CreateOpaqueOptions, "LiteRtCreateOpaqueOptions");
  LOOKUP(litert, AddOpaqueOptions, "LiteRtAddOpaqueOptions");
  LOOKUP(litert, AddCustomOpKernelOption, "LiteRtAddCustomOpKernelOption");
  LOOKUP(litert, CreateCompiledModel, "LiteRtCreateCompiledModel");
  LOOKUP(litert, DestroyCompiledModel, "LiteRtDestroyCompiledModel");
  LOOKUP(litert, RunCompiledModel, "LiteRtRunCompiledModel");
  LOOKUP(litert, CreateTensorBufferFromHostMemory, "LiteRtCreateTensorBufferFromHostMemory");
  LOOKUP(litert, DestroyTensorBuffer, "LiteRtDestroyTensorBuffer");
  LOOKUP(litert, GetTensorBufferTensorType, "LiteRtGetTensorBufferTensorType");
  LOOKUP(litert, LockTensorBuffer, "LiteRtLockTensorBuffer");
  LOOKUP(litert, UnlockTensorBuffer, "LiteRtUnlockTensorBuffer");
  void* kernel = dlopen(kernel_path, RTLD_NOW | RTLD_LOCAL);
  if (!kernel) {
    say(err, "cannot open %s: %s", kernel_path, dlerror());
    return -1;
  }
  what = kernel_path;
  LOOKUP(kernel, cc_pack, "climbq_cc_pack");
  LOOKUP(kernel, cc_run, "climbq_cc_run");
  LOOKUP(kernel, cc_free, "climbq_cc_free");
  LOOKUP(kernel, cc_abi_version, "climbq_cc_abi_version");
  if (api.cc_abi_version() != CLIMBQ_CC_ABI_VERSION) {
    say(err, "%s has kernel ABI %d, this runner needs %d", kernel_path, api.cc_abi_version(),
        CLIMBQ_CC_ABI_VERSION);
    return -3;
  }
  api.loaded = 1;
  return 0;
}

/* One CLIMBQ_CONV_COUNT node of the model. */
typedef struct {
  climbq_cc_params params;
  climbq_cc_layer* packed;
  int8_t* weight; /* copies, to identify the node in Run */
  int32_t* thresholds;
  size_t weight_size, thresholds_size; /* elements */
  const void* weight_seen;             /* pointers Run saw for this node (cache) */
  const void* thresholds_seen;
} cq_node;

/* One model input or output: an aligned host buffer wrapped as a LiteRT tensor buffer. */
typedef struct {
  void* data;
  size_t size; /* bytes */
  LiteRtTensorBuffer buffer;
} cq_io;

typedef struct {
  LiteRtEnvironment env;
  LiteRtModel model;
  LiteRtOptions options;
  LiteRtCompiledModel compiled;
  void* model_copy; /* LiteRT may keep pointers into the model bytes */
  int n_nodes;
  cq_node* nodes;
  int n_in, n_out;
  cq_io* io; /* inputs, then outputs */
  int failed;
  char err[CQLR_ERR];
  long init_calls, run_calls; /* how often LiteRT called the kernel (diagnostics) */
} cqlr_runner;

static void fail(cqlr_runner* r, const char* fmt, ...) {
  if (r->failed) return; /* keep the first message */
  r->failed = 1;
  va_list args;
  va_start(args, fmt);
  vsnprintf(r->err, CQLR_ERR, fmt, args);
  va_end(args);
}

#define N_FIELDS 16 /* int32 fields of climbq_cc_params (ABI 2: input_type last) */
#define OPTIONS_SIZE (4 + 4 * (1 + N_FIELDS))
_Static_assert(sizeof(climbq_cc_params) == 4 * N_FIELDS, "climbq_cc_params is N_FIELDS int32");

/* custom_options = "CQCC" + int32 ABI version + the 16 int32 fields of climbq_cc_params. */
static int parse_options(const void* data, size_t size, climbq_cc_params* out) {
  if (size != OPTIONS_SIZE || memcmp(data, "CQCC", 4) != 0) return -1;
  int32_t fields[1 + N_FIELDS];
  memcpy(fields, (const char*)data + 4, sizeof fields); /* little-endian hosts only */
  if (fields[0] != CLIMBQ_CC_ABI_VERSION) return -2;
  memcpy(out, fields + 1, sizeof *out);
  return 0;
}

static LiteRtStatus op_init(void* user_data, const void* data, size_t size) {
  cqlr_runner* r = user_data;
  climbq_cc_params params;
  r->init_calls++;
  if (parse_options(data, size, &params) != 0) {
    fail(r, "CLIMBQ_CONV_COUNT: custom_options of %zu bytes are not CQCC version %d", size,
         CLIMBQ_CC_ABI_VERSION);
    return kLiteRtStatusErrorInvalidArgument;
  }
  for (int i = 0; i < r->n_nodes; i++)
    if (memcmp(&r->nodes[i].params, &params, sizeof params) == 0) return kLiteRtStatusOk;
  fail(r, "CLIMBQ_CONV_COUNT: LiteRT initialised a node whose options match none of the %d "
          "nodes read from the file", r->n_nodes);
  return kLiteRtStatusErrorInvalidArgument;
}

static int group_channels(const climbq_cc_params* p) { return p->groups == 1 ? p->in_c : 1; }

/* Does node p take inputs of these shapes (x rank 4 any batch, weight OHWI, thresholds)? */
static int takes(const climbq_cc_params* p, const int32_t* x, const int32_t* w, const int32_t* t) {
  return x[1] == p->in_h && x[2] == p->in_w && x[3] == p->in_c && w[0] == p->out_c &&
         w[1] == p->kernel_h && w[2] == p->kernel_w && w[3] == group_channels(p) &&
         t[0] == p->out_c && t[1] == p->levels;
}

static LiteRtStatus op_layouts(void* user_data, size_t n_in, const LiteRtLayout* in, size_t n_out,
                               LiteRtLayout* out) {
  cqlr_runner* r = user_data;
  if (n_in != 3 || n_out != 1 || in[0].rank != 4 || in[1].rank != 4 || in[2].rank != 2) {
    fail(r, "CLIMBQ_CONV_COUNT: %zu inputs (ranks %d, %d, %d) and %zu outputs; needs x "
            "(N,H,W,C), weight (O,kh,kw,I), thresholds (O,levels) and one output",
         n_in, n_in > 0 ? (int)in[0].rank : -1, n_in > 1 ? (int)in[1].rank : -1,
         n_in > 2 ? (int)in[2].rank : -1, n_out);
    return kLiteRtStatusErrorInvalidArgument;
  }
  const climbq_cc_params* found = NULL;
  for (int i = 0; i < r->n_nodes; i++) {
    const climbq_cc_params* p = &r->nodes[i].params;
    if (!takes(p, in[0].dimensions, in[1].dimensions, in[2].dimensions)) continue;
    if (found && (found->out_h != p->out_h || found->out_w != p->out_w)) {
      fail(r, "CLIMBQ_CONV_COUNT: two nodes take the same input shapes but give different "
              "output shapes; LiteRT's kernel interface cannot tell them apart");
      return kLiteRtStatusErrorInvalidArgument;
    }
    found = p;
  }
  memset(out, 0, sizeof *out);
  out->rank = 4;
  out->dimensions[0] = in[0].dimensions[0];
  if (!found) {
    fail(r, "CLIMBQ_CONV_COUNT: input shapes (%d,%d,%d,%d) x (%d,%d,%d,%d) match no node of the "
            "file", in[0].dimensions[0], in[0].dimensions[1], in[0].dimensions[2],
         in[0].dimensions[3], in[1].dimensions[0], in[1].dimensions[1], in[1].dimensions[2],
         in[1].dimensions[3]);
    return kLiteRtStatusErrorInvalidArgument;
  }
  out->dimensions[1] = found->out_h;
  out->dimensions[2] = found->out_w;
  out->dimensions[3] = found->out_c;
  return kLiteRtStatusOk;
}

/* The node whose constant weight and thresholds these are: the pointers seen before, else the
 * node with equal shapes and equal contents (the pointers are then cached). */
static cq_node* find_node(cqlr_runner* r, const LiteRtRankedTensorType* types, void* const* data) {
  for (int i = 0; i < r->n_nodes; i++)
    if (r->nodes[i].weight_seen == data[1] && r->nodes[i].thresholds_seen == data[2])
      return &r->nodes[i];
  for (int i = 0; i < r->n_nodes; i++) {
    cq_node* node = &r->nodes[i];
    if (node->weight_seen) continue; /* bound to other tensors already */
    if (!takes(&node->params, types[0].layout.dimensions, types[1].layout.dimensions,
               types[2].layout.dimensions))
      continue;
    if (memcmp(node->weight, data[1], node->weight_size) != 0 ||
        memcmp(node->thresholds, data[2], 4 * node->thresholds_size) != 0)
      continue;
    node->weight_seen = data[1];
    node->thresholds_seen = data[2];
    return node;
  }
  return NULL;
}

static const char* type_name(int element_type) {
  return element_type == kLiteRtElementTypeInt8    ? "int8"
         : element_type == kLiteRtElementTypeInt32 ? "int32"
                                                   : "another type";
}

static LiteRtStatus op_run(void* user_data, size_t n_in, const LiteRtTensorBuffer* inputs,
                           size_t n_out, LiteRtTensorBuffer* outputs) {
  cqlr_runner* r = user_data;
  r->run_calls++;
  if (n_in != 3 || n_out != 1) {
    fail(r, "CLIMBQ_CONV_COUNT run with %zu inputs and %zu outputs", n_in, n_out);
    return kLiteRtStatusErrorInvalidArgument;
  }
  LiteRtTensorBuffer buffers[4] = {inputs[0], inputs[1], inputs[2], outputs[0]};
  LiteRtRankedTensorType types[4];
  void* data[4] = {0};
  /* x is int8 or int32 (the node's input_type, checked once the node is known) */
  static const int want[4] = {kLiteRtElementTypeInt8, kLiteRtElementTypeInt8,
                              kLiteRtElementTypeInt32, kLiteRtElementTypeInt8};
  static const unsigned ranks[4] = {4, 4, 2, 4};
  int locked = 0;
  LiteRtStatus status = kLiteRtStatusErrorInvalidArgument;
  for (; locked < 4; locked++) {
    int type = -1;
    if (api.GetTensorBufferTensorType(buffers[locked], &types[locked]) == kLiteRtStatusOk)
      type = types[locked].element_type;
    const int type_ok = type == want[locked] || (locked == 0 && type == kLiteRtElementTypeInt32);
    if (!type_ok || types[locked].layout.rank != ranks[locked]) {
      fail(r, "CLIMBQ_CONV_COUNT: tensor %d is not %s of rank %u", locked,
           locked == 0 ? "int8 or int32" : type_name(want[locked]), ranks[locked]);
      goto unlock;
    }
    int mode = locked == 3 ? kLiteRtTensorBufferLockModeWrite : kLiteRtTensorBufferLockModeRead;
    if (api.LockTensorBuffer(buffers[locked], &data[locked], mode) != kLiteRtStatusOk) {
      fail(r, "CLIMBQ_CONV_COUNT: cannot lock tensor %d", locked);
      goto unlock;
    }
  }
  cq_node* node = find_node(r, types, data);
  if (!node) {
    fail(r, "CLIMBQ_CONV_COUNT: weight and thresholds of this node match no node of the file");
    goto unlock;
  }
  const climbq_cc_params* p = &node->params;
  const int x_type =
      p->input_type == CLIMBQ_CC_INPUT_INT32 ? kLiteRtElementTypeInt32 : kLiteRtElementTypeInt8;
  if (types[0].element_type != x_type) {
    fail(r, "CLIMBQ_CONV_COUNT: input x is %s but the node's input_type %d needs %s",
         type_name(types[0].element_type), (int)p->input_type, type_name(x_type));
    goto unlock;
  }
  const int32_t* y = types[3].layout.dimensions;
  int32_t batch = types[0].layout.dimensions[0];
  if (y[0] != batch || y[1] != p->out_h || y[2] != p->out_w || y[3] != p->out_c) {
    fail(r, "CLIMBQ_CONV_COUNT: output (%d,%d,%d,%d), node gives (%d,%d,%d,%d)", y[0], y[1], y[2],
         y[3], batch, p->out_h, p->out_w, p->out_c);
    goto unlock;
  }
  if (api.cc_run(node->packed, batch, data[0], data[3]) != 0) {
    fail(r, "CLIMBQ_CONV_COUNT: climbq_cc_run failed");
    goto unlock;
  }
  status = kLiteRtStatusOk;
unlock:
  while (locked-- > 0) api.UnlockTensorBuffer(buffers[locked]);
  return status;
}

static LiteRtStatus op_destroy(void* user_data) {
  (void)user_data; /* the runner owns everything; cqlr_destroy frees it */
  return kLiteRtStatusOk;
}

static const LiteRtCustomOpKernel kernel = {op_init, op_layouts, op_run, op_destroy};

void cqlr_destroy(cqlr_runner* r);

static void free_payload(void* payload) { free(payload); }

static int add_io(cqlr_runner* r, int k, int type, int rank, const int32_t* dims, char* err) {
  LiteRtRankedTensorType t;
  memset(&t, 0, sizeof t);
  t.element_type = type;
  t.layout.rank = (unsigned)rank;
  size_t count = 1;
  for (int d = 0; d < rank; d++) {
    t.layout.dimensions[d] = dims[d];
    count *= (size_t)dims[d];
  }
  /* bytes per element: int8, uint8 (3) and bool (6) 1; int16 (7) 2; int64 (4) 8; else 4 */
  size_t width = type == kLiteRtElementTypeInt8 || type == 3 || type == 6 ? 1
                 : type == 7                                              ? 2
                 : type == 4                                              ? 8
                                                                          : 4;
  size_t size = count * width;
  size_t padded = (size + 2 * LITERT_HOST_MEMORY_BUFFER_ALIGNMENT - 1) /
                  LITERT_HOST_MEMORY_BUFFER_ALIGNMENT * LITERT_HOST_MEMORY_BUFFER_ALIGNMENT;
  cq_io* io = &r->io[k];
  io->data = aligned_alloc(LITERT_HOST_MEMORY_BUFFER_ALIGNMENT, padded);
  if (!io->data) {
    say(err, "out of memory for %zu bytes of model input/output %d", padded, k);
    return -1;
  }
  memset(io->data, 0, padded);
  io->size = size;
  if (api.CreateTensorBufferFromHostMemory(&t, io->data, padded, NULL, &io->buffer) !=
      kLiteRtStatusOk) {
    say(err, "LiteRtCreateTensorBufferFromHostMemory failed for model input/output %d", k);
    return -1;
  }
  return 0;
}

/* Compile `model` (the .tflite bytes) for the CPU with `threads` XNNPACK threads (0: LiteRT's
 * choice). The n_nodes CLIMBQ_CONV_COUNT nodes are given as params (n_nodes x 16 int32, the
 * options' fields), weights and thresholds (one pointer each); with register_op = 0 the op is
 * not registered (to time plain models through this route). io: n_in + n_out tensors,
 * io_types (LiteRtElementType), io_ranks, io_dims (8 per tensor). 0 on success. */
int cqlr_create(const void* model, size_t size, int threads, int register_op, int n_nodes,
                const int32_t* params, const int8_t* const* weights,
                const int32_t* const* thresholds, int n_in, int n_out, const int32_t* io_types,
                const int32_t* io_ranks, const int32_t* io_dims, cqlr_runner** out, char* err) {
  *out = NULL;
  if (!api.loaded) {
    say(err, "cqlr_load was not called");
    return -1;
  }
  cqlr_runner* r = calloc(1, sizeof *r);
  if (!r) return -1;
  r->n_nodes = n_nodes;
  r->nodes = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof *r->nodes);
  r->n_in = n_in;
  r->n_out = n_out;
  r->io = calloc((size_t)(n_in + n_out), sizeof *r->io);
  /* 64-byte aligned: TFLite points constant tensors into the model bytes, and LiteRT's
   * custom-op dispatcher wraps them as host tensor buffers, which must be 64-byte aligned. */
  r->model_copy = aligned_alloc(LITERT_HOST_MEMORY_BUFFER_ALIGNMENT,
                                (size + LITERT_HOST_MEMORY_BUFFER_ALIGNMENT - 1) /
                                    LITERT_HOST_MEMORY_BUFFER_ALIGNMENT *
                                    LITERT_HOST_MEMORY_BUFFER_ALIGNMENT);
  if (!r->nodes || !r->io || !r->model_copy) goto oom;
  memcpy(r->model_copy, model, size);
  for (int i = 0; i < n_nodes; i++) {
    cq_node* node = &r->nodes[i];
    memcpy(&node->params, params + N_FIELDS * i, sizeof node->params);
    const climbq_cc_params* p = &node->params;
    node->weight_size = (size_t)p->out_c * p->kernel_h * p->kernel_w * group_channels(p);
    node->thresholds_size = (size_t)p->out_c * p->levels;
    node->weight = malloc(node->weight_size);
    node->thresholds = malloc(4 * node->thresholds_size);
    if (!node->weight || !node->thresholds) goto oom;
    memcpy(node->weight, weights[i], node->weight_size);
    memcpy(node->thresholds, thresholds[i], 4 * node->thresholds_size);
    char why[256] = "";
    if (api.cc_pack(p, node->weight, node->thresholds, &node->packed, why) != 0) {
      say(err, "CLIMBQ_CONV_COUNT node %d: climbq_cc_pack refused it: %s", i, why);
      goto fail;
    }
  }
  if (api.CreateEnvironment(0, NULL, &r->env) != kLiteRtStatusOk) {
    say(err, "LiteRtCreateEnvironment failed");
    goto fail;
  }
  if (api.CreateModelFromBuffer(r->env, r->model_copy, size, &r->model) != kLiteRtStatusOk) {
    say(err, "LiteRtCreateModelFromBuffer refused the %zu-byte model", size);
    goto fail;
  }
  if (api.CreateOptions(&r->options) != kLiteRtStatusOk ||
      api.SetOptionsHardwareAccelerators(r->options, kLiteRtHwAcceleratorCpu) != kLiteRtStatusOk) {
    say(err, "LiteRtCreateOptions failed");
    goto fail;
  }
  if (threads > 0) { /* CPU options: opaque options "xnnpack" holding TOML (litert_cpu_options.cc) */
    char* toml = malloc(32);
    LiteRtOpaqueOptions cpu = NULL;
    if (!toml) goto oom;
    snprintf(toml, 32, "num_threads = %d\n", threads);
    if (api.CreateOpaqueOptions("xnnpack", toml, free_payload, &cpu) != kLiteRtStatusOk ||
        api.AddOpaqueOptions(r->options, cpu) != kLiteRtStatusOk) {
      say(err, "cannot set %d CPU threads through LiteRT's opaque options", threads);
      goto fail;
    }
  }
  if (register_op && api.AddCustomOpKernelOption(r->options, "CLIMBQ_CONV_COUNT", 1, &kernel, r) !=
                         kLiteRtStatusOk) {
    say(err, "LiteRtAddCustomOpKernelOption failed");
    goto fail;
  }
  if (api.CreateCompiledModel(r->env, r->model, r->options, &r->compiled) != kLiteRtStatusOk) {
    say(err, "LiteRtCreateCompiledModel failed%s%s", r->failed ? ": " : "",
        r->failed ? r->err : " (see LiteRT's log)");
    goto fail;
  }
  if (r->failed) {
    say(err, "%s", r->err);
    goto fail;
  }
  for (int k = 0; k < n_in + n_out; k++)
    if (add_io(r, k, io_types[k], io_ranks[k], io_dims + 8 * k, err) != 0) goto fail;
  *out = r;
  return 0;
oom:
  say(err, "out of memory");
fail:
  cqlr_destroy(r);
  return -1;
}

/* Host memory of model input/output k (inputs first), `size` bytes. */
void* cqlr_io_data(cqlr_runner* r, int k, size_t* size) {
  if (k < 0 || k >= r->n_in + r->n_out) return NULL;
  *size = r->io[k].size;
  return r->io[k].data;
}

/* One invoke on the inputs written into cqlr_io_data; 0 on success, else err says why. */
int cqlr_run(cqlr_runner* r, char* err) {
  enum { MAX_IO = 1024 }; /* a checked model with every layer's codes as outputs */
  LiteRtTensorBuffer in[MAX_IO], out[MAX_IO];
  if (r->n_in > MAX_IO || r->n_out > MAX_IO) {
    say(err, "more than %d model inputs or outputs", MAX_IO);
    return -1;
  }
  for (int k = 0; k < r->n_in; k++) in[k] = r->io[k].buffer;
  for (int k = 0; k < r->n_out; k++) out[k] = r->io[r->n_in + k].buffer;
  LiteRtStatus status = api.RunCompiledModel(r->compiled, 0, (size_t)r->n_in, in,
                                             (size_t)r->n_out, out);
  if (r->failed) {
    say(err, "%s", r->err);
    return -1;
  }
  if (status != kLiteRtStatusOk) {
    say(err, "LiteRtRunCompiledModel returned status %d", status);
    return -1;
  }
  return 0;
}

/* How often LiteRT called the kernel's Init and Run (to check the op really ran). */
void cqlr_counts(const cqlr_runner* r, long* init_calls, long* run_calls) {
  *init_calls = r->init_calls;
  *run_calls = r->run_calls;
}

void cqlr_destroy(cqlr_runner* r) {
  if (!r) return;
  for (int k = 0; r->io && k < r->n_in + r->n_out; k++) {
    if (r->io[k].buffer) api.DestroyTensorBuffer(r->io[k].buffer);
    free(r->io[k].data);
  }
  if (r->compiled) api.DestroyCompiledModel(r->compiled);
  if (r->options) api.DestroyOptions(r->options);
  if (r->model) api.DestroyModel(r->model);
  if (r->env) api.DestroyEnvironment(r->env);
  for (int i = 0; r->nodes && i < r->n_nodes; i++) {
    if (r->nodes[i].packed) api.cc_free(r->nodes[i].packed);
    free(r->nodes[i].weight);
    free(r->nodes[i].thresholds);
  }
  free(r->nodes);
  free(r->io);
  free(r->model_copy);
  free(r);
}
