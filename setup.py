"""Build hook for the native kernel; the project's metadata lives in pyproject.toml.

``climbq_deploy.kernels._climbq_native`` is the fused ClimbQ conv-and-count kernel
(kernels/native/*.c), built with baseline flags (its SIMD paths carry function-level target
attributes and are chosen at run time). It is optional: without a C compiler the install still
succeeds and :func:`climbq_deploy.kernels.native.available` says why the kernel is missing.
"""

from setuptools import Extension, setup

NATIVE_SOURCES = [
    "kernels/native/climbq_conv_count.c",
    "kernels/native/cc_x86.c",
    "kernels/native/cc_arm.c",
    "kernels/native/_pymodule.c",
]

setup(
    ext_modules=[
        Extension(
            "climbq_deploy.kernels._climbq_native",
            sources=NATIVE_SOURCES,
            depends=["kernels/native/climbq_conv_count.h", "kernels/native/cc_internal.h"],
            include_dirs=["kernels/native"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
