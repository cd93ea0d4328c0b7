"""bench/arm64_check.py end to end on 4 images: both forms of a trained ResNet-20 under
qemu-aarch64 exact against the NumPy reference. Skips where the aarch64 environment (qemu,
the cross compiler, /opt/arm64py's Python and LiteRT wheel) or the trained run is absent;
nothing is downloaded here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench._common import REPO_ROOT
from bench.arm64_check import DEFAULT_ENV, QEMU, environment_problem

RUN = "resnet20-climbq+-w4a4"

_problem = environment_problem(DEFAULT_ENV, QEMU)
if _problem:
    pytest.skip(f"no arm64 environment: {_problem}", allow_module_level=True)
if not (REPO_ROOT / "runs" / "lowering" / RUN / "checkpoint.pt").is_file():
    pytest.skip(f"the trained run runs/lowering/{RUN} is absent", allow_module_level=True)


@pytest.mark.slow
def test_both_forms_are_exact_on_arm64(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.arm64_check", "--runs", RUN, "--images", "4"]
    command += ["--work", str(tmp_path / "work"), "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "arm64_check.json").read_text())
    device = result["results"][0]["device"]
    assert device["machine"] == "aarch64" and not device["torch_imported"]
    seen = {(r["form"], r["kernels"], r.get("isa")) for r in device["records"]}
    assert ("climbq", "xnnpack", "neon") in seen and ("builtin", "ref", None) in seen
    for record in device["records"]:
        assert record["ok"] and record["code_mismatches"] == 0, record
