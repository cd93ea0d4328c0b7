"""The native kernel's arm64 paths (NEON dot product, NEON, scalar) under qemu-aarch64.

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

import numpy as np
import pytest

from climbq_deploy.kernels import ops

NATIVE = Path(__file__).resolve().parents[2] / "kernels" / "csrc"
SOURCES = ["climbq_conv_count.c", "cc_x86.c", "cc_arm.c", "test_driver.c"]
CC, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", "/usr/aarch64-linux-gnu"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_missing = [tool for tool in (CC, QEMU) if shutil.which(tool) is None]
if _missing:
    pytest.skip(
        f"{' and '.join(_missing)} not found (apt-get install gcc-aarch64-linux-gnu qemu-user)",
        allow_module_level=True,
    )


def _case(
    rng: np.random.Generator,
    *,
    batch: int,
    hw: tuple[int, int],
    in_c: int,
    out_c: int,
    kernel: int,
    stride: int,
    padding: int,
    depthwise: bool,
    levels: int,
    relu: bool,
    x_range: tuple[int, int] = (-128, 128),
    w_range: tuple[int, int] = (-15, 16),
) -> bytes:
    """One case record: params, batch, weight, thresholds, x and the oracle's codes."""
    groups = in_c if depthwise else 1
    out_c = in_c if depthwise else out_c
    x = rng.integers(*x_range, (batch, *hw, in_c), dtype=np.int8)
    weight = rng.integers(*w_range, (out_c, kernel, kernel, 1 if depthwise else in_c), np.int8)
    acc = ops.int_conv(x, weight, stride, padding, groups, INT32_MAX).astype(np.int64)
    values = acc.reshape(-1, out_c)
    theta = values[rng.integers(0, len(values), (out_c, levels)), np.arange(out_c)[:, None]]
    theta += rng.integers(-1, 2, theta.shape)
    special = rng.random(theta.shape) < 0.05
    theta[special] = rng.choice([INT32_MIN, INT32_MAX, INT32_MAX - 1], special.sum())
    theta = np.sort(theta, axis=1).astype(np.int32)
    mult, offset = (2, -levels) if 2 * levels <= 255 else (1, -128)
    y = ops.threshold_act(acc, theta, np.ones(out_c, np.int8), mult, offset)
    y = (ops.relu(y) if relu else y).astype(np.int8)
    out_h, out_w = y.shape[1:3]
    params = (*hw, in_c, out_h, out_w, out_c, kernel, kernel, stride, padding, groups, levels)
    header = struct.pack("<16i", *params, mult, offset, int(relu), batch)
    return header + weight.tobytes() + theta.astype("<i4").tobytes() + x.tobytes() + y.tobytes()


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
    path.write_bytes(b"CCT1" + struct.pack("<i", len(cases)) + b"".join(cases))
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
