"""The README's "Python API" section, run as written: its model file and its script, on a
small digits-LT set made with the CLI command the section names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def api_blocks() -> tuple[str, str]:
    """The section's two python blocks: the model file and the script."""
    text = README.read_text()
    section = text[text.index("## Python API") :]
    section = section[: section.index("\n## ", 3)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "the Python API section holds the model file and the script"
    return blocks[0], blocks[1]


def test_the_section_names_the_data_command_it_needs() -> None:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    assert "climbq data digits --gamma 10 --size 16 --out data/digits" in section


@pytest.mark.slow
def test_readme_python_api_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    model_file, script = api_blocks()
    (tmp_path / "smallnet.py").write_text(model_file)
    (tmp_path / "script.py").write_text(script)
    climbq = [sys.executable, "-m", "climbq_deploy"]
    data = ["data", "digits", "--gamma", "10", "--size", "16", "--out", "data/digits"]
    subprocess.run([*climbq, *data], cwd=tmp_path, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "QConv2d BatchNormActQuant"
    checks = [line.split() for line in lines if line.split()[0] in ("numpy", "tflite", "tensorrt")]
    assert [c[0] for c in checks] == ["numpy", "tflite", "tensorrt"]
    assert all(c[1] == "1.0" for c in checks), checks  # top-1 agreement with torch float64
    assert [c[2] for c in checks[1:]] == ["True", "True"], checks  # exact against the reference
    assert lines[-1].startswith("p50 ") and (tmp_path / "runs/smallnet/model.tflite").is_file()
