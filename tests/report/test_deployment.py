"""Which deployment to ship and its plain int8 counterpart, on records made by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from climbq_deploy.report.collect import RunRecord, TargetResult
from climbq_deploy.report.deployment import (
    deployments,
    plain_int8_for,
    ship_choice,
    summary_text,
)


def run(name: str, method: str, bits: int, targets: dict[str, tuple[Any, Any]]) -> RunRecord:
    folder = Path("/nowhere") / name
    results = [
        TargetResult(label, folder / "targets" / label, check, bench)
        for label, (check, bench) in targets.items()
    ]
    metrics = {"method": method, "wbits": bits, "abits": bits}
    return RunRecord(folder, name, metrics, results)


def check(top1: float, exact: bool | None = True) -> dict[str, Any]:
    return {"ref_top1": top1, "exact_match": exact, "target": "tflite"}


def bench(p50: float) -> dict[str, Any]:
    return {"latency_ms": {"p50": p50}, "threads": 1, "batch": 1}


def test_ship_the_most_accurate_exact_deployment_then_the_fastest() -> None:
    q4 = run(
        "q4", "climbq+", 4, {"slow": (check(90.0), bench(5.0)), "fast": (check(90.0), bench(2.0))}
    )
    q2 = run("q2", "climbq+", 2, {"fast": (check(95.0, exact=False), bench(1.0))})  # not exact
    lsq = run("lsq", "lsq", 4, {"fast": (check(89.0), bench(0.5))})
    chosen = ship_choice(deployments([lsq, q2, q4]))
    assert chosen is not None and chosen.name == "q4 · fast"


def test_plain_int8_is_the_yardstick_not_a_candidate() -> None:
    q4 = run("q4", "climbq+", 4, {"tflite": (check(90.0), bench(2.0))})
    int8 = run("int8", "ptq", 8, {"tflite": (check(92.0), bench(1.0)), "onnx": (None, bench(3.0))})
    w4 = run("w4", "ptq", 4, {"tflite": (check(80.0), bench(1.5))})  # PTQ, but not int8
    every = deployments([q4, int8, w4])
    assert [d.plain_int8 for d in every] == [False, True, True, False]
    ours = ship_choice(every)
    assert ours is not None and ours.name == "q4 · tflite"
    plain = plain_int8_for(ours, every)
    assert plain is not None and plain.name == "int8 · tflite"  # same label, not onnx
    text = summary_text(ours, plain, every)
    assert "top-1 92.00% (-2.00 points for ours)" in text
    assert "p50 1.000 ms (ours 2.00x its latency)" in text
    alone = ship_choice(deployments([int8]))  # nothing else deployed: int8 is the answer
    assert alone is not None and alone.name == "int8 · tflite"


def test_a_yardstick_form_counts_as_plain_int8_and_nothing_to_ship_says_so() -> None:
    yardstick = run("y", "climbq", 4, {"tflite": (None, {**bench(1.0), "form": "plain-int8"})})
    (only,) = deployments([yardstick])
    assert only.plain_int8 and only.top1 is None
    assert ship_choice([only]) is None
    assert summary_text(None, None, [only]).startswith("Nothing to ship: no deployment has")
    assert summary_text(None, None, []).startswith("Nothing to ship yet")
