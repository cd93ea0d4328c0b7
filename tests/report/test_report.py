"""`climbq report` end to end on tiny runs: the numbers shown equal those of the input files,
the plots are valid PNGs, missing measurements say so, bad inputs fail clearly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from climbq_deploy.cli import main
from climbq_deploy.data.dataset import load_dataset
from climbq_deploy.data.pipeline import BatchLoader, ShuffleSampler
from climbq_deploy.errors import ArtifactError, ConfigError
from climbq_deploy.export import load_run
from climbq_deploy.quant.layers import quantized_convs
from climbq_deploy.report import PLOT_FILES, make_report
from climbq_deploy.report.deployment import ACCURACY_COLUMNS, SPEED_COLUMNS
from tests.report.conftest import BENCH_ONNX, BENCH_TFLITE, CHECK_NUMPY, CHECK_TFLITE, RUNS, write

ORDER = ("fp", "q4-scaled", "q4-unscaled", "uniform")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches run faster on one thread, and far faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(one_thread, report_runs, tmp_path_factory) -> Path:
    """The report of all four runs, made through the CLI."""
    out = tmp_path_factory.mktemp("report") / "out"
    code = main(["report", *(str(report_runs[n]) for n in ORDER), "--out", str(out)])
    assert code == 0
    return out


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """Markdown tables by their bold title: header row first, separator dropped."""
    tables, title, rows = {}, None, []
    for line in [*text.splitlines(), ""]:
        if line.startswith("**") and line.endswith("**"):
            title, rows = line.strip("*"), []
        elif line.startswith("|") and title is not None:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
        elif title is not None and rows:
            tables[title], title = rows, None
    return tables


def resolve(obj: Any, key: str) -> Any:
    """``obj`` at a dotted key with ``[i]`` indices (an independent reader of report keys)."""
    for part in key.split("."):
        name, *indices = re.findall(r"[^\[\]]+", part)
        obj = obj[name]
        for index in indices:
            obj = obj[int(index)]
    return obj


def test_every_number_shown_equals_its_source_file(report) -> None:
    summary = json.loads((report / "report.json").read_text())
    md = md_tables((report / "report.md").read_text())
    checked = 0
    for table in summary["tables"].values():
        rows = md[table["title"]]
        assert rows[0] == table["columns"]
        assert len(rows) - 1 == len(table["rows"])
        for md_row, json_row in zip(rows[1:], table["rows"], strict=True):
            for shown, entry in zip(md_row, json_row, strict=True):
                assert shown == entry["shown"]
                if "file" not in entry or "computed" in entry or entry["key"] == "st_size":
                    continue
                if not entry["file"].endswith(".json"):  # the paper's figures
                    assert entry["file"].startswith("ClimbQ supplement")
                    continue
                source = json.loads(Path(entry["file"]).read_text())
                assert resolve(source, entry["key"]) == entry["value"]  # exactly
                checked += 1
    assert checked > 60


def test_accuracy_and_target_numbers_match_the_inputs(report, report_runs) -> None:
    md = md_tables((report / "report.md").read_text())
    accuracy = next(rows for title, rows in md.items() if title.startswith("Per-model accuracy"))
    head = accuracy[0]
    for name, row in zip(ORDER, accuracy[1:], strict=True):
        metrics = json.loads((report_runs[name] / "metrics.json").read_text())
        assert row[0] == name
        for column, key in (
            ("top-1 (%)", "top1"),
            ("many (%)", "many"),
            ("medium (%)", "medium"),
            ("few (%)", "few"),
        ):
            value = metrics[key]
            expected = "n/a" if value is None else f"{value:.2f}"
            assert row[head.index(column)] == expected
    assert accuracy[1][head.index("top-1 (%)")] == "48.35"  # 2-decimal inputs show exactly
    assert accuracy[2][head.index("medium (%)")] == "26.83"
    assert accuracy[3][head.index("few (%)")] == "n/a"  # null group
    scaling = [row[head.index("class scaling")] for row in accuracy[1:]]
    assert scaling == ["n/a", "faithful", "off", "n/a"]  # only ClimbQ methods scale
    accuracy_rows, speed = deployed_tables(md)
    tflite = accuracy_rows["q4-scaled", "tflite-xnnpack"]
    assert tflite["top-1 agreement"] == f"{CHECK_TFLITE['top1_agreement']:.4f}" == "0.9875"
    assert tflite["exact match"] == "yes" and tflite["deployed top-1 (%)"] == "40.75"
    assert tflite["images"] == "100" and tflite["kernels"] == "xnnpack"
    assert speed["q4-scaled", "tflite-xnnpack"]["p50 (ms)"] == "28.475"
    assert speed["q4-scaled", "tflite-xnnpack"]["threads"] == "2"
    onnx = speed["q4-scaled", "tensorrt-onnxruntime"]
    assert onnx["p99 (ms)"] == "4.125" and onnx["artifact (bytes)"] == str(
        BENCH_ONNX["artifact_bytes"]
    )
    assert onnx["batch"] == "8" and onnx["runtime"] == "onnxruntime"
    # bench top1 where no check.json
    assert accuracy_rows["q4-scaled", "tensorrt-onnxruntime"]["deployed top-1 (%)"] == "40.50"


def deployed_tables(
    md: dict[str, list[list[str]]],
) -> tuple[dict[tuple[str, str], dict[str, str]], dict[tuple[str, str], dict[str, str]]]:
    """The two deployment tables, by (run, target label), each row by column."""
    found = []
    for prefix, columns in (
        ("Deployed accuracy", ACCURACY_COLUMNS),
        ("Deployed latency", SPEED_COLUMNS),
    ):
        rows = next(rows for title, rows in md.items() if title.startswith(prefix))
        assert rows[0] == columns
        found.append({(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in rows[1:]})
    return found[0], found[1]


def test_missing_measurements_say_not_measured_and_why(report, report_runs) -> None:
    md = md_tables((report / "report.md").read_text())
    accuracy_rows, speed = deployed_tables(md)
    assert {run for run, _ in accuracy_rows} == {"q4-scaled"}  # runs without targets: below
    not_deployed = md["Not deployed"]
    assert not_deployed[0] == ["run", "target", "reason"]
    reasons = {row[0]: row[1:] for row in not_deployed[1:]}
    assert reasons["fp"] == [
        "any",
        "full precision: no integer program to deploy (the accuracy reference)",
    ]
    for name in ("q4-unscaled", "uniform"):  # no targets/ folder at all
        where = report_runs[name] / "targets"
        assert reasons[name] == [
            "any",
            f"no {where}/<label>/check.json or bench.json: not deployed",
        ]
    onnx = accuracy_rows["q4-scaled", "tensorrt-onnxruntime"]  # bench.json only
    for column in ("top-1 agreement", "code agreement", "exact match", "torch top-1 (%)"):
        assert onnx[column] == "no check.json"
    tflite = speed["q4-scaled", "tflite-xnnpack"]
    assert tflite["artifact (bytes)"] == "not measured"  # named artifact does not exist
    assert tflite["plain int8 p50 (ms)"] == "none given"
    assert accuracy_rows["q4-scaled", "numpy"]["exact match"] == "n/a (reference)"
    numpy_row = speed["q4-scaled", "numpy"]  # check.json only
    for q in ("p50 (ms)", "p90 (ms)", "p99 (ms)", "images/s", "threads", "runtime"):
        assert numpy_row[q] == "no bench.json"
    summary = json.loads((report / "report.json").read_text())
    bars = {b["name"]: b for b in summary["plots"]["targets"]["bars"]}
    assert bars["q4-scaled · numpy"]["p50_ms"] == "not measured"


def test_four_valid_png_plots_and_a_self_contained_html(report) -> None:
    for name in PLOT_FILES:
        data = (report / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(report / name) as image:
            image.verify()
        with Image.open(report / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
    page = (report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOT_FILES)
    assert "<table>" in page and "not measured" in page
    md = (report / "report.md").read_text()
    for name in PLOT_FILES:
        assert f"]({name})" in md
    assert "min_alpha ||W - alpha*W_hat||^2 / ||W||^2" in md  # the metric is stated


def test_weight_error_equals_an_independent_least_squares(report, report_runs) -> None:
    summary = json.loads((report / "report.json").read_text())
    series = {s["run"]: s for s in summary["plots"]["weight_quant_error"]["series"]}
    assert set(series) == {"q4-scaled", "q4-unscaled", "uniform"}  # fp32 has no quantizer
    assert series["q4-scaled"]["class_scaling"] == "on"
    assert series["q4-unscaled"]["class_scaling"] == "off"
    model = load_run(report_runs["q4-unscaled"]).model
    abs_total = norm_total = 0.0
    with torch.no_grad():
        pairs = [
            (n, c.weight.double().numpy().ravel(), c.quantized_weight().double().numpy())
            for n, c in quantized_convs(model)
        ]
    layers = series["q4-unscaled"]["layers"]
    assert [row["layer"] for row in layers] == [name for name, _, _ in pairs]
    for row, (_, w, q) in zip(layers, pairs, strict=True):
        _, residual, _, _ = np.linalg.lstsq(q.reshape(-1, 1), w, rcond=None)
        assert row["error"] == pytest.approx(float(residual[0]), rel=1e-9)
        assert row["relative"] == pytest.approx(float(residual[0]) / float(w @ w), rel=1e-9)
        abs_total, norm_total = abs_total + float(residual[0]), norm_total + float(w @ w)
    assert series["q4-unscaled"]["total_relative"] == pytest.approx(abs_total / norm_total)


def test_homovar_weights_equal_a_per_batch_forward(report, report_runs) -> None:
    from climbq_deploy.losses import homovar_class_weights

    summary = json.loads((report / "report.json").read_text())
    plot = summary["plots"]["homovar_weights"]
    (series,) = plot["series"]  # only the ClimbQ+ run uses HomoVar
    assert series["run"] == "q4-scaled" and series["batch_size"] == 16
    run = load_run(report_runs["q4-scaled"])
    dataset = load_dataset(report_runs["data"])
    counts = np.bincount(dataset.train_labels)
    sampler = ShuffleSampler(len(dataset.train_labels), run.config.seed)  # first epoch's order
    loader = BatchLoader(
        dataset.train_images, dataset.train_labels, 16, mean=run.mean, std=run.std, sampler=sampler
    )
    weights = []
    with torch.no_grad():
        for x, y in loader.epoch(0):
            feats = run.model.eval()(x, return_features=True)[1]
            weights.append(homovar_class_weights(feats, y, counts).double().numpy())
    assert series["batches"] == len(weights) == -(-len(dataset.train_labels) // 16)
    np.testing.assert_allclose(series["mean"], np.mean(weights, axis=0), rtol=1e-5)
    assert sum(series["mean"]) == pytest.approx(len(counts), rel=1e-6)
    beta = 0.999
    cb = (1 - beta) / (1 - beta ** counts.astype(np.float64))
    np.testing.assert_allclose(
        plot["class_balanced"]["weights"], len(cb) * cb / cb.sum(), rtol=1e-6
    )
    assert series["counts"] == counts.tolist()


def test_no_quantized_or_homovar_run_still_draws_four_plots(report_runs, tmp_path) -> None:
    files = make_report([report_runs["fp"]], tmp_path / "r")
    assert [p.name for p in files.plots] == list(PLOT_FILES)
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in files.plots)
    md = files.markdown.read_text()
    assert "No HomoVar run was given: not measured." in md


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("metrics.json", "checkpoint.pt"):
        shutil.copy(src / name, dst / name)
    return dst


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["report", *args])
    return code, capsys.readouterr().err


def test_bad_inputs_give_clear_errors(report_runs, tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ArtifactError, match=f"run folder {missing} does not exist"):
        make_report([missing], tmp_path / "o")
    code, err = run_cli([str(missing), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("climbq: error: ") and str(missing) in err

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=re.escape(str(empty / "metrics.json"))):
        make_report([empty], tmp_path / "o")

    corrupt = copy_run(report_runs["fp"], tmp_path / "corrupt")
    (corrupt / "metrics.json").write_text('{"top1": 40.6')
    with pytest.raises(ArtifactError, match=r"metrics\.json is not valid JSON \(line 1"):
        make_report([corrupt], tmp_path / "o")

    partial = copy_run(report_runs["fp"], tmp_path / "partial")
    metrics = json.loads((partial / "metrics.json").read_text())
    del metrics["per_class"]
    (partial / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ArtifactError, match="has no 'per_class'"):
        make_report([partial], tmp_path / "o")

    bad_check = copy_run(report_runs["fp"], tmp_path / "badcheck")
    (bad_check / "targets" / "tflite").mkdir(parents=True)
    (bad_check / "targets" / "tflite" / "check.json").write_text("[1, 2")
    code, err = run_cli([str(bad_check), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(bad_check / "targets" / "tflite" / "check.json") in err

    bad_value = copy_run(report_runs["fp"], tmp_path / "badvalue")
    (bad_value / "targets" / "tflite").mkdir(parents=True)
    (bad_value / "targets" / "tflite" / "bench.json").write_text('{"latency_ms": {"p50": "x"}}')
    with pytest.raises(ArtifactError, match=r"bench\.json: latency_ms\.p50 must be a number"):
        make_report([bad_value], tmp_path / "o")

    no_ckpt = tmp_path / "nockpt"
    no_ckpt.mkdir()
    shutil.copy(report_runs["q4-scaled"] / "metrics.json", no_ckpt / "metrics.json")
    with pytest.raises(ArtifactError, match=r"no checkpoint\.pt"):
        make_report([no_ckpt], tmp_path / "o")

    with pytest.raises(ConfigError, match="given twice"):
        make_report([report_runs["fp"], report_runs["fp"]], tmp_path / "o")
    assert not (tmp_path / "o" / "report.md").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("runs/lowering/resnet20-climbq+-w4a4/checkpoint.pt").is_file(),
    reason="runs/lowering not present",
)
def test_report_of_trained_runs(tmp_path) -> None:
    """The committed-recipe runs of runs/lowering (real training) with a fake tflite result."""
    root = Path("runs/lowering")
    fp = copy_run(root / "resnet20-fp32", tmp_path / "resnet20-fp32")
    q4 = copy_run(root / "resnet20-climbq+-w4a4", tmp_path / "resnet20-climbq+-w4a4")
    (q4 / "targets" / "tflite").mkdir(parents=True)
    (q4 / "targets" / "tflite" / "check.json").write_text(json.dumps(CHECK_TFLITE))
    files = make_report([fp, q4], tmp_path / "report", data=root / "syndigits-lt-g50")
    summary = json.loads(files.json.read_text())
    paper = summary["tables"]["paper"]["rows"]
    # §8 ResNet-20 4-bit g50: the run's own top-1 (these local runs are retrained at times)
    trained = json.loads((root / "resnet20-climbq+-w4a4" / "metrics.json").read_text())["top1"]
    assert [c["shown"] for c in paper[0]][2:] == [f"{trained:.2f}", "89.55"]
    (series,) = summary["plots"]["homovar_weights"]["series"]
    assert series["batches"] == 88  # 2786 images in batches of 32
    assert len(summary["plots"]["weight_quant_error"]["series"][0]["layers"]) == 21


def test_runs_named_alike_are_told_apart(report_runs, tmp_path) -> None:
    a = copy_run(report_runs["fp"], tmp_path / "a" / "run")
    b = copy_run(report_runs["fp"], tmp_path / "b" / "run")
    files = make_report([a, b], tmp_path / "r")
    names = [r["name"] for r in json.loads(files.json.read_text())["runs"]]
    assert names == ["a/run", "b/run"]
    assert RUNS["fp"][4] == 48.35


def test_the_report_opens_with_the_answer_then_deployment_then_the_science(report) -> None:
    md = (report / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Summary",
        "## Deployment",
        "## Accuracy",
        "## Weight quantization error (paper Fig. 3 view)",
        "## HomoVar class weights (paper Fig. 1 view)",
    ]
    # the highest deployed top-1 that matches its reference: tflite (40.75) over numpy (40.65)
    assert (
        "Ship q4-scaled as tflite-xnnpack (xnnpack): deployed top-1 40.75%, p50 28.475 ms "
        "(batch 1, 2 thread(s))." in md
    )
    assert "Plain int8 on tflite-xnnpack: not measured, none of the runs given" in md
    summary = md_tables(md)["Summary: the model to ship"]
    assert summary[0] == ["", "ship", "plain int8, same runtime", "full precision (torch)"]
    rows = {row[0]: row[1:] for row in summary[1:]}
    assert rows["model"] == ["q4-scaled · tflite-xnnpack", "none on tflite-xnnpack", "fp"]
    assert rows["top-1 on the test set (%)"] == ["40.75", "not measured", "48.35"]
    assert rows["latency p50 (ms per invoke)"] == ["28.475", "not measured", "n/a (not deployed)"]
    page = (report / "report.html").read_text()
    order = ["<h2>Summary</h2>", "Ship q4-scaled", "<h2>Deployment</h2>", "<h2>HomoVar"]
    assert sorted(order, key=page.index) == order
    report_json = json.loads((report / "report.json").read_text())
    assert report_json["summary"].startswith("Ship q4-scaled as tflite-xnnpack")
    for key, table in report_json["tables"].items():  # narrow enough for a page
        assert len(table["columns"]) <= 12, key


def test_plain_int8_on_the_same_runtime_is_shown_beside_ours(report_runs, tmp_path) -> None:
    """A plain int8 yardstick (bench.json ``form: plain-int8``) deployed to the same label:
    its p50 beside ours in the table, the plot and the summary, with the ratio."""
    int8 = copy_run(report_runs["fp"], tmp_path / "int8")
    bench = {
        **BENCH_TFLITE,
        "form": "plain-int8",
        "latency_ms": {"p50": 8.0, "p90": 9.0, "p99": 9.5},
    }
    write(int8 / "targets" / "tflite-xnnpack" / "bench.json", {**bench, "bytes": 305472})
    q4 = copy_run(report_runs["q4-scaled"], tmp_path / "q4")
    write(
        q4 / "targets" / "tflite-xnnpack" / "check.json", {**CHECK_TFLITE, "artifact_bytes": 152736}
    )
    write(q4 / "targets" / "tflite-xnnpack" / "bench.json", BENCH_TFLITE)
    write(q4 / "targets" / "numpy" / "check.json", CHECK_NUMPY)
    files = make_report([q4, int8], tmp_path / "r")
    md = files.markdown.read_text()
    _, speed = deployed_tables(md_tables(md))
    assert speed["q4", "tflite-xnnpack"]["plain int8 p50 (ms)"] == "8.000"
    assert speed["int8", "tflite-xnnpack"]["plain int8 p50 (ms)"] == "n/a (is plain int8)"
    assert speed["q4", "numpy"]["plain int8 p50 (ms)"] == "none given"
    ratio = 28.474889000790427 / 8.0
    assert (
        "Plain int8 on the same runtime (int8 · tflite-xnnpack): p50 8.000 ms "
        f"(ours {ratio:.2f}x its latency), 305472 bytes (ours 50% of it)." in md
    )
    rows = {row[0]: row[1:3] for row in md_tables(md)["Summary: the model to ship"][1:]}
    assert rows["latency p50 (ms per invoke)"] == ["28.475", "8.000"]
    assert rows["artifact (bytes)"] == ["152736", "305472"]
    bars = json.loads(files.json.read_text())["plots"]["targets"]["bars"]
    plain = {b["name"]: b["plain_int8_p50_ms"] for b in bars}
    assert plain["q4 · tflite-xnnpack (xnnpack)"]["value"] == 8.0
    assert plain["q4 · numpy"] == "not measured"


def test_not_deployed_reasons_come_from_the_demos_summary(report_runs, tmp_path) -> None:
    demo = tmp_path / "demo"
    a = copy_run(report_runs["fp"], demo / "runs" / "a")
    write(a / "targets" / "numpy" / "check.json", CHECK_NUMPY)
    copy_run(report_runs["fp"], demo / "runs" / "b")
    write(
        demo / "summary.json",
        {
            "targets": [
                {"model": "a", "label": "numpy", "status": "ok", "reason": None},
                {
                    "model": "a",
                    "label": "tensorrt-gpu",
                    "status": "unavailable",
                    "reason": "no GPU",
                },
            ],
            "not_deployed": [{"model": "b", "reason": "LSQ baseline: for comparison"}],
        },
    )
    files = make_report([demo / "runs" / "a", demo / "runs" / "b"], tmp_path / "r")
    rows = md_tables(files.markdown.read_text())["Not deployed"][1:]
    assert rows == [["a", "tensorrt-gpu", "no GPU"], ["b", "any", "LSQ baseline: for comparison"]]
    table = json.loads(files.json.read_text())["tables"]["not_deployed"]
    assert table["rows"][1][2]["file"] == str((demo / "summary.json").resolve())
    assert table["rows"][1][2]["key"] == "not_deployed[0].reason"


def test_the_per_class_legend_sits_below_the_axes(tmp_path, monkeypatch) -> None:
    """Many runs and a tail of near-100% classes: no legend over any bar."""
    from climbq_deploy.report import plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure) or path)
    names = [f"run {i}" for i in range(6)]
    plots.per_class_accuracy(tmp_path / "p.png", names, [[100.0] * 10] * 6, list(range(10, 0, -1)))
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    (axes,) = figure.axes
    (legend,) = figure.legends
    box, plot = legend.get_window_extent(renderer), axes.get_window_extent(renderer)
    assert box.y1 <= plot.y0  # display y grows upwards: the legend ends below the axes
    assert len(legend.get_texts()) == 6
