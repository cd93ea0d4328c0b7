/* A minimal Python module so that the shared library is an importable extension
 * (climbq_deploy.kernels._climbq_native). Python code loads the same file with ctypes
 * (climbq_deploy.kernels.native); the kernel's C API is climbq_conv_count.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef climbq_native_module = {
    PyModuleDef_HEAD_INIT, "_climbq_native",
    "The fused ClimbQ conv-and-count kernel (C API in climbq_conv_count.h; "
    "use climbq_deploy.kernels.native).",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__climbq_native(void) { return PyModule_Create(&climbq_native_module); }
