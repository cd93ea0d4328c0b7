"""Build hook for the native kernel; the project's metadata lives in pyproject.toml.

``climbq_deploy.kernels._climbq_native`` is the fused ClimbQ conv-and-count kernel
(kernels/csrc/*.c), built with baseline flags (its SIMD paths carry function-level target
attributes and are chosen at run time). It is optional: without a C compiler the install still
succeeds and :func:`climbq_deploy.kernels.native.available` says why the kernel is missing.

``climbq_deploy.targets.tflite._climbq_litert_runner`` is the LiteRT C API runner that
registers the kernel as the custom op ``CLIMBQ_CONV_COUNT`` (it dlopens libLiteRt.so from the
installed ai-edge-litert and the kernel at run time; links neither). Also optional: without it
the fused runner compiles the shim into the user cache on first use, or says why it cannot.
"""

from setuptools import Extension, setup

NATIVE_SOURCES = [
    "kernels/csrc/climbq_conv_count.c",
    "kernels/csrc/cc_x86.c",
    "kernels/csrc/cc_arm.c",
    "kernels/csrc/cc_int32.c",
    "kernels/csrc/_pymodule.c",
]

setup(
    ext_modules=[
        Extension(
            "climbq_deploy.kernels._climbq_native",
            sources=NATIVE_SOURCES,
            depends=["kernels/csrc/climbq_conv_count.h", "kernels/csrc/cc_internal.h"],
            include_dirs=["kernels/csrc"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "climbq_deploy.targets.tflite._climbq_litert_runner",
            sources=[
                "targets/tflite/native/climbq_litert_runner.c",
                "targets/tflite/native/_pymodule.c",
            ],
            depends=["kernels/csrc/climbq_conv_count.h"],
            include_dirs=["kernels/csrc"],
            libraries=["dl"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        ),
    ]
)
