"""The bad-input catalogue: every ``climbq`` command fed missing, wrong-kind, corrupt, hostile or
numerically broken input must answer with the toolkit's own one-line error.

Each :class:`Case` makes its bad input under ``tmp_path`` and returns the argv of
:func:`climbq_deploy.cli.main`; the run must exit non-zero (2 for bad input, 3 for a target that
cannot run here), print ``climbq: error:`` (or argparse's ``error:`` for a bad option) with the
expected words naming the file, layer, shape or value, and show no traceback. A few cases also
run as real processes, and ``--debug`` shows the traceback.

Runs are made without training: a model built with random weights and saved as a checkpoint
with its config is an ordinary run folder to ``export``, ``check``, ``bench`` and ``calibrate``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from climbq_deploy.cli import main
from climbq_deploy.data.dataset import ImageDataset, save_dataset
from climbq_deploy.errors import ArtifactError
from climbq_deploy.export import load_run, lower_run
from climbq_deploy.fileio import array_sha256, write_npz
from climbq_deploy.targets import get_target
from tests.conftest import make_random_run, make_tree_files, png_bytes, tiny_dataset

SIZE = 16  # image side of the tiny dataset (ResNet-20 runs on any side >= 8)


@dataclass(frozen=True)
class World:
    """Good inputs shared by every case (read-only: cases copy what they break)."""

    data: Path  # dataset folder, 2 classes, 16x16
    q4: Path  # 4-bit ClimbQ ResNet-20 run
    fp: Path  # full-precision ResNet-20 run
    climbq: Path  # q4's model.climbq
    tflite: Path  # q4's model.tflite
    onnx: Path  # q4's model.onnx


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    data = save_dataset(tiny_dataset(), root / "data")
    q4 = make_random_run(root / "q4", data, "climbq", 4)
    fp = make_random_run(root / "fp", data, "fp32", 32)
    numpy_target, tflite, onnx = (get_target(n) for n in ("numpy", "tflite", "tensorrt"))
    artifacts = root / "artifacts"
    artifacts.mkdir()
    paths = []
    for target in (numpy_target, tflite, onnx):
        graph = lower_run(load_run(q4), input_bits=target.input_bits)
        paths.append(target.export(graph, artifacts / f"model{target.suffix}"))
    return World(data, q4, fp, *paths)


# --- ways to break a good input ------------------------------------------------------------


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(0, 8))
    return path


def _truncated(src: Path, out: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def _copy(src: Path, out: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, out)
    else:
        shutil.copyfile(src, out)
    return out


def _dataset_with(world: World, out: Path, **arrays: np.ndarray) -> Path:
    """A copy of the dataset with ``arrays`` replaced and meta.json updated to match (hashes
    included), so only the content itself is wrong."""
    folder = _copy(world.data, out)
    with np.load(folder / "data.npz") as npz:
        current = {key: npz[key] for key in npz.files}
    current.update(arrays)
    write_npz(folder / "data.npz", current)
    meta = json.loads((folder / "meta.json").read_text())
    meta["arrays"] = {
        key: {"dtype": value.dtype.str, "shape": list(value.shape), "sha256": array_sha256(value)}
        for key, value in current.items()
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _edit_meta(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _run_with(
    world: World, out: Path, edit: Callable[[dict[str, Any]], None], src: Path | None = None
) -> Path:
    """A copy of a run (q4 by default) whose checkpoint state went through ``edit``."""
    folder = _copy(src or world.q4, out)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, folder / "checkpoint.pt")
    return folder


def _set_tensor(key: str, value: float) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        state["model"][key].fill_(value)

    return edit


def _rewrite_zip(src: Path, out: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    edit(members)
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out


def _manifest_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], None]:
    def apply(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()

    return apply


def _flip_weight_byte(members: dict[str, bytes]) -> None:
    name = next(n for n in sorted(members) if n.startswith("arrays/weights/"))
    data = bytearray(members[name])
    data[0] ^= 0xFF
    members[name] = bytes(data)


def _write_zip(path: Path, entries: dict[str, bytes], link: str | None = None) -> Path:
    """A zip of an image tree; ``link`` names a member stored as a symlink entry."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name == link:
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return path


def _tree(root: Path, spec: dict[str, dict[str, int]]) -> Path:
    for rel, data in make_tree_files(spec, SIZE).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


TREE = {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}


def _zip_tree(path: Path, extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    return _write_zip(path, {**make_tree_files(TREE, SIZE), **(extra or {})}, link)


class _Mkdir:
    """A pickle payload that would create a folder when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _malicious_checkpoint(world: World, out: Path, legacy: bool = False) -> Path:
    folder = _copy(world.q4, out)
    payload = {"checkpoint_version": 1, "config": {}, "model": _Mkdir(out / "pwned")}
    if legacy:
        (folder / "checkpoint.pt").write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, folder / "checkpoint.pt")
    return folder


# --- setups: each makes one bad input under tmp_path and returns its path --------------------

Setup = Callable[["World", Path], Any]


def q4(w: World, t: Path) -> Path:
    return w.q4


def fp(w: World, t: Path) -> Path:
    return w.fp


def data(w: World, t: Path) -> Path:
    return w.data


def q4_copy(w: World, t: Path) -> Path:
    """A private copy (``check`` writes its fresh artifact into the run folder)."""
    return _copy(w.q4, t / "q4")


def climbq_model(w: World, t: Path) -> Path:
    return w.climbq


def tflite_model(w: World, t: Path) -> Path:
    return w.tflite


def onnx_model(w: World, t: Path) -> Path:
    return w.onnx


def missing(w: World, t: Path) -> Path:
    return t / "nope"


def png_file(w: World, t: Path) -> Path:
    return _png(t / "picture.png")


def out_dir(w: World, t: Path) -> Path:
    return t / "out"


def broken_meta(w: World, t: Path) -> Path:
    folder = _copy(w.data, t / "d")
    (folder / "meta.json").write_text("{not json")
    return folder


def newer_dataset(w: World, t: Path) -> Path:
    return _edit_meta(_copy(w.data, t / "d"), lambda m: m.update(format_version=2))


def truncated_npz(w: World, t: Path) -> Path:
    folder = _copy(w.data, t / "d")
    _truncated(w.data / "data.npz", folder / "data.npz")
    return folder


def tampered_npz(w: World, t: Path) -> Path:
    """Image bytes changed, meta.json's sha256 not."""
    folder = _copy(w.data, t / "d")
    with np.load(folder / "data.npz") as npz:
        arrays = {key: npz[key].copy() for key in npz.files}
    arrays["test_images"][0, 0, 0, 0] ^= 1
    write_npz(folder / "data.npz", arrays)
    return folder


def nan_images(w: World, t: Path) -> Path:
    return _dataset_with(w, t / "d", train_images=np.full((8, SIZE, SIZE, 3), np.nan, np.float32))


def wide_images(w: World, t: Path) -> Path:
    """int16 pixels up to 300: outside uint8's 0..255."""
    return _dataset_with(w, t / "d", test_images=np.full((4, SIZE, SIZE, 3), 300, np.int16))


def bad_labels(w: World, t: Path) -> Path:
    return _dataset_with(w, t / "d", train_labels=np.array([0, 0, 0, 0, 0, 1, 1, 7], np.int64))


def empty_dataset(w: World, t: Path) -> Path:
    return _dataset_with(
        w,
        t / "d",
        train_images=np.zeros((0, SIZE, SIZE, 3), np.uint8),
        train_labels=np.zeros((0,), np.int64),
    )


def no_test_images(w: World, t: Path) -> Path:
    return _dataset_with(
        w,
        t / "d",
        test_images=np.zeros((0, SIZE, SIZE, 3), np.uint8),
        test_labels=np.zeros((0,), np.int64),
    )


def zero_image_class(w: World, t: Path) -> Path:
    """Class 'b' keeps its name but has no training image."""
    return _dataset_with(w, t / "d", train_labels=np.zeros((8,), np.int64))


def small_images(w: World, t: Path) -> Path:
    return save_dataset(tiny_dataset(size=8), t / "d8")


def three_classes(w: World, t: Path) -> Path:
    base = tiny_dataset()
    return save_dataset(
        ImageDataset(
            "three",
            ("a", "b", "c"),
            base.train_images,
            np.array([0, 0, 0, 0, 1, 1, 2, 2], np.int64),
            base.test_images,
            np.array([0, 1, 2, 2], np.int64),
            base.info,
        ),
        t / "d3",
    )


def corrupt_image_tree(w: World, t: Path) -> Path:
    root = _tree(t / "src", TREE)
    (root / "train/a/0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def corrupt_image_zip(w: World, t: Path) -> Path:
    return _zip_tree(t / "src.zip", {"train/a/0001.png": png_bytes(1, SIZE)[:60]})


def empty_class_tree(w: World, t: Path) -> Path:
    root = _tree(t / "src", TREE)
    (root / "train/c").mkdir()
    return root


def sixteen_bit_tree(w: World, t: Path) -> Path:
    """A 16-bit grayscale PNG: Pillow's RGB conversion would clip every pixel to 255."""
    from PIL import Image

    root = _tree(t / "src", TREE)
    pixels = np.full((SIZE, SIZE), 40000, np.uint16)
    Image.fromarray(pixels).save(root / "train/a/0000.png")
    return root


def float_tiff_tree(w: World, t: Path) -> Path:
    """A float32 TIFF holding NaN and 1e9: no 8-bit meaning at all."""
    from PIL import Image

    root = _tree(t / "src", TREE)
    pixels = np.full((SIZE, SIZE), np.nan, np.float32)
    pixels[0] = 1e9
    Image.fromarray(pixels).save(root / "train/b/0000.tiff")
    return root


def malicious_cifar_batches(w: World, t: Path) -> Path:
    """A CIFAR-10 python-batches folder whose batches.meta would create a folder when
    unpickled by plain pickle."""
    folder = t / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (folder / name).write_bytes(b"")
    (folder / "batches.meta").write_bytes(pickle.dumps(_Mkdir(t / "pwned")))
    return folder


def truncated_zip(w: World, t: Path) -> Path:
    return _truncated(_zip_tree(t / "full.zip"), t / "src.zip", 0.6)


def absolute_member_zip(w: World, t: Path) -> Path:
    return _zip_tree(t / "src.zip", {"/etc/evil.png": png_bytes(2, SIZE)})


def dotdot_member_zip(w: World, t: Path) -> Path:
    return _zip_tree(t / "src.zip", {"train/a/../../../evil.png": png_bytes(2, SIZE)})


def symlink_member_zip(w: World, t: Path) -> Path:
    return _zip_tree(t / "src.zip", {"train/a/link.png": b"/etc/passwd"}, link="train/a/link.png")


def tree(w: World, t: Path) -> Path:
    return _tree(t / "src", TREE)


def csv_bad_label(w: World, t: Path) -> Path:
    path = t / "split.csv"
    path.write_text("image,label\ntrain/a/0000.png,zero\n")
    return path


def garbage_checkpoint(w: World, t: Path) -> Path:
    folder = _copy(w.q4, t / "run")
    (folder / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder


def truncated_checkpoint(w: World, t: Path) -> Path:
    folder = _copy(w.q4, t / "run")
    _truncated(w.q4 / "checkpoint.pt", folder / "checkpoint.pt")
    return folder


def malicious_checkpoint(w: World, t: Path) -> Path:
    return _malicious_checkpoint(w, t / "run")


def malicious_legacy_checkpoint(w: World, t: Path) -> Path:
    return _malicious_checkpoint(w, t / "run", legacy=True)


def newer_checkpoint(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", lambda s: s.update(checkpoint_version=2))


def checkpoint_without_config(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", lambda s: s.pop("config"))


def checkpoint_of_other_arch(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", lambda s: s["config"].update(arch="resnet32"))


def checkpoint_of_unknown_arch(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", lambda s: s["config"].update(arch="vgg11"))


def nan_batchnorm_gamma(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", _set_tensor("layers.1.bn1.weight", float("nan")))


def negative_batchnorm_variance(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", _set_tensor("layers.2.bn2.running_var", -1.0))


def nan_conv_weight(w: World, t: Path) -> Path:
    return _run_with(w, t / "run", _set_tensor("layers.0.conv2.weight", float("nan")))


def nan_fp_weights(w: World, t: Path) -> Path:
    return _run_with(w, t / "fp", _set_tensor("layers.0.conv1.weight", float("nan")), w.fp)


def overflowing_fp_weights(w: World, t: Path) -> Path:
    """Finite weights (3e38) whose products overflow float32 to inf in the stem."""
    return _run_with(w, t / "fp", _set_tensor("conv1.weight", 3e38), w.fp)


def zero_fp_weights(w: World, t: Path) -> Path:
    """A block whose conv is all zeros: its quantizer observes only 0, a range of 0."""
    return _run_with(w, t / "fp", _set_tensor("layers.0.conv1.weight", 0.0), w.fp)


def nan_ptq_range(w: World, t: Path) -> Path:
    """A calibrated-looking ptq run whose one activation range is NaN."""
    folder = make_random_run(t / "ptq", w.data, "ptq", 8)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    for key, value in state["model"].items():
        if key.endswith("quantizer.range"):
            value.fill_(2.0)
    state["model"]["layers.3.act1.quantizer.range"].fill_(float("nan"))
    torch.save(state, folder / "checkpoint.pt")
    return folder


def _run_on(w: World, t: Path, dataset: Path) -> Path:
    return _run_with(w, t / "run", lambda s: s["config"].update(data=str(dataset)))


def _normalization(**values: list[Any]) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["info"]["normalization"].update(values)


def zero_std_run(w: World, t: Path) -> Path:
    folder = _edit_meta(_copy(w.data, t / "d"), _normalization(std=[0.25, 0.0, 0.25]))
    return _run_on(w, t, folder)


def nan_mean_run(w: World, t: Path) -> Path:
    folder = _edit_meta(_copy(w.data, t / "d"), _normalization(mean=[0.5, "NaN", 0.5]))
    return _run_on(w, t, folder)


def huge_image_run(w: World, t: Path) -> Path:
    """A run whose dataset says 65536 x 65536 images: the global sum pool of 4-bit codes over
    16384**2 positions exceeds int32, which export must refuse rather than overflow."""

    def edit(meta: dict[str, Any]) -> None:
        meta["image_shape"] = [65536, 65536, 3]
        meta["arrays"]["test_images"]["shape"] = [4, 65536, 65536, 3]

    return _run_on(w, t, _edit_meta(_copy(w.data, t / "d"), edit))


def schema2_artifact(w: World, t: Path) -> Path:
    return _rewrite_zip(
        w.climbq, t / "new.climbq", _manifest_edit(lambda m: m.update(schema_version=2))
    )


def hash_mismatch_artifact(w: World, t: Path) -> Path:
    return _rewrite_zip(w.climbq, t / "tampered.climbq", _flip_weight_byte)


def truncated_artifact(w: World, t: Path) -> Path:
    return _truncated(w.climbq, t / "cut.climbq")


def image_zip_as_artifact(w: World, t: Path) -> Path:
    return _zip_tree(t / "images.climbq")


def truncated_tflite(w: World, t: Path) -> Path:
    return _truncated(w.tflite, t / "cut.tflite")


def png_as_tflite(w: World, t: Path) -> Path:
    return _png(t / "picture.tflite")


def truncated_onnx(w: World, t: Path) -> Path:
    return _truncated(w.onnx, t / "cut.onnx")


def tflite_as_climbq(w: World, t: Path) -> Path:
    return _copy(w.tflite, t / "model.climbq")


def folder_out(w: World, t: Path) -> Path:
    (t / "out").mkdir()
    return t / "out"


def corrupt_metrics(w: World, t: Path) -> Path:
    folder = _copy(w.q4, t / "run")
    (folder / "metrics.json").write_text('{"top1": ')
    return folder


def png_out(w: World, t: Path) -> Path:
    return _png(t / "out.png")


def under_a_file(w: World, t: Path) -> Path:
    """A path below a file: writing there fails with NotADirectoryError (an OSError), as a
    read-only folder would (chmod does not stop root, who runs these tests in CI)."""
    return _png(t / "picture.png") / "sub"


def world_path(setup: Setup) -> str:
    """The file name a world setup returns (``model.tflite``), for expected messages."""
    return {climbq_model: "model.climbq", tflite_model: "model.tflite", onnx_model: "model.onnx"}[
        setup
    ]


def uniform8_run(w: World, t: Path) -> Path:
    return make_random_run(t / "u8", w.data, "uniform", 8)


def climbq7_run(w: World, t: Path) -> Path:
    return make_random_run(t / "c7", w.data, "climbq", 7)


def tflite_out(w: World, t: Path) -> Path:
    return t / "model.tflite"


def onnx_out(w: World, t: Path) -> Path:
    return t / "model.onnx"


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` parts are strings or setups (called with the world and
    ``tmp_path``, their result passed as a string); ``expect`` must be in the error line."""

    id: str
    argv: tuple[str | Setup, ...]
    expect: str
    code: int = 2

    def make(self, world: World, tmp: Path) -> list[str]:
        return [part if isinstance(part, str) else str(part(world, tmp)) for part in self.argv]


def case(id: str, *argv: str | Setup, expect: str, code: int = 2) -> Case:
    return Case(id, argv, expect, code)


FAST_BENCH = ("--warmup", "0", "--repeats", "1")
TRAIN = ("--epochs", "1", "--out", out_dir)
EXPORT = ("--out", lambda w, t: t / "model.climbq")
CAL = ("--method", "ptq-int8", "--calib-size", "4", "--out", out_dir)
SRC = ("data", "folder", "--gamma", "1", "--size", str(SIZE), "--out", out_dir, "--source")

CASES: list[Case] = [
    # climbq data
    case("show-missing-folder", "data", "show", missing, expect="does not exist"),
    case("show-png-as-folder", "data", "show", png_file, expect="is not a folder"),
    case("show-corrupt-meta", "data", "show", broken_meta, expect="meta.json is not valid JSON"),
    case("show-newer-format", "data", "show", newer_dataset, expect="format_version 2"),
    case("show-truncated-npz", "data", "show", truncated_npz, expect="corrupt or truncated"),
    case(
        "show-tampered-array",
        "data",
        "show",
        tampered_npz,
        expect="test_images fails its sha256 check",
    ),
    case("show-nan-float-images", "data", "show", nan_images, expect="train images must be uint8"),
    case("show-labels-out-of-range", "data", "show", bad_labels, expect="labels must lie in 0..1"),
    case("show-empty-dataset", "data", "show", empty_dataset, expect="train split holds no images"),
    case(
        "show-class-with-zero-images",
        "data",
        "show",
        zero_image_class,
        expect="class 'b' (id 1) has no training images",
    ),
    case("folder-missing-source", *SRC, missing, expect="does not exist"),
    case(
        "folder-out-under-a-file",
        "data",
        "folder",
        "--gamma",
        "1",
        "--size",
        str(SIZE),
        "--source",
        tree,
        "--out",
        under_a_file,
        expect="picture.png/sub: Not a directory",
    ),
    case("folder-png-as-source", *SRC, png_file, expect="neither a folder nor a zip"),
    case(
        "folder-corrupt-image",
        *SRC,
        corrupt_image_tree,
        expect="src/train/a/0001.png: not an image format Pillow reads",
    ),
    case(
        "folder-corrupt-image-in-zip",
        *SRC,
        corrupt_image_zip,
        expect="src.zip:train/a/0001.png: image file is truncated",
    ),
    case(
        "folder-class-with-zero-images",
        *SRC,
        empty_class_tree,
        expect="train class folder(s) c hold no images",
    ),
    case("folder-16-bit-image", *SRC, sixteen_bit_tree, expect="train/a/0000.png"),
    case("folder-float-nan-image", *SRC, float_tiff_tree, expect="train/b/0000.tiff"),
    case(
        "folder-truncated-zip",
        *SRC,
        truncated_zip,
        expect="src.zip is neither a folder nor a readable zip (truncated or corrupt?)",
    ),
    case(
        "cifar10-malicious-pickle-batch",
        "data",
        "cifar10",
        "--source",
        malicious_cifar_batches,
        "--gamma",
        "10",
        "--out",
        out_dir,
        expect="global posix.mkdir is not allowed",
    ),
    case(
        "folder-zip-absolute-member",
        *SRC,
        absolute_member_zip,
        expect="'/etc/evil.png' (absolute path)",
    ),
    case("folder-zip-dotdot-member", *SRC, dotdot_member_zip, expect="'..' path component"),
    case(
        "folder-zip-symlink-member",
        *SRC,
        symlink_member_zip,
        expect="'train/a/link.png' (symbolic link)",
    ),
    case(
        "folder-csv-label-not-integer",
        *SRC,
        tree,
        "--split-csv",
        csv_bad_label,
        expect="label 'zero' is not an integer",
    ),
    case(
        "syndigits-infinite-gamma",
        "data",
        "syndigits",
        "--gamma",
        "inf",
        "--out",
        out_dir,
        expect="gamma must be a finite number",
    ),
    # climbq train
    case("train-missing-data", "train", "--data", missing, *TRAIN, expect="does not exist"),
    case("train-png-as-data", "train", "--data", png_file, *TRAIN, expect="is not a folder"),
    case(
        "train-unknown-arch",
        "train",
        "--data",
        data,
        "--arch",
        "resnet99",
        *TRAIN,
        expect="unknown arch 'resnet99'",
    ),
    case(
        "train-ptq-method",
        "train",
        "--data",
        data,
        "--method",
        "ptq",
        "--wbits",
        "4",
        "--abits",
        "4",
        *TRAIN,
        expect="make PTQ runs with `climbq calibrate`",
    ),
    case(
        "train-unknown-method",
        "train",
        "--data",
        data,
        "--method",
        "binary",
        *TRAIN,
        expect="unknown method 'binary'",
    ),
    case(
        "train-unsupported-bits",
        "train",
        "--data",
        data,
        "--method",
        "climbq",
        "--wbits",
        "9",
        "--abits",
        "4",
        *TRAIN,
        expect="9",
    ),
    case(
        "train-unknown-loss",
        "train",
        "--data",
        data,
        "--loss",
        "focal",
        *TRAIN,
        expect="unknown loss 'focal'",
    ),
    case(
        "train-infinite-lr",
        "train",
        "--data",
        data,
        "--lr",
        "inf",
        *TRAIN,
        expect="--lr: expected a finite number > 0, got 'inf'",
    ),
    case(
        "train-nan-val-fraction",
        "train",
        "--data",
        data,
        "--val-fraction",
        "nan",
        *TRAIN,
        expect="val_fraction",
    ),
    case(
        "train-out-is-a-file",
        "train",
        "--data",
        data,
        "--epochs",
        "1",
        "--out",
        png_out,
        expect="out.png exists and is not a folder",
    ),
    case(
        "train-empty-dataset",
        "train",
        "--data",
        empty_dataset,
        *TRAIN,
        expect="train split holds no images",
    ),
    case(
        "train-class-with-zero-images",
        "train",
        "--data",
        zero_image_class,
        *TRAIN,
        expect="has no training images",
    ),
    case(
        "train-init-corrupt-checkpoint",
        "train",
        "--data",
        data,
        "--method",
        "climbq",
        "--wbits",
        "4",
        "--abits",
        "4",
        "--init",
        garbage_checkpoint,
        *TRAIN,
        expect="corrupt, truncated or unsafe",
    ),
    # climbq calibrate
    case("calibrate-missing-run", "calibrate", missing, *CAL, expect="is not a training run"),
    case("calibrate-quantized-run", "calibrate", q4, *CAL, expect="full-precision run"),
    case(
        "calibrate-nan-percentile",
        "calibrate",
        fp,
        "--range",
        "percentile",
        "--percentile",
        "nan",
        *CAL,
        expect="percentile must be in (0, 100], got nan",
    ),
    case(
        "calibrate-nan-weights",
        "calibrate",
        nan_fp_weights,
        *CAL,
        expect="tensor 'layers.0.conv1.weight' (16, 16, 3, 3) holds 2304 NaN/inf",
    ),
    case(
        "calibrate-overflowing-activations",
        "calibrate",
        overflowing_fp_weights,
        *CAL,
        expect="enter activation quantizer 'act1'",
    ),
    case(
        "calibrate-zero-range",
        "calibrate",
        zero_fp_weights,
        *CAL,
        expect="activation quantizer 'layers.0.act1': activation range must be finite and > 0",
    ),
    case(
        "calibrate-more-images-than-data",
        "calibrate",
        fp,
        "--method",
        "ptq-int8",
        "--calib-size",
        "999",
        "--out",
        out_dir,
        expect="999",
    ),
    # climbq export
    case("export-missing-run", "export", missing, *EXPORT, expect="is not a training run"),
    case("export-png-as-run", "export", png_file, *EXPORT, expect="is not a training run"),
    case("export-full-precision-run", "export", fp, *EXPORT, expect="is full precision"),
    case(
        "export-unknown-target",
        "export",
        q4,
        "--target",
        "coreml",
        *EXPORT,
        expect="unknown target 'coreml'",
    ),
    case(
        "export-weights-on-numpy",
        "export",
        q4,
        "--weights",
        "int4",
        *EXPORT,
        expect="weights='int4' applies to tflite and tensorrt",
    ),
    case(
        "export-garbage-checkpoint",
        "export",
        garbage_checkpoint,
        *EXPORT,
        expect="corrupt, truncated or unsafe",
    ),
    case(
        "export-truncated-checkpoint",
        "export",
        truncated_checkpoint,
        *EXPORT,
        expect="corrupt, truncated or unsafe",
    ),
    case(
        "export-malicious-pickle",
        "export",
        malicious_checkpoint,
        *EXPORT,
        expect="corrupt, truncated or unsafe",
    ),
    case(
        "export-malicious-legacy-pickle",
        "export",
        malicious_legacy_checkpoint,
        *EXPORT,
        expect="corrupt, truncated or unsafe",
    ),
    case(
        "export-newer-checkpoint",
        "export",
        newer_checkpoint,
        *EXPORT,
        expect="checkpoint_version 2",
    ),
    case(
        "export-checkpoint-without-config",
        "export",
        checkpoint_without_config,
        *EXPORT,
        expect="checkpoint.pt has no 'config'",
    ),
    case(
        "export-checkpoint-of-other-arch",
        "export",
        checkpoint_of_other_arch,
        *EXPORT,
        expect="do not fit resnet32",
    ),
    case(
        "export-checkpoint-of-unknown-arch",
        "export",
        checkpoint_of_unknown_arch,
        *EXPORT,
        expect="unknown arch 'vgg11'",
    ),
    case(
        "export-corrupt-metrics",
        "export",
        corrupt_metrics,
        *EXPORT,
        expect="metrics.json is not readable JSON",
    ),
    case(
        "export-out-is-a-folder",
        "export",
        q4,
        "--out",
        folder_out,
        expect="is a folder; give the artifact's file name",
    ),
    case(
        "export-nan-batchnorm-gamma",
        "export",
        nan_batchnorm_gamma,
        *EXPORT,
        expect="tensor 'layers.1.bn1.weight' (16,) holds 16 NaN/inf",
    ),
    case(
        "export-negative-batchnorm-variance",
        "export",
        negative_batchnorm_variance,
        *EXPORT,
        expect="BatchNorm 'layers.2.bn2' channel 0: var + eps",
    ),
    case(
        "export-nan-conv-weight",
        "export",
        nan_conv_weight,
        *EXPORT,
        expect="tensor 'layers.0.conv2.weight'",
    ),
    case(
        "export-nan-ptq-range",
        "export",
        nan_ptq_range,
        *EXPORT,
        expect="tensor 'layers.3.act1.quantizer.range' () holds 1 NaN/inf",
    ),
    case(
        "export-zero-std-normalization",
        "export",
        zero_std_run,
        *EXPORT,
        expect="normalization std must be 3 finite numbers > 0, got [0.25, 0.0, 0.25]",
    ),
    case(
        "export-nan-mean-normalization",
        "export",
        nan_mean_run,
        *EXPORT,
        expect="normalization mean must be 3 finite numbers",
    ),
    case(
        "export-pooled-sum-exceeds-int32", "export", huge_image_run, *EXPORT, expect="exceeds int32"
    ),
    case(
        "export-out-under-a-file",
        "export",
        q4,
        "--out",
        lambda w, t: under_a_file(w, t) / "model.climbq",
        expect="cannot write",
    ),
    case(
        "export-tflite-int8-head",
        "export",
        q4,
        "--target",
        "tflite",
        "--head",
        "int8",
        "--out",
        tflite_out,
        expect="target 'tflite' has no exact form for a climbq w4a4 run with the int8 head",
    ),
    case(
        "export-tflite-8bit-uniform",
        "export",
        uniform8_run,
        "--target",
        "tflite",
        "--out",
        tflite_out,
        expect="target 'tflite' has no exact form for a uniform w8a8 run",
    ),
    case(
        "export-tensorrt-8bit-uniform",
        "export",
        uniform8_run,
        "--target",
        "tensorrt",
        "--out",
        onnx_out,
        expect="target 'tensorrt' has no exact form for a uniform w8a8 run",
    ),
    case(
        "export-tflite-7bit-climbq",
        "export",
        climbq7_run,
        "--target",
        "tflite",
        "--out",
        tflite_out,
        expect="target 'tflite' has no exact form for a climbq w7a7 run",
    ),
    # climbq check
    case("check-tflite-file-as-run", "check", tflite_model, expect="is not a training run"),
    case(
        "check-tflite-as-climbq-artifact",
        "check",
        q4_copy,
        "--artifact",
        tflite_as_climbq,
        expect="is not a climbq artifact",
    ),
    case(
        "check-climbq-as-tflite-artifact",
        "check",
        q4_copy,
        "--target",
        "tflite",
        "--artifact",
        climbq_model,
        expect="not a readable .tflite",
    ),
    case(
        "check-kernels-on-numpy",
        "check",
        q4_copy,
        "--kernels",
        "ref",
        expect="--kernels applies to --target tflite",
    ),
    case(
        "check-runtime-on-tflite",
        "check",
        q4_copy,
        "--target",
        "tflite",
        "--runtime",
        "tensorrt",
        expect="--runtime applies to --target tensorrt",
    ),
    case(
        "check-newer-schema-artifact",
        "check",
        q4_copy,
        "--artifact",
        schema2_artifact,
        expect="schema_version 2",
    ),
    case(
        "check-hash-mismatch-artifact",
        "check",
        q4_copy,
        "--artifact",
        hash_mismatch_artifact,
        expect="fails its sha256 check",
    ),
    case(
        "check-truncated-artifact",
        "check",
        q4_copy,
        "--artifact",
        truncated_artifact,
        expect="truncated or corrupt zip",
    ),
    case(
        "check-data-with-other-classes",
        "check",
        q4_copy,
        "--data",
        three_classes,
        expect="with 3 classes",
    ),
    *(
        case(
            f"check-{kind}-artifact-of-other-image-size",
            "check",
            q4_copy,
            "--target",
            target,
            "--artifact",
            model,
            "--data",
            small_images,
            expect=f"{world_path(model)} expects 16x16x3",
        )
        for kind, target, model in (
            ("climbq", "numpy", climbq_model),
            ("tflite", "tflite", tflite_model),
            ("onnx", "tensorrt", onnx_model),
        )
    ),
    case(
        "check-tflite-8bit-uniform",
        "check",
        uniform8_run,
        "--target",
        "tflite",
        expect="target 'tflite' has no exact form for a uniform w8a8 run with the float head",
    ),
    # climbq bench
    case("bench-missing-model", "bench", missing, *FAST_BENCH, expect="no artifact at"),
    *(
        case(
            f"bench-{model.__name__}-batch-beyond-memory",
            "bench",
            model,
            "--batch",
            "1000000000",
            *FAST_BENCH,
            expect="--batch 1000000000 needs about",
        )
        for model in (climbq_model, onnx_model)
    ),
    *(
        case(
            f"bench-{model.__name__}-threads-beyond-cores",
            "bench",
            model,
            "--threads",
            "100000",
            *FAST_BENCH,
            expect="--threads 100000 is more than",
        )
        for model in (climbq_model, tflite_model, onnx_model)
    ),
    case(
        "bench-png-as-model", "bench", png_file, *FAST_BENCH, expect="unknown artifact kind '.png'"
    ),
    case("bench-run-folder-as-model", "bench", q4, *FAST_BENCH, expect="is a folder"),
    case(
        "bench-truncated-climbq",
        "bench",
        truncated_artifact,
        *FAST_BENCH,
        expect="truncated or corrupt zip",
    ),
    case(
        "bench-image-zip-as-climbq",
        "bench",
        image_zip_as_artifact,
        *FAST_BENCH,
        expect="no manifest.json",
    ),
    case("bench-truncated-tflite", "bench", truncated_tflite, *FAST_BENCH, expect="cut.tflite"),
    case("bench-png-as-tflite", "bench", png_as_tflite, *FAST_BENCH, expect="picture.tflite"),
    case(
        "bench-truncated-onnx",
        "bench",
        truncated_onnx,
        *FAST_BENCH,
        expect="cut.onnx: not a readable ONNX model",
    ),
    case(
        "bench-onnx-on-tensorrt-here",
        "bench",
        onnx_model,
        "--runtime",
        "tensorrt",
        *FAST_BENCH,
        expect="cannot run here",
        code=3,
    ),
    case("bench-newer-schema", "bench", schema2_artifact, *FAST_BENCH, expect="schema_version 2"),
    case(
        "bench-hash-mismatch",
        "bench",
        hash_mismatch_artifact,
        *FAST_BENCH,
        expect="fails its sha256 check",
    ),
    case(
        "bench-data-of-other-shape",
        "bench",
        climbq_model,
        "--data",
        small_images,
        *FAST_BENCH,
        expect="test images are 8x8x3 but",
    ),
    case(
        "bench-tflite-data-of-other-shape",
        "bench",
        tflite_model,
        "--data",
        small_images,
        *FAST_BENCH,
        expect="model.tflite expects 16x16x3",
    ),
    case(
        "bench-data-nan-images",
        "bench",
        climbq_model,
        "--data",
        nan_images,
        *FAST_BENCH,
        expect="train images must be uint8",
    ),
    case(
        "bench-data-out-of-range-pixels",
        "bench",
        climbq_model,
        "--data",
        wide_images,
        *FAST_BENCH,
        expect="test images must be uint8",
    ),
    case(
        "bench-kernels-on-climbq",
        "bench",
        climbq_model,
        "--kernels",
        "ref",
        *FAST_BENCH,
        expect="--kernels applies to .tflite",
    ),
    case(
        "bench-runtime-on-tflite",
        "bench",
        tflite_model,
        "--runtime",
        "onnxruntime",
        *FAST_BENCH,
        expect="--runtime applies to .onnx",
    ),
    case(
        "bench-data-without-test-images",
        "bench",
        climbq_model,
        "--data",
        no_test_images,
        *FAST_BENCH,
        expect="test split holds no images",
    ),
    # climbq report, demo
    case("report-missing-run", "report", missing, "--out", out_dir, expect="does not exist"),
    case(
        "report-png-as-run",
        "report",
        png_file,
        "--out",
        out_dir,
        expect="picture.png is a file, not a run folder",
    ),
    case(
        "report-corrupt-metrics", "report", corrupt_metrics, "--out", out_dir, expect="metrics.json"
    ),
    case(
        "report-out-is-a-file",
        "report",
        q4,
        "--out",
        png_out,
        expect="out.png exists and is not a folder",
    ),
    case(
        "demo-out-is-a-file",
        "demo",
        "--quick",
        "--out",
        png_out,
        expect="out.png exists and is not a folder",
    ),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a bad option value
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error(
    bad: Case, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(bad.make(world, tmp_path), capsys)
    assert code == bad.code, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert "climbq: error: " in err or " error: argument " in err, err
    assert bad.expect in err, err


def test_case_ids_are_distinct_and_many() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40


def test_malicious_pickles_never_run_their_payload(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Mkdir(control)))  # the payload is live under plain pickle
    assert control.is_dir()
    source = str(malicious_cifar_batches(world, tmp_path))
    code, err = _run(
        ["data", "cifar10", "--source", source, "--gamma", "10", "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "is not allowed" in err and not (tmp_path / "pwned").exists()
    for legacy in (False, True):
        run = _malicious_checkpoint(world, tmp_path / f"run{legacy}", legacy=legacy)
        for argv in (
            ["export", str(run)],
            ["check", str(run)],
            [
                "train",
                "--data",
                str(world.data),
                "--init",
                str(run),
                "--method",
                "climbq",
                "--wbits",
                "4",
                "--abits",
                "4",
                "--out",
                str(tmp_path / "o"),
            ],
        ):
            code, err = _run(argv, capsys)
            assert code == 2 and "unsafe" in err, err
            assert not (run / "pwned").exists()


def test_debug_shows_the_traceback(world: World, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="fails its sha256 check"):
        main(["--debug", "bench", str(hash_mismatch_artifact(world, tmp_path)), *FAST_BENCH])
    result = subprocess.run(
        [sys.executable, "-m", "climbq_deploy", "--debug", "export", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ArtifactError" in result.stderr


ENTRY_POINT = Path(sys.executable).parent / "climbq"
END_TO_END = [
    "bench-hash-mismatch",
    "export-malicious-pickle",
    "folder-zip-symlink-member",
    "check-tflite-file-as-run",
]


@pytest.mark.parametrize("case_id", END_TO_END)
def test_real_process_exit_code_and_stderr(case_id: str, world: World, tmp_path: Path) -> None:
    bad = next(c for c in CASES if c.id == case_id)
    command = (
        [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "climbq_deploy"]
    )
    result = subprocess.run(
        [*command, *bad.make(world, tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == bad.code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("climbq: error: ") and bad.expect in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
