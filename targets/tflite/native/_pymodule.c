/* A minimal Python module so that the LiteRT runner shim is an importable extension
 * (climbq_deploy.targets.tflite._climbq_litert_runner), built by the package like the kernel.
 * Python loads the same file with ctypes (climbq_deploy.targets.tflite.fused_runner). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef climbq_litert_runner_module = {
    PyModuleDef_HEAD_INIT, "_climbq_litert_runner",
    "LiteRT C API runner with the CLIMBQ_CONV_COUNT custom op (use "
    "climbq_deploy.targets.tflite.fused_runner).",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__climbq_litert_runner(void) {
  return PyModule_Create(&climbq_litert_runner_module);
}
