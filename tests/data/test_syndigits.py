import numpy as np
import pytest
from PIL import Image, ImageDraw

from climbq_deploy.data import syndigits
from climbq_deploy.data.syndigits import (
    EXCLUDED_FONTS,
    MIN_CONTRAST,
    available_fonts,
    build_syndigits,
    render_digit,
)
from climbq_deploy.errors import ConfigError


def test_at_least_twenty_fonts_none_excluded() -> None:
    fonts = available_fonts()
    names = {f.stem for f in fonts}
    assert len(fonts) >= 20
    for bad in ("cmsy10", "cmex10", "LastResortHE-Regular", "DejaVuSansDisplay"):
        assert bad not in names
    assert not [n for n in names if n.startswith(("STIXNonUni", "STIXSiz"))]
    assert "LastResort*" in EXCLUDED_FONTS


def test_every_font_draws_ten_distinct_digits() -> None:
    for font_path in available_fonts():
        font = syndigits._font(str(font_path), 40)
        glyphs = []
        for digit in "0123456789":
            image = Image.new("L", (64, 64))
            ImageDraw.Draw(image).text((32, 32), digit, font=font, fill=255, anchor="mm")
            pixels = np.asarray(image)
            assert pixels.sum() > 0, f"{font_path.name} draws nothing for {digit}"
            glyphs.append(pixels.tobytes())
        assert len(set(glyphs)) == 10, f"{font_path.name} draws identical digits"


def test_small_set_counts_shapes_and_dtypes(small_syndigits) -> None:
    ds = small_syndigits
    assert ds.counts("train") == [40, 30, 23, 17, 13, 10, 7, 5, 3, 2]
    assert ds.counts("test") == [10] * 10
    assert ds.train_images.shape == (150, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_labels.dtype == np.int64
    assert ds.class_names == tuple("0123456789")


def test_test_draws_never_reuse_a_train_draw(small_syndigits) -> None:
    ex = small_syndigits.extras
    train = set(
        zip(ex["render_font_train"].tolist(), ex["render_seed_train"].tolist(), strict=True)
    )
    test = set(zip(ex["render_font_test"].tolist(), ex["render_seed_test"].tolist(), strict=True))
    assert len(train) == 150 and len(test) == 100
    assert not train & test
    assert len(set(ex["render_font_train"].tolist())) >= 15  # fonts really vary


def test_images_vary_and_are_not_blank(small_syndigits) -> None:
    images = small_syndigits.train_images.astype(np.int16)
    assert len({im.tobytes() for im in images}) == len(images)
    spread = images.reshape(len(images), -1).std(axis=1)
    assert spread.min() > 5


def test_same_seed_same_bytes_other_seed_other_images() -> None:
    a, key_a = render_digit(7, seed=11, split="train", index=5)
    b, key_b = render_digit(7, seed=11, split="train", index=5)
    c, _ = render_digit(7, seed=12, split="train", index=5)
    assert a.tobytes() == b.tobytes() and key_a == key_b
    assert a.tobytes() != c.tobytes()
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_size_option() -> None:
    image, _ = render_digit(3, seed=0, split="test", index=0, size=48)
    assert image.shape == (48, 48, 3)


@pytest.mark.parametrize("seed", range(200))
def test_foreground_contrast_is_guaranteed(seed: int) -> None:
    rng = np.random.default_rng(seed)
    background = syndigits._squeeze_luma(syndigits._background(rng, 64))
    colour = syndigits._contrasting_colour(rng, background)
    luma_bg = background @ np.array([0.299, 0.587, 0.114])
    luma_fg = float(colour @ np.array([0.299, 0.587, 0.114]))
    assert np.all((colour >= -1e-9) & (colour <= 255 + 1e-9))
    assert np.min(np.abs(luma_bg - luma_fg)) >= MIN_CONTRAST - 1e-6


@pytest.mark.parametrize(("kwargs", "match"), [({"size": 4}, "size"), ({"seed": -1}, "seed")])
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_syndigits(50, progress=False, **kwargs)


def test_bad_gamma() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        build_syndigits(0.9, progress=False)
