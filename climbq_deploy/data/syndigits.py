"""SynDigits-LT: the embedded default dataset, rendered here from a seed (no download).

SynDigits (Ganin & Lempitsky 2015) are digits 0-9 rendered from many fonts with random position,
rotation, stroke and background colours, and blur, made to look like street-number crops. The
authors' images are not available, so this module renders its own in the same spirit:

- every font matplotlib ships that draws all ten digits (symbol and display faces excluded), 22
  faces with matplotlib 3.x;
- random glyph size, position, rotation, optional outline stroke, and with probability 1/2
  neighbouring digits at the left/right border like a house-number crop;
- backgrounds with a linear colour gradient and a smooth random texture;
- a foreground colour whose luminance differs from every background pixel's by at least
  ``MIN_CONTRAST`` grey levels (Rec. 601 luma, before blur and noise);
- rendering at 2x and box-downsampling (anti-aliasing), then Gaussian blur and Gaussian noise.

Determinism: image ``i`` of split ``s`` is drawn from its own generator seeded with
``SeedSequence(seed, spawn_key=(s, i))``, so the same seed, generator version and library versions
(numpy, Pillow/FreeType, scipy) give byte-identical arrays, and no test image shares its
(font, draw seed) with a train image. The draw keys are saved beside the images.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from climbq_deploy.data.dataset import ImageDataset
from climbq_deploy.data.longtail import longtail_counts
from climbq_deploy.errors import ConfigError, DataError

GENERATOR_VERSION = "syndigits-1"
NUM_CLASSES = 10
HEAD_COUNT = 1000
TEST_PER_CLASS = 200
MIN_FONTS = 20
MIN_CONTRAST = 50.0
EXCLUDED_FONTS = ("cmsy10", "cmex10", "LastResort*", "*Display*", "STIXNonUni*", "STIXSiz*")
SPLIT_IDS = {"train": 0, "test": 1}
_DIGITS = "0123456789"
_SUPERSAMPLE = 2


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.cache
def available_fonts() -> tuple[Path, ...]:
    """Bundled fonts that map all ten digits, excluding symbol and display faces (sorted)."""
    from fontTools.ttLib import TTFont

    fonts = []
    for path in sorted(font_dir().glob("*.ttf")):
        if any(fnmatch.fnmatch(path.stem, pattern) for pattern in EXCLUDED_FONTS):
            continue
        cmap = TTFont(path, lazy=True).getBestCmap() or {}
        if all(ord(d) in cmap for d in _DIGITS):
            fonts.append(path)
    if len(fonts) < MIN_FONTS:
        raise DataError(
            f"only {len(fonts)} usable fonts in {font_dir()} (need {MIN_FONTS}); "
            "is matplotlib installed completely?"
        )
    return tuple(fonts)


@functools.lru_cache(maxsize=2048)
def _font(path: str, pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, pixels)


@dataclass(frozen=True)
class RenderKey:
    """What one image was drawn from: its font and the 64-bit seed of its generator."""

    font: int
    seed: int


def _render_rng(seed: int, split: str, index: int) -> tuple[np.random.Generator, int]:
    sequence = np.random.SeedSequence(seed, spawn_key=(SPLIT_IDS[split], index))
    draw_seed = int(sequence.generate_state(1, dtype=np.uint64)[0])
    return np.random.default_rng(sequence), draw_seed


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Gradient between two random colours along a random direction, plus a smooth texture.

    Returns float64 RGB in [0, 255], ``side x side x 3``.
    """
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
    ramp = np.clip(xx * np.cos(angle) + yy * np.sin(angle) + 0.5, 0, 1)[..., None]
    image = c0 * (1 - ramp) + c1 * ramp
    grid = int(rng.integers(2, 7))
    coarse = rng.normal(0, rng.uniform(0, 30), size=(3, grid, grid)).astype(np.float32)
    texture = np.stack(
        [
            np.asarray(Image.fromarray(ch, mode="F").resize((side, side), Image.BICUBIC))
            for ch in coarse
        ],
        axis=-1,
    )
    return np.clip(image + texture, 0, 255)


def _squeeze_luma(background: np.ndarray, max_range: float = 100.0) -> np.ndarray:
    """Shrink the background toward its mean colour until its luma spans at most ``max_range``."""
    luma = _luma(background)
    spread = float(luma.max() - luma.min())
    if spread <= max_range:
        return background
    mean = background.mean(axis=(0, 1), keepdims=True)
    return mean + (background - mean) * (max_range / spread)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour whose luma differs from every background pixel's by at least MIN_CONTRAST.

    With the background's luma range squeezed to at most 100 levels, one side (darker or lighter)
    always has room, since (255 - 100) / 2 > MIN_CONTRAST. A random hue is then mixed with black
    (scale) or white (scale toward 255) to hit a target luma on a side with room; luma is linear,
    so the mix hits it exactly.
    """
    luma = _luma(background)
    lo, hi = float(luma.min()), float(luma.max())
    sides = []
    if lo - MIN_CONTRAST >= 0:
        sides.append((0.0, lo - MIN_CONTRAST))
    if hi + MIN_CONTRAST <= 255:
        sides.append((hi + MIN_CONTRAST, 255.0))
    low, high = sides[int(rng.integers(len(sides)))]
    target = rng.uniform(low, high)
    colour = rng.uniform(0, 255, size=3)
    current = float(_luma(colour))
    if current > target:
        return colour * (target / current)
    return 255 - (255 - colour) * ((255 - target) / max(255 - current, 1e-9))


def _glyph_masks(
    rng: np.random.Generator, digit: int, font_path: Path, side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill mask and optional outline mask (float in [0, 1]) of a digit with neighbours."""
    pixels = round(side * rng.uniform(0.55, 0.95))
    font = _font(str(font_path), pixels)
    cx = side / 2 + rng.uniform(-0.12, 0.12) * side
    cy = side / 2 + rng.uniform(-0.10, 0.10) * side
    stroke = int(rng.integers(1, 4)) * _SUPERSAMPLE // 2 if rng.random() < 0.35 else 0
    # House-number crops: neighbouring digits cut by the left/right border.
    placements = [(cx, digit)]
    advance = font.getlength(_DIGITS[digit]) + rng.uniform(0.02, 0.15) * pixels
    if rng.random() < 0.5:
        placements.append((cx - advance, int(rng.integers(10))))
    if rng.random() < 0.5:
        placements.append((cx + advance, int(rng.integers(10))))
    fill = Image.new("L", (side, side))
    outline = Image.new("L", (side, side)) if stroke else None
    draw_fill = ImageDraw.Draw(fill)
    draw_outline = ImageDraw.Draw(outline) if outline is not None else None
    for x, d in placements:
        if draw_outline is not None:
            draw_outline.text(
                (x, cy), _DIGITS[d], font=font, fill=255, anchor="mm", stroke_width=stroke
            )
        draw_fill.text((x, cy), _DIGITS[d], font=font, fill=255, anchor="mm")
    angle = rng.uniform(-15, 15)
    center = (cx, cy)
    fill = fill.rotate(angle, resample=Image.BILINEAR, center=center)
    fill_mask = np.asarray(fill, dtype=np.float64) / 255.0
    if outline is None:
        return fill_mask, None
    outline = outline.rotate(angle, resample=Image.BILINEAR, center=center)
    return fill_mask, np.asarray(outline, dtype=np.float64) / 255.0


def render_digit(
    digit: int, seed: int, split: str, index: int, size: int = 32
) -> tuple[np.ndarray, RenderKey]:
    """Render one SynDigits-style image (uint8 ``size x size x 3``) and its render key."""
    fonts = available_fonts()
    rng, draw_seed = _render_rng(seed, split, index)
    font_index = int(rng.integers(len(fonts)))
    side = size * _SUPERSAMPLE
    background = _squeeze_luma(_background(rng, side))
    foreground = _contrasting_colour(rng, background)
    fill_mask, outline_mask = _glyph_masks(rng, digit, fonts[font_index], side)
    image = background
    if outline_mask is not None:
        image = (
            image * (1 - outline_mask[..., None]) + rng.uniform(0, 255, 3) * outline_mask[..., None]
        )
    image = image * (1 - fill_mask[..., None]) + foreground * fill_mask[..., None]
    image = image.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    if rng.random() < 0.7:
        image = gaussian_filter(image, sigma=(rng.uniform(0.2, 1.0),) * 2 + (0,), mode="nearest")
    image = image + rng.normal(0, rng.uniform(0, 8), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), RenderKey(font_index, draw_seed)


def render_split(
    counts: Sequence[int], seed: int, split: str, size: int = 32, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render ``counts[k]`` images of digit ``k`` for one split.

    Returns ``(images uint8 N x size x size x 3, labels int64, font ids int16, draw seeds uint64)``,
    ordered by class.
    """
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    fonts = np.empty(len(labels), dtype=np.int16)
    seeds = np.empty(len(labels), dtype=np.uint64)
    for i in tqdm(
        range(len(labels)), desc=f"render {split}", unit="img", disable=not progress or None
    ):
        images[i], key = render_digit(int(labels[i]), seed, split, i, size)
        fonts[i], seeds[i] = key.font, key.seed
    return images, labels, fonts, seeds


def build_syndigits(
    gamma: float,
    seed: int = 0,
    size: int = 32,
    test_per_class: int = TEST_PER_CLASS,
    head_count: int = HEAD_COUNT,
    progress: bool = True,
) -> ImageDataset:
    """Generate SynDigits-LT: long-tailed train counts (§6, head = digit 0), balanced test."""
    if not isinstance(size, int) or not 8 <= size <= 256:
        raise ConfigError(f"--size must be an integer in 8..256, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")
    if test_per_class < 1:
        raise ConfigError(f"test images per class must be >= 1, got {test_per_class}")
    counts = longtail_counts(head_count, gamma, NUM_CLASSES)
    fonts = available_fonts()
    train = render_split(counts, seed, "train", size, progress)
    test = render_split([test_per_class] * NUM_CLASSES, seed, "test", size, progress)
    import matplotlib
    import PIL
    import scipy

    info = {
        "source": "generated",
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "gamma": gamma,
        "size": size,
        "fonts": [f.name for f in fonts],
        "library_versions": {
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "freetype": ImageFont.core.freetype2_version,
            "scipy": scipy.__version__,
            "matplotlib": matplotlib.__version__,
        },
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "augment": "none",
    }
    return ImageDataset(
        name="syndigits-lt",
        class_names=tuple(_DIGITS),
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        info=info,
        extras={
            "render_font_train": train[2],
            "render_seed_train": train[3],
            "render_font_test": test[2],
            "render_seed_test": test[3],
        },
    )


__all__ = [
    "GENERATOR_VERSION",
    "available_fonts",
    "build_syndigits",
    "render_digit",
    "render_split",
]
