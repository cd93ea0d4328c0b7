"""``climbq demo``: the README's main job, end to end (slow: trains four small models)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from climbq_deploy.demo import MODELS, TARGETS, summary_table

pytest.importorskip("ai_edge_litert")


def test_summary_table_lists_every_model_and_target() -> None:
    summary = {
        "models": [
            {"name": "fp32", "top1": 50.0, "many": 60.0, "medium": None, "few": 20.5, "epochs": 4}
        ],
        "targets": [
            {
                "label": "numpy",
                "status": "ok",
                "exact_match": None,
                "top1_agreement": 1.0,
                "ref_top1": 40.65,
                "latency_ms": {"p50": 3.5},
            },
            {"label": "tensorrt-gpu", "status": "unavailable", "reason": "no GPU here"},
        ],
        "total_seconds": 12.0,
        "report": "D/report.md",
    }
    table = summary_table(summary)
    assert "fp32" in table and "50.00" in table and "20.50" in table
    assert "1.0000" in table and "40.65" in table and "3.50" in table
    assert "unavailable" in table and "no GPU here" in table


@pytest.mark.slow
def test_quick_demo_leaves_report_summary_and_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "climbq_deploy", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.md", "report.html", "summary.json"):
        assert (out / name).is_file(), name
    pngs = sorted(out.rglob("*.png"))
    assert len([p for p in pngs if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]) >= 4
    summary = json.loads((out / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == [m.name for m in MODELS]
    for model in summary["models"]:
        assert 0 <= model["top1"] <= 100 and len(model["per_class"]) == 10
    labels = {t["label"]: t for t in summary["targets"]}
    assert set(labels) == {t.label for t in TARGETS}
    for label in ("numpy", "tflite-xnnpack", "tflite-fused-xnnpack", "tensorrt-onnxruntime"):
        target = labels[label]
        assert target["status"] == "ok", target
        assert Path(target["artifact"]).is_file()
        assert target["top1_agreement"] == 1.0 and target["n_images"] == 200
        assert target["latency_ms"]["p50"] > 0
    for label in ("tflite-xnnpack", "tflite-fused-xnnpack", "tensorrt-onnxruntime"):
        assert labels[label]["exact_match"] is True
    assert "climbq+-w4a4" in result.stdout and "total" in result.stdout


def test_a_finished_run_is_reused_whichever_way_its_folders_were_written(
    tmp_path: Path, monkeypatch
) -> None:
    """A run stores absolute folders, an older one the demo's relative ones: both are the
    demo's run; another epoch count is not."""
    from climbq_deploy.demo import _same_run
    from climbq_deploy.train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    config = TrainConfig("demo/data/syn", method="climbq", wbits=4, abits=4, init="demo/runs/fp32")
    stored = config.absolute().as_dict()
    assert stored["data"] == str(tmp_path / "demo/data/syn")
    assert _same_run(stored, config) and _same_run(config.as_dict(), config)
    assert _same_run({**stored, "device": "cuda"}, config)
    assert not _same_run({**stored, "epochs": 3}, config)
    assert not _same_run({**stored, "init": str(tmp_path / "other")}, config)
