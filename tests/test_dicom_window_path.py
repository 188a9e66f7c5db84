"""The window fast path (data_processing.window_path) against the reference paths, and on its own."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_helpers import make_dicom, ramp
from hypothesis import given, settings
from hypothesis import strategies as st

from data_processing import render as render_module
from data_processing.reader import StoredPixels
from data_processing.render import RenderOptions, render_dicom
from data_processing.window_path import LinearMap, integer_window, linear_from_affine

_rng = np.random.default_rng(11)
_noise12 = np.clip(ramp(90, 70, 0, 4095).astype(int) + _rng.integers(-300, 300, (90, 70)), 0, 4095)
_padded12 = np.where(np.arange(90)[:, None] < 9, 0, _noise12)
# name: (pixels, make_dicom keywords)
CASES = {
    "12-bit integer edges": (_noise12.astype(np.uint16), dict(bits_stored=12, window=(2048, 2001))),
    "12-bit half-integer edges, MONOCHROME1": (
        _noise12.astype(np.uint16),
        dict(bits_stored=12, window=(1500, 1201), photometric="MONOCHROME1"),
    ),
    "LINEAR_EXACT, slope 0.7, padding value": (
        _padded12.astype(np.uint16),
        dict(
            bits_stored=12, window=(1400.3, 900.6), voi_function="LINEAR_EXACT", rescale=(0.7, 5.0), padding=0
        ),
    ),
    "signed, rescale, padding range, INVERSE": (
        (_padded12 - 2048).astype(np.int16),
        dict(
            bits_stored=12,
            window=(100.5, 1500),
            rescale=(2.0, -10.0),
            padding=(-2048, -2040),
            presentation_lut_shape="INVERSE",
        ),
    ),
    "8-bit": (ramp(90, 70, 0, 255).astype(np.uint8), dict(window=(120, 81))),
    "16-bit full range": (ramp(90, 70, 0, 65535), dict(window=(30000, 40000))),
    # windows that contain every value: the stored values are summed as they are (8/16 bits stored)
    "8-bit, window contains every value": (ramp(90, 70, 0, 255).astype(np.uint8), dict(window=(128, 256))),
    "16-bit, window contains every value": (ramp(90, 70, 0, 60000), dict(window=(32768, 65536))),
    "percentile window, padding": (_padded12.astype(np.uint16), dict(bits_stored=12, padding=0)),
}
SETTINGS = [(None, "pad"), (32, "pad"), (16, "center"), (8, "pad")]


def _render_all(path: str) -> list:
    return [render_dicom(path, RenderOptions(resolution=r, crop=c)) for r, c in SETTINGS]  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_the_lookup_table_path(case, tmp_path, monkeypatch) -> None:
    """The clip-then-resize fast path gives what pydicom's functions give through the general LUT path."""
    x, kw = CASES[case]
    path = make_dicom(tmp_path / "w.dcm", x, **kw)
    plans: list = []
    real = render_module._linear_map
    monkeypatch.setattr(render_module, "_linear_map", lambda *a: plans.append(real(*a)) or plans[-1])
    fast = _render_all(path)
    assert plans and all(p is not None for p in plans), "the fast path was not taken"
    monkeypatch.setattr(render_module, "_linear_map", lambda *a: None)
    reference = _render_all(path)
    for (resolution, crop), a, b in zip(SETTINGS, fast, reference):
        assert np.abs(a.display - b.display).max() < 2e-5, (case, resolution, crop)
        assert a.metadata == b.metadata


@pytest.mark.parametrize("case", list(CASES))
def test_integer_box_stage_equals_the_float_box_stage(case, tmp_path, monkeypatch) -> None:
    x, kw = CASES[case]
    path = make_dicom(tmp_path / "w.dcm", x, **kw)
    fast = _render_all(path)
    monkeypatch.setattr(render_module, "_integer_window", lambda *a: None)
    floats = _render_all(path)
    for (resolution, crop), a, b in zip(SETTINGS, fast, floats):
        assert np.abs(a.display - b.display).max() < 2e-5, (case, resolution, crop)
        assert a.metadata["padding_fraction"] == b.metadata["padding_fraction"]


def _reference_block_means(x: np.ndarray, linear: LinearMap, pad, k: int, origin: float) -> np.ndarray:
    """float64 block means of clip(x, lo, hi) - origin, padding pixels at the black edge."""
    values = np.clip(x.astype(np.float64), linear.lo, linear.hi)
    if pad is not None:
        values[(x >= pad[0]) & (x <= pad[1])] = linear.black
    h, w = x.shape
    ho, wo = -(-h // k), -(-w // k)
    out = np.empty((ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[i, j] = values[i * k : (i + 1) * k, j * k : (j + 1) * k].mean()
    return out - origin


@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    signed=st.booleans(),
    bits=st.sampled_from([8, 12, 16]),
    shape=st.tuples(st.integers(1, 23), st.integers(1, 23)),
    k=st.integers(1, 6),
    edges=st.tuples(st.floats(-0.1, 1.0), st.floats(0.0, 1.2), st.sampled_from([0.0, 0.5, 0.25, 0.7])),
    invert=st.booleans(),
    padded=st.booleans(),
)
def test_integer_block_means_are_exact(data, signed, bits, shape, k, edges, invert, padded) -> None:
    """IntegerWindow.block_means on random images, windows and box factors equals a float64 reference."""
    low_v, high_v = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = np.int16 if signed and bits > 8 else np.int8 if signed else np.uint8 if bits == 8 else np.uint16
    x = np.asarray(
        data.draw(
            st.lists(st.integers(low_v, high_v), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])
        ),
        dtype=dtype,
    ).reshape(shape)
    start, span, frac = edges  # window start and width as fractions of the value range, edge fraction
    lo = low_v + round(start * (high_v - low_v)) + frac
    a = 1.0 / max(1, round(span * (high_v - low_v)))
    linear = linear_from_affine(a, -lo * a, invert)
    assert linear is not None
    pad = (int(x.flat[0]), int(x.flat[0]) + data.draw(st.integers(0, 3))) if padded else None
    stored = StoredPixels(array=x, bits_stored=bits, signed=signed, needs_bit_fix=False)
    window = integer_window(linear, stored, pad)
    if window is None or not window.fits(k):
        return  # the float path's business (tested above)
    means, padding = window.block_means(x, k)
    expected = _reference_block_means(x, linear, pad, k, window.origin)
    assert means.dtype == np.float32 and means.shape == expected.shape
    assert np.allclose(means, expected, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(expected).max())))
    assert padding == (0 if pad is None else int(np.count_nonzero((x >= pad[0]) & (x <= pad[1]))))


@pytest.mark.parametrize(
    "a, b",
    [
        (0.0, 0.5),
        (1e-300 / 1e10, 0.5),
        (1e300, -1e300),
        (float("nan"), 0.0),
        (1.0, float("inf")),
        (1e-45, 0.0),
    ],
)
def test_linear_maps_float32_cannot_carry_are_left_to_the_lookup_table_path(a: float, b: float) -> None:
    assert linear_from_affine(a, b, False) is None
    assert linear_from_affine(a, b, True) is None
