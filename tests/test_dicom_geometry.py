"""Geometry: aspect-preserving anti-aliased resize, padding with black, centre crop."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_helpers import make_dicom, ramp

from data_processing.geometry import box_sums, fit_image, fitted_size, reduce_box
from data_processing.render import RenderOptions, render_dicom


def test_reduce_box_is_the_exact_block_mean_including_partial_edge_blocks() -> None:
    rng = np.random.default_rng(0)
    src = rng.random((10, 7)).astype(np.float32)
    out = reduce_box(src, 3)
    assert out.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            block = src[3 * i : 3 * i + 3, 3 * j : 3 * j + 3]
            assert out[i, j] == pytest.approx(block.mean(), abs=1e-6)


def test_reduce_box_strips_cover_large_images() -> None:
    src = np.arange(1000 * 600, dtype=np.uint16).reshape(1000, 600) % 4096
    out = reduce_box(src, 4)  # many strips, integer input converted per strip
    expected = src.astype(np.float64).reshape(250, 4, 150, 4).mean(axis=(1, 3))
    assert np.abs(out - expected).max() < 1e-2


def test_portrait_film_is_padded_not_cropped() -> None:
    src = np.ones((400, 100), np.float32)  # a tall spine film
    out = fit_image(src, 64, "pad")
    assert fitted_size(400, 100, 64, "pad") == (64, 16)
    assert out.shape == (64, 64)
    assert np.all(out[:, :24] == 0) and np.all(out[:, 40:] == 0)  # black bars left and right
    assert np.allclose(out[:, 24:40], 1.0, atol=1e-6)  # the whole film height is kept


def test_center_crop_keeps_the_central_square() -> None:
    src = np.zeros((300, 100), np.float32)
    src[100:200] = 1.0  # the central 100 x 100 square
    out = fit_image(src, 32, "center")
    assert out.shape == (32, 32)
    assert np.allclose(out, 1.0, atol=1e-6)


def test_downsampling_is_anti_aliased() -> None:
    stripes = np.zeros((512, 512), np.float32)
    stripes[:, ::2] = 1.0  # the highest frequency there is
    out = fit_image(stripes, 64, "pad")
    assert np.abs(out - 0.5).max() < 0.02  # a nearest-neighbour resize would give all 0 or all 1
    nearest = stripes[::8, ::8]
    assert nearest.min() == nearest.max() == 1.0


def test_affine_maps_commute_with_the_resize() -> None:
    rng = np.random.default_rng(3)
    src = rng.random((333, 250)).astype(np.float32)
    a = fit_image(src * 3.0 - 1.0, 64, "pad", pad_value=0.0)
    b = fit_image(src, 64, "pad", post=lambda y: y * 3.0 - 1.0)
    inside = np.s_[:, 8:56]  # the content area (333 x 250 -> 64 x 48)
    assert np.abs(a[inside] - b[inside]).max() < 1e-5


def test_monochrome1_film_padding_is_black_after_inversion(tmp_path) -> None:
    x = ramp(64, 16, 0, 4095)
    path = make_dicom(tmp_path / "m1.dcm", x, bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1")
    image = render_dicom(path, RenderOptions(resolution=32)).image
    assert np.all(image[:, :12] == 0) and np.all(image[:, 20:] == 0)
    assert image[:, 12:20].max() > 200  # low stored values are white in MONOCHROME1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_box_sums_of_full_range_pixels_do_not_wrap(dtype, k) -> None:
    """Sums of raw uint8/uint16 pixels accumulate in the wider dtype (they once wrapped in the pixels' own)."""
    top = np.iinfo(dtype).max
    src = np.full((2 * k + 1, 3 * k + 2), top, dtype)
    src[::2, ::3] = 0
    sums = box_sums(src, k)
    expected = np.add.reduceat(
        np.add.reduceat(src.astype(np.int64), np.arange(0, src.shape[0], k), axis=0),
        np.arange(0, src.shape[1], k),
        axis=1,
    )
    assert np.array_equal(sums.astype(np.int64), expected)
