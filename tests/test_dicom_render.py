"""render_dicom on real files (vs highdicom / pydicom's own LUT functions) and on DICOMs we write ourselves."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from dicom_helpers import cspine_cr, dicom_file, make_dicom, ramp
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from data_processing.geometry import fit_image
from data_processing.render import RenderOptions, render_dicom

NATIVE = RenderOptions(resolution=None)
LSB = 1.0 / 255.0


def highdicom_frame(path: str) -> np.ndarray:
    """Independent reference: highdicom's full presentation pipeline, float64 [H, W] in [0, 1]."""
    hd = pytest.importorskip("highdicom", reason="highdicom (a test dependency) renders the reference frames")
    return hd.imread(path).get_frame(1, apply_voi_transform=None)


def resized_reference(reference: np.ndarray, resolution: int, crop: str = "pad") -> np.ndarray:
    """The reference image through the same geometry as render_dicom (float32, clipped to [0, 1])."""
    return np.clip(fit_image(reference.astype(np.float32), resolution, crop), 0.0, 1.0)  # type: ignore[arg-type]


def linear_window(m: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, normalised to [0, 1], written out independently."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(
        m <= center - 0.5 - (width - 1) / 2,
        0.0,
        np.where(m > center - 0.5 + (width - 1) / 2, 1.0, (m - (center - 0.5)) / (width - 1) + 0.5),
    )


# --------------------------------------------------------------------------------------------------
# Real files


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cspine_cr_monochrome1_matches_highdicom(n: int) -> None:
    path = cspine_cr(n)
    reference = highdicom_frame(path)
    native = render_dicom(path, NATIVE)
    assert native.metadata["photometric"] == "MONOCHROME1"
    assert native.metadata["inverted"] is True
    assert native.metadata["source_window"] == "C=1600 W=2800"
    assert native.display.shape == reference.shape
    assert np.abs(native.display - reference).max() < 1e-3
    resized = render_dicom(path, RenderOptions(resolution=64))
    assert np.abs(resized.display - resized_reference(reference, 64)).max() <= LSB


def test_mr_small_all_encodings_identical_and_match_highdicom() -> None:
    options = RenderOptions(resolution=32)
    base = render_dicom(dicom_file("MR_small.dcm"), options)
    decoders = set()
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        other = render_dicom(dicom_file(name), options)
        decoders.add(other.metadata["decoder"])
        assert np.array_equal(other.image, base.image), name
    assert "pylibjpeg" in decoders
    reference = highdicom_frame(dicom_file("MR_small.dcm"))
    assert np.abs(render_dicom(dicom_file("MR_small.dcm"), NATIVE).display - reference).max() < 1e-6
    assert np.abs(base.display - resized_reference(reference, 32)).max() <= LSB


def test_ct_small_rescale_and_percentile_fallback_match_pydicom() -> None:
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    modality = apply_modality_lut(ds.pixel_array, ds)  # pydicom's own Modality LUT
    keep = ds.pixel_array != int(ds.PixelPaddingValue)
    lo, hi = np.percentile(modality[keep], [0.5, 99.5], method="inverted_cdf")
    expected = np.clip((modality - lo) / (hi - lo), 0.0, 1.0)
    expected[~keep] = 0.0
    result = render_dicom(path, NATIVE)
    assert result.metadata["window_source"] == "percentile"
    assert "no VOI LUT or window" in result.metadata["fallback"]
    assert result.metadata["source_window"] == f"percentile 0.5-99.5: {lo:g}..{hi:g}"
    assert result.metadata["modality_lut"] == "rescale slope=1 intercept=-1024"
    assert np.abs(result.display - expected).max() < 1e-5


def test_ct_padding_is_black_and_the_rest_matches_highdicom() -> None:
    path = dicom_file("693_UNCR.dcm")
    ds = pydicom.dcmread(path)
    padding = ds.pixel_array == int(ds.PixelPaddingValue)
    assert padding.mean() > 0.1  # the real file has a large padded region
    result = render_dicom(path, NATIVE)
    reference = highdicom_frame(path)
    assert np.all(result.display[padding] == 0.0)
    assert np.abs(result.display[~padding] - reference[~padding]).max() < 1e-5
    assert result.metadata["padding"] == "value -2000"
    assert result.metadata["padding_fraction"] == pytest.approx(padding.mean())


def test_voi_lut_sequence_file_matches_highdicom() -> None:
    path = dicom_file("vlut_04.dcm")
    result = render_dicom(path, NATIVE)
    assert result.metadata["window_source"] == "voi-lut-sequence"
    assert np.abs(result.display - highdicom_frame(path)).max() < 1e-6


@pytest.fixture(scope="module")
def radiographs() -> dict[str, dict]:
    """RG1 (chest) and RG3 (tibia): full-size MONOCHROME1 CR films, each decoded once per module."""
    options = RenderOptions(resolution=256)
    out = {}
    for name in ("RG1", "RG3"):
        uncompressed = dicom_file(f"{name}_UNCR.dcm")
        out[name] = {
            "uncompressed": render_dicom(uncompressed, options),
            "j2k": render_dicom(dicom_file(f"{name}_J2KR.dcm"), options),
            "reference": resized_reference(highdicom_frame(uncompressed), 256),
        }
    return out


@pytest.mark.parametrize("name", ["RG1", "RG3"])
def test_real_radiograph_matches_highdicom_after_same_resize(radiographs: dict, name: str) -> None:
    r = radiographs[name]
    result = r["uncompressed"]
    assert result.image.shape == (256, 256) and result.image.dtype == np.uint8
    assert result.metadata["inverted"] is True and result.metadata["fallback"] == ""
    assert np.abs(result.display - r["reference"]).max() <= LSB
    assert np.abs(result.image.astype(int) - np.rint(r["reference"] * 255).astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["RG1", "RG3"])
def test_jpeg2000_lossless_and_uncompressed_give_identical_output(radiographs: dict, name: str) -> None:
    r = radiographs[name]
    assert r["j2k"].metadata["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(r["j2k"].image, r["uncompressed"].image)
    assert np.array_equal(r["j2k"].display, r["uncompressed"].display)


def test_monochrome1_tibia_has_bone_white_and_air_black(radiographs: dict) -> None:
    display = radiographs["RG3"]["uncompressed"].display  # AP tibia, MONOCHROME1 (1760 x 1760)
    band = display[64:192]  # the shaft, away from the knee and ankle
    bone = band[:, 120:136].mean()  # tibia
    air = band[:, 72:96].mean()  # exposed air between the leg and the collimator
    assert bone > 0.5 and air < 0.15, (bone, air)
    # the same film read as MONOCHROME2 would be its negative: exactly one inversion happened
    assert radiographs["RG3"]["uncompressed"].metadata["inversion_reason"] == "MONOCHROME1"


# --------------------------------------------------------------------------------------------------
# DICOMs written here for what no bundled file covers


def test_linear_window_12_bit_exact_values(tmp_path) -> None:
    x = ramp(64, 64, 0, 4095)
    path = make_dicom(tmp_path / "w.dcm", x, bits_stored=12, window=(2048, 1024))
    result = render_dicom(path, NATIVE)
    assert np.abs(result.display - linear_window(x, 2048, 1024)).max() < 1e-6
    assert result.metadata["voi_function"] == "LINEAR" and result.metadata["inverted"] is False


def test_signed_16_bit_with_rescale_and_window(tmp_path) -> None:
    x = ramp(50, 60, -30000, 30000, np.int16)
    path = make_dicom(tmp_path / "s.dcm", x, window=(500, 2000), rescale=(2.0, -100.0))
    result = render_dicom(path, NATIVE)
    expected = linear_window(2.0 * x.astype(np.float64) - 100.0, 500, 2000)
    assert np.abs(result.display - expected).max() < 1e-6
    # and pydicom's own LUT functions agree (normalised by their output range)
    ds = pydicom.dcmread(path)
    y = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    y_min, y_max = -32768 * 2.0 - 100, 32767 * 2.0 - 100
    assert np.abs(result.display - (y - y_min) / (y_max - y_min)).max() < 1e-6
    assert result.image.min() == 0 and result.image.max() == 255


def test_linear_exact_and_sigmoid_functions(tmp_path) -> None:
    x = ramp(40, 40, 0, 1000)
    exact = render_dicom(
        make_dicom(tmp_path / "e.dcm", x, window=(400, 300), voi_function="LINEAR_EXACT"), NATIVE
    )
    assert np.abs(exact.display - np.clip((x - 400.0) / 300.0 + 0.5, 0, 1)).max() < 1e-6
    sigmoid = render_dicom(
        make_dicom(tmp_path / "g.dcm", x, window=(400, 300), voi_function="SIGMOID"), NATIVE
    )
    assert np.abs(sigmoid.display - 1.0 / (1.0 + np.exp(-4.0 * (x - 400.0) / 300.0))).max() < 1e-6


def test_voi_lut_sequence_is_preferred_over_window(tmp_path) -> None:
    x = ramp(32, 48, 0, 4095)
    data = np.round(255 * (np.linspace(0, 1, 256) ** 2)).astype(int)
    path = make_dicom(tmp_path / "v.dcm", x, bits_stored=12, window=(100, 10), voi_lut=(1000, 8, data))
    result = render_dicom(path, NATIVE)
    expected = data[np.clip(x.astype(int) - 1000, 0, 255)] / 255.0
    assert result.metadata["window_source"] == "voi-lut-sequence"
    assert np.abs(result.display - expected).max() < 1e-6


def test_fast_window_path_equals_lookup_table_path_after_resize(tmp_path) -> None:
    """The fused clip-then-resize fast path gives what a full-resolution LUT gives."""
    rng = np.random.default_rng(0)
    x = np.clip(ramp(300, 200, 0, 4095).astype(int) + rng.integers(-300, 300, (300, 200)), 0, 4095).astype(
        np.uint16
    )
    center, width = 1500.0, 1201.0  # half-integer window edges
    lut = np.round(65535 * linear_window(np.arange(4096), center, width)).astype(int)
    fast = make_dicom(tmp_path / "fast.dcm", x, bits_stored=12, window=(center, width))
    table = make_dicom(tmp_path / "lut.dcm", x, bits_stored=12, voi_lut=(0, 16, lut))
    for crop in ("pad", "center"):
        options = RenderOptions(resolution=64, crop=crop)
        a, b = render_dicom(fast, options), render_dicom(table, options)
        assert a.metadata["window_source"] == "window" and b.metadata["window_source"] == "voi-lut-sequence"
        assert np.abs(a.display - b.display).max() < 2e-5


def test_presentation_lut_inverse_inverts_exactly_once(tmp_path) -> None:
    x = ramp(16, 16, 0, 4095)
    kw = dict(bits_stored=12, window=(2048, 4096))
    plain = render_dicom(make_dicom(tmp_path / "m2.dcm", x, **kw), NATIVE).display
    m2_inverse = render_dicom(
        make_dicom(tmp_path / "m2i.dcm", x, presentation_lut_shape="INVERSE", **kw), NATIVE
    )
    m1 = render_dicom(make_dicom(tmp_path / "m1.dcm", x, photometric="MONOCHROME1", **kw), NATIVE)
    m1_inverse = render_dicom(
        make_dicom(
            tmp_path / "m1i.dcm", x, photometric="MONOCHROME1", presentation_lut_shape="INVERSE", **kw
        ),
        NATIVE,
    )
    m1_identity = render_dicom(
        make_dicom(
            tmp_path / "m1d.dcm", x, photometric="MONOCHROME1", presentation_lut_shape="IDENTITY", **kw
        ),
        NATIVE,
    )
    assert np.allclose(m2_inverse.display, 1.0 - plain, atol=1e-6)
    assert np.allclose(m1.display, 1.0 - plain, atol=1e-6)
    assert np.allclose(m1_inverse.display, m1.display, atol=1e-6)  # not inverted twice
    assert m1_inverse.metadata["inversion_reason"] == "Presentation LUT Shape INVERSE"
    assert np.allclose(m1_identity.display, plain, atol=1e-6)  # the Presentation LUT Shape rules
    assert any("disagrees" in w for w in m1_identity.metadata["warnings"])
    assert any("disagrees" in w for w in m2_inverse.metadata["warnings"])
    assert np.abs(m2_inverse.display - highdicom_frame(str(tmp_path / "m2i.dcm"))).max() < 1e-6


def test_padding_value_and_range_end_up_black_after_inversion(tmp_path) -> None:
    x = ramp(40, 40, 100, 4000)
    x[:5] = 0  # padding value
    x[-5:] = 4090  # inside a padding range 4090..4095
    kw = dict(bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1")
    single = render_dicom(make_dicom(tmp_path / "p.dcm", x, padding=0, **kw), NATIVE)
    assert np.all(single.display[:5] == 0.0)  # MONOCHROME1: value 0 would be white without the mask
    content = 1.0 - linear_window(x[5:-5], 2048, 4096)
    assert np.abs(single.display[5:-5] - content).max() < 1e-6
    ranged = render_dicom(make_dicom(tmp_path / "r.dcm", x, padding=(4095, 4090), **kw), NATIVE)
    assert np.all(ranged.display[-5:] == 0.0)
    assert ranged.metadata["padding"] == "range 4090..4095"
    # after resize a padded region stays black too (row 0's Lanczos support lies inside the padding)
    y = ramp(80, 80, 100, 4000)
    y[:40] = 0
    small = render_dicom(make_dicom(tmp_path / "p2.dcm", y, padding=0, **kw), RenderOptions(resolution=8))
    assert small.image[0].max() == 0 and small.image[-1].min() > 0


def test_no_window_uses_recorded_percentile_fallback_excluding_padding(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(200, 3000, (60, 50)).astype(np.uint16)
    x[:10] = 4095  # padding: must not stretch the window
    path = make_dicom(tmp_path / "n.dcm", x, bits_stored=12, padding=4095)
    result = render_dicom(path, NATIVE)
    lo, hi = (float(v) for v in np.percentile(x[10:], [0.5, 99.5], method="inverted_cdf"))
    assert result.metadata["window_source"] == "percentile"
    assert result.metadata["fallback"].startswith("percentile")
    assert result.metadata["source_window"] == f"percentile 0.5-99.5: {lo:g}..{hi:g}"
    assert np.abs(result.display[10:] - np.clip((x[10:] - lo) / (hi - lo), 0, 1)).max() < 1e-6
    assert np.all(result.display[:10] == 0)
    forced = render_dicom(
        make_dicom(tmp_path / "f.dcm", x, bits_stored=12, window=(10, 5)),
        RenderOptions(resolution=None, window="percentile"),
    )
    assert forced.metadata["window_source"] == "percentile" and forced.metadata["fallback"] == ""


def test_unused_high_bits_are_ignored(tmp_path) -> None:
    x = ramp(20, 30, 0, 4095)
    clean = render_dicom(
        make_dicom(tmp_path / "c.dcm", x, bits_stored=12, window=(2000, 3000)), RenderOptions(resolution=16)
    )
    junk = (x | np.uint16(0xA000)).astype("<u2").tobytes()  # overlay bits above Bits Stored
    dirty = render_dicom(
        make_dicom(tmp_path / "d.dcm", x, bits_stored=12, window=(2000, 3000), raw_pixel_bytes=junk),
        RenderOptions(resolution=16),
    )
    assert np.array_equal(clean.image, dirty.image)
    s = ramp(20, 30, -2048, 2047, np.int16)
    not_extended = (
        (s.astype(np.int32) & 0x0FFF).astype("<u2").tobytes()
    )  # 12-bit two's complement, no sign extension
    a = render_dicom(make_dicom(tmp_path / "s1.dcm", s, bits_stored=12, window=(0, 4096)), NATIVE)
    b = render_dicom(
        make_dicom(tmp_path / "s2.dcm", s, bits_stored=12, window=(0, 4096), raw_pixel_bytes=not_extended),
        NATIVE,
    )
    assert np.array_equal(a.display, b.display)


def test_unused_high_bits_in_some_strips_only(tmp_path) -> None:
    """The bits are checked strip by strip: junk in a band of rows is cleared there and nowhere else."""
    x = ramp(1200, 64, 0, 4095)
    junk = x.copy()
    junk[700:720] |= np.uint16(0x5000)  # overlay bits in 20 rows, inside one strip of the box stage
    for resolution in (None, 64):
        options = RenderOptions(resolution=resolution)
        clean = render_dicom(make_dicom(tmp_path / "c.dcm", x, bits_stored=12, window=(2000, 3000)), options)
        dirty = render_dicom(
            make_dicom(
                tmp_path / "d.dcm",
                x,
                bits_stored=12,
                window=(2000, 3000),
                raw_pixel_bytes=junk.astype("<u2").tobytes(),
            ),
            options,
        )
        assert np.array_equal(clean.display, dirty.display), resolution


def test_sixteen_bit_output_and_eight_bit_quantisation(tmp_path) -> None:
    x = ramp(64, 32, 0, 65535)
    path = make_dicom(tmp_path / "q.dcm", x, window=(32768, 65536))
    r16 = render_dicom(path, RenderOptions(resolution=32, bits=16))
    r8 = render_dicom(path, RenderOptions(resolution=32, bits=8))
    assert r16.image.dtype == np.uint16 and r8.image.dtype == np.uint8
    assert np.array_equal(r16.image, np.rint(r16.display * 65535).astype(np.uint16))
    assert np.array_equal(r8.image, np.rint(r8.display * 255).astype(np.uint8))
    assert r16.image[:, :8].max() == 0  # padding bars of the portrait film (64 x 32 -> 32 x 16)


def test_window_normalisation_is_not_per_image_min_max(tmp_path) -> None:
    """A film whose values fill only part of the window stays grey: no per-image stretch."""
    x = ramp(16, 16, 1000, 1400)
    result = render_dicom(make_dicom(tmp_path / "g.dcm", x, bits_stored=12, window=(2048, 4096)), NATIVE)
    assert 0.2 < result.display.min() < result.display.max() < 0.4
    assert math.isclose(float(result.display.max()), float(linear_window(1400, 2048, 4096)), abs_tol=1e-6)


def test_opt_in_multiframe_and_colour(tmp_path) -> None:
    frames = np.stack([ramp(8, 8, 0, 255, np.uint8), np.zeros((8, 8), np.uint8)])
    path = make_dicom(tmp_path / "mf.dcm", frames, window=(128, 256))
    result = render_dicom(path, RenderOptions(resolution=None, allow_multiframe=True))
    assert np.abs(result.display - linear_window(frames[0], 128, 256)).max() < 1e-6
    assert any("frame 1 of 2" in w for w in result.metadata["warnings"])
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    colour = render_dicom(
        make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"),
        RenderOptions(resolution=None, allow_colour=True),
    )
    assert np.allclose(colour.display, 0.587, atol=1e-6)


def test_input_dataset_object_is_accepted() -> None:
    ds = pydicom.dcmread(cspine_cr(1))
    from_dataset = render_dicom(ds, RenderOptions(resolution=16))
    assert np.array_equal(from_dataset.image, render_dicom(cspine_cr(1), RenderOptions(resolution=16)).image)


def _window_reference(m: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """LINEAR (PS3.3 C.11.2.1.2.1) or LINEAR_EXACT window of modality values, float64 in [0, 1]."""
    if function == "LINEAR":
        return linear_window(m, center, width)
    return np.clip((np.asarray(m, np.float64) - center) / width + 0.5, 0.0, 1.0)


# (pixels, make_dicom keywords, window function, padding range or None, integer box path expected)
_rng = np.random.default_rng(7)
_noise12 = np.clip(ramp(150, 110, 0, 4095).astype(int) + _rng.integers(-400, 400, (150, 110)), 0, 4095)
_WINDOW_CASES = {
    "12-bit, half-integer edges": (
        _noise12.astype(np.uint16),
        dict(bits_stored=12, window=(2048, 1201)),
        "LINEAR",
        None,
        True,
    ),
    "MONOCHROME1 + padding value": (
        np.where(np.arange(150)[:, None] < 12, 0, _noise12).astype(np.uint16),
        dict(bits_stored=12, window=(1500.25, 900.5), photometric="MONOCHROME1", padding=0),
        "LINEAR",
        (0, 0),
        True,
    ),
    "signed 16-bit, rescale, quarter edges (float path)": (
        ramp(150, 110, -30000, 30000, np.int16) + _rng.integers(-50, 50, (150, 110)).astype(np.int16),
        dict(window=(500, 2001), rescale=(2.0, -100.0)),
        "LINEAR",
        None,
        False,
    ),
    "signed 16-bit, rescale, quarter low edge corrected": (
        ramp(150, 110, -30000, 30000, np.int16) + _rng.integers(-50, 50, (150, 110)).astype(np.int16),
        dict(window=(30000, 120001), voi_function="LINEAR_EXACT", rescale=(2.0, -100.0)),
        "LINEAR_EXACT",
        None,
        True,
    ),
    "LINEAR_EXACT, slope 0.7, padding range (float path)": (
        np.where(np.arange(110)[None, :] > 100, 4093, _noise12).astype(np.uint16),
        dict(
            bits_stored=12,
            window=(1000.3, 700.6),
            voi_function="LINEAR_EXACT",
            rescale=(0.7, 5.0),
            padding=(4090, 4095),
        ),
        "LINEAR_EXACT",
        (4090, 4095),
        False,
    ),
    "LINEAR_EXACT, slope 0.7, fractional low edge corrected, padding range": (
        np.where(np.arange(110)[None, :] > 100, 4093, _noise12).astype(np.uint16),
        dict(
            bits_stored=12,
            window=(3000.3, 4000.6),
            voi_function="LINEAR_EXACT",
            rescale=(0.7, 5.0),
            padding=(4090, 4095),
        ),
        "LINEAR_EXACT",
        (4090, 4095),
        True,
    ),
    "16-bit full range, 32-bit sums": (
        ramp(150, 110, 0, 65535),
        dict(window=(30000, 40000)),
        "LINEAR",
        None,
        True,
    ),
    "8-bit": (ramp(150, 110, 0, 255).astype(np.uint8), dict(window=(100, 51)), "LINEAR", None, True),
    "signed 12-bit, negative padding, MONOCHROME1": (
        np.where(np.arange(150)[:, None] > 140, -2048, _noise12 - 2048).astype(np.int16),
        dict(bits_stored=12, window=(-100.5, 1500), padding=-2048, photometric="MONOCHROME1"),
        "LINEAR",
        (-2048, -2048),
        True,
    ),
    "window wider than the stored range, padding (float path)": (
        np.where(np.arange(150)[:, None] < 12, 0, _noise12).astype(np.uint16),
        dict(bits_stored=12, window=(2048, 10001), padding=0),
        "LINEAR",
        (0, 0),
        False,
    ),
}


@pytest.mark.parametrize("case", list(_WINDOW_CASES))
def test_integer_window_path_matches_full_resolution_float_reference(case, tmp_path, monkeypatch) -> None:
    """The exact integer clip + box-sum path equals the float64 window at full resolution, then resized."""
    from data_processing import render as render_module

    x, kw, function, padding, integer_expected = _WINDOW_CASES[case]
    used: list = []
    real = render_module._integer_window
    monkeypatch.setattr(render_module, "_integer_window", lambda *a: used.append(real(*a)) or used[-1])
    path = make_dicom(tmp_path / "w.dcm", x, **kw)
    slope, intercept = kw.get("rescale", (1.0, 0.0))
    center, width = kw["window"]
    expected = _window_reference(slope * x.astype(np.float64) + intercept, center, width, function)
    if kw.get("photometric") == "MONOCHROME1":
        expected = 1.0 - expected
    if padding is not None:
        expected[(x >= padding[0]) & (x <= padding[1])] = 0.0
    for resolution, crop in ((None, "pad"), (32, "pad"), (16, "pad"), (8, "pad"), (16, "center")):
        result = render_dicom(path, RenderOptions(resolution=resolution, crop=crop))  # type: ignore[arg-type]
        reference = expected if resolution is None else resized_reference(expected, resolution, crop)
        assert np.abs(result.display - reference).max() < 2e-5, (case, resolution, crop)
        if padding is not None and resolution is None:
            assert np.all(result.display[(x >= padding[0]) & (x <= padding[1])] == 0.0)
    assert used and all((u is not None) == integer_expected for u in used), case


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib"])
def test_png_deflate_backends_round_trip(isal: bool, tmp_path, monkeypatch) -> None:
    """PNGs decode to the same pixels whichever deflate backend (ISA-L or zlib, Z_RLE at level 1) wrote them."""
    import io

    from PIL import Image

    from data_processing import pngio

    if isal and pngio._isal_zlib is None:
        pytest.skip("the optional isal package is not installed")
    if not isal:
        monkeypatch.setattr(pngio, "_isal_zlib", None)
    rng = np.random.default_rng(5)
    for image in (rng.integers(0, 256, (33, 40)).astype(np.uint8), ramp(40, 33, 0, 65535)):
        image[:5] = 0  # a black padding bar (long runs)
        for level in (1, 6):
            data = pngio.encode_png(image, level)
            with Image.open(io.BytesIO(data)) as im:
                assert np.array_equal(np.asarray(im).astype(image.dtype), image), (image.dtype, level)
    assert pngio.deflate_backend(1) == ("isal" if isal else "zlib (Z_RLE)")
