"""Contact sheets: one row per class (head at the top), for a person to look at a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.fileio import atomic_write


def contact_sheet(
    dataset: ImageDataset, split: str = "train", per_class: int = 16, scale: int = 2
) -> np.ndarray:
    """An RGB uint8 grid: row ``k`` shows the first ``per_class`` images of class ``k``.

    A class with fewer images leaves grey cells; the left margin names the class and its count.
    """
    images, labels = dataset.split(split)
    h, w, _ = dataset.image_shape
    cell_h, cell_w, pad, margin = h * scale, w * scale, 2, 90
    rows = dataset.num_classes
    sheet = np.full(
        (rows * (cell_h + pad) + pad, margin + per_class * (cell_w + pad) + pad, 3), 128, np.uint8
    )
    for k in range(rows):
        members = np.flatnonzero(labels == k)[:per_class]
        top = pad + k * (cell_h + pad)
        for col, index in enumerate(members):
            left = margin + pad + col * (cell_w + pad)
            big = images[index].repeat(scale, axis=0).repeat(scale, axis=1)
            sheet[top : top + cell_h, left : left + cell_w] = big
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    counts = dataset.counts(split)
    for k, name in enumerate(dataset.class_names):
        top = pad + k * (cell_h + pad)
        draw.text((4, top + cell_h // 2 - 10), f"{k}: {name[:10]}", fill=(255, 255, 255))
        draw.text((4, top + cell_h // 2 + 2), f"n={counts[k]}", fill=(255, 255, 0))
    return np.asarray(canvas)


def write_contact_sheet(dataset: ImageDataset, path: str | Path, split: str = "train") -> Path:
    """Write :func:`contact_sheet` as a PNG (atomically) and return its path."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        Image.fromarray(contact_sheet(dataset, split)).save(handle, format="PNG")
    return path
