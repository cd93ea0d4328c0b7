"""The native kernel's arm64 paths (NEON dot product, NEON, scalar) under qemu-aarch64.

Int8 cases and int32-input cases (the stem mode: its portable C loop, built for the NEON
baseline, runs under every path name).

The C sources are cross-compiled with aarch64-linux-gnu-gcc (baseline armv8-a flags, as
shipped) together with ``kernels/csrc/test_driver.c``; the cases (inputs, parameters and the
expected codes from the NumPy oracle ``threshold_act(int_conv(...))``) are written to a binary
file the driver reads, and the driver compares every output byte. ``-cpu max`` has the ARMv8.2
dot product (neon-dot by default; neon and scalar forced with ``CLIMBQ_NATIVE_ISA``),
``-cpu cortex-a72`` has none (the run-time check must pick plain neon). Correctness only:
timings under emulation mean nothing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.kernels.test_native import make_case

NATIVE = Path(__file__).resolve().parents[2] / "kernels" / "csrc"
SOURCES = ["climbq_conv_count.c", "cc_x86.c", "cc_arm.c", "cc_int32.c", "test_driver.c"]
CC, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", "/usr/aarch64-linux-gnu"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_missing = [tool for tool in (CC, QEMU) if shutil.which(tool) is None]
if _missing:
    pytest.skip(
        f"{' and '.join(_missing)} not found (apt-get install gcc-aarch64-linux-gnu qemu-user)",
        allow_module_level=True,
    )


def _case(rng: np.random.Generator, **case: Any) -> bytes:
    """One case record: params (16 int32, input_type last), batch, weight, thresholds, x (int8
    or int32) and the oracle's codes (the layer of test_native's :func:`make_case`)."""
    x, weight, theta, kw, y = make_case(rng, **case)
    input_type = {np.dtype(np.int8): 0, np.dtype(np.int32): 1}[x.dtype]
    batch, in_c = x.shape[0], x.shape[3]
    out_h, out_w, out_c = y.shape[1:]
    kernel = weight.shape[1]
    params = (*x.shape[1:3], in_c, out_h, out_w, out_c, kernel, kernel, kw["stride"])
    params += (kw["padding"], kw["groups"], theta.shape[1], kw["mult"], kw["offset"])
    header = struct.pack("<17i", *params, int(kw["relu"]), input_type, batch)
    x_bytes = x.astype(x.dtype.newbyteorder("<")).tobytes()
    return header + weight.tobytes() + theta.astype("<i4").tobytes() + x_bytes + y.tobytes()


def _cases() -> list[bytes]:
    rng = np.random.default_rng(2026)
    out = []
    shapes = [
        (1, (8, 8), 16, 16, 3, 1, 1, False),
        (3, (7, 9), 3, 17, 3, 2, 1, False),
        (1, (6, 5), 33, 70, 1, 1, 0, False),
        (1, (9, 9), 5, 33, 5, 1, 2, False),
        (2, (5, 11), 17, 5, 5, 2, 0, False),
        (1, (4, 4), 64, 64, 3, 1, 1, False),
        (1, (9, 10), 33, 33, 3, 1, 1, True),
        (3, (8, 8), 17, 17, 3, 2, 1, True),
        (1, (7, 7), 70, 70, 5, 1, 2, True),
        (1, (8, 8), 192, 192, 3, 1, 1, True),
    ]
    for batch, hw, in_c, out_c, kernel, stride, padding, depthwise in shapes:
        for levels, relu in ((15, True), (3, False)):
            out.append(
                _case(
                    rng,
                    batch=batch,
                    hw=hw,
                    in_c=in_c,
                    out_c=out_c,
                    kernel=kernel,
                    stride=stride,
                    padding=padding,
                    depthwise=depthwise,
                    levels=levels,
                    relu=relu,
                )
            )
    for bits in range(2, 9):
        for depthwise in (False, True):
            out.append(
                _case(
                    rng,
                    batch=2,
                    hw=(6, 7),
                    in_c=19,
                    out_c=21,
                    kernel=3,
                    stride=1,
                    padding=1,
                    depthwise=depthwise,
                    levels=2**bits - 1,
                    relu=bits % 2 == 0,
                    x_range=(-30, 31),
                    w_range=(-127, 128) if bits == 8 else (-15, 16),
                )
            )
    int32_shapes = [
        (1, (32, 32), 3, 32, 3, 1, 1, False),  # the stem
        (3, (9, 11), 3, 40, 3, 2, 1, False),
        (1, (7, 9), 4, 17, 5, 1, 2, False),
        (1, (9, 9), 1, 33, 3, 3, 0, False),
        (1, (8, 8), 3, 70, 3, 1, 1, False),
        (1, (9, 10), 33, 33, 3, 1, 1, True),
        (3, (8, 8), 17, 17, 3, 2, 1, True),
    ]
    for batch, hw, in_c, out_c, kernel, stride, padding, depthwise in int32_shapes:
        for levels, relu in ((15, True), (3, False), (100, False)):
            out.append(
                _case(
                    rng,
                    batch=batch,
                    hw=hw,
                    in_c=in_c,
                    out_c=out_c,
                    kernel=kernel,
                    stride=stride,
                    padding=padding,
                    depthwise=depthwise,
                    levels=levels,
                    relu=relu,
                    w_range=(-127, 128),
                    input_dtype=np.int32,
                )
            )
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """The cross-compiled driver, the case file and its number of cases."""
    work = tmp_path_factory.mktemp("arm64")
    binary = work / "test_driver"
    command = [CC, "-O3", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{NATIVE}"]
    command += [str(NATIVE / name) for name in SOURCES] + ["-o", str(binary)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"{' '.join(command)} failed:\n{built.stderr}"
    cases = _cases()
    path = work / "cases.bin"
    path.write_bytes(b"CCT2" + struct.pack("<i", len(cases)) + b"".join(cases))
    return binary, path, len(cases)


@pytest.mark.parametrize(
    ("cpu", "forced", "expected_isa"),
    [
        ("max", None, "neon-dot"),
        ("max", "neon", "neon"),
        ("max", "scalar", "scalar"),
        ("cortex-a72", None, "neon"),
        ("cortex-a72", "neon-dot", "neon"),  # not supported by that CPU: falls back
    ],
)
def test_arm64_paths_match_the_oracle(
    driver: tuple[Path, Path, int], cpu: str, forced: str | None, expected_isa: str
) -> None:
    binary, cases, count = driver
    env = {k: v for k, v in os.environ.items() if k != "CLIMBQ_NATIVE_ISA"}
    if forced:
        env["CLIMBQ_NATIVE_ISA"] = forced
    command = [QEMU, "-L", SYSROOT, "-cpu", cpu, str(binary), str(cases)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, f"{' '.join(command)}:\n{run.stdout}\n{run.stderr}"
    assert summary == f"isa={expected_isa} cases={count} failed=0 mismatches=0", run.stdout
