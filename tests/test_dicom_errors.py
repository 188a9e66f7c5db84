"""Every case of the bad-input table gets a specific error naming the file and the problem."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pydicom
import pytest
from dicom_helpers import REPO_ROOT, dicom_file, make_dicom, ramp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_processing import errors as E
from data_processing.decoders import decoder_status, format_decoder_report, install_hint
from data_processing.render import RenderOptions, render_dicom


def expect(error: type[E.DicomInputError], path: str, *phrases: str, **options) -> E.DicomInputError:
    with pytest.raises(error) as info:
        render_dicom(path, RenderOptions(**options))
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message  # names the file
    for phrase in phrases:
        assert phrase in message, message
    assert info.value.code and info.value.code != E.DicomInputError.code
    return info.value


def test_not_dicom(tmp_path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("hello, I am not an image")
    expect(E.NotDicomError, str(text), "not a DICOM file")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    expect(E.NotDicomError, str(empty), "0 bytes")


@pytest.mark.parametrize("name, kind", [("rtplan.dcm", "RT Plan Storage"), ("test-SR.dcm", "SR Storage")])
def test_no_pixel_data(name: str, kind: str) -> None:
    expect(E.NoPixelDataError, dicom_file(name), "no pixel data", kind)


def test_dicomdir_has_no_pixel_data() -> None:
    path = os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "DICOMDIR")
    expect(E.NoPixelDataError, path, "Media Storage Directory")


def test_missing_transfer_syntax() -> None:
    expect(
        E.MissingTransferSyntaxError,
        dicom_file("meta_missing_tsyntax.dcm"),
        "Transfer Syntax UID (0002,0010)",
    )


def test_bare_data_set_without_part10_header(tmp_path) -> None:
    ds = pydicom.dcmread(make_dicom(tmp_path / "a.dcm", ramp(8, 8, 0, 100)))
    del ds.file_meta
    ds.preamble = None
    bare = str(tmp_path / "bare.dcm")
    ds.save_as(bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    expect(E.MissingTransferSyntaxError, bare, "without the Part 10 header")


def test_missing_pixel_tags() -> None:
    expect(
        E.MissingPixelTagsError,
        dicom_file("nested_priv_SQ.dcm"),
        "(0028,0010) Rows",
        "(0028,0100) Bits Allocated",
    )


def test_invalid_tag_value() -> None:
    expect(E.InvalidTagValueError, dicom_file("badVR.dcm"), "(0028,0008) Number of Frames", "'1A'")


def test_missing_codec_names_the_package_to_install() -> None:
    """Without a usable JPEG 2000 decoder (pylibjpeg's plugin removed; Pillow is not used) -> pip hint."""
    script = textwrap.dedent(
        """
        from pydicom.pixels import get_decoder
        from pydicom.uid import JPEG2000Lossless
        get_decoder(JPEG2000Lossless).remove_plugin("pylibjpeg")  # as if pylibjpeg-openjpeg were missing
        from pydicom.data import get_testdata_file
        from data_processing.decoders import format_decoder_report, format_decoder_summary
        from data_processing.errors import MissingCodecError
        from data_processing.render import render_dicom
        print(format_decoder_report())
        print(format_decoder_summary())
        try:
            render_dicom(get_testdata_file("MR_small_jp2klossless.dcm", download=False))
        except MissingCodecError as exc:
            print("ERROR", exc.code, exc.transfer_syntax, "|", exc.package, "|", exc)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(
        line.startswith("  MISSING  JPEG 2000 Image Compression (Lossless Only)")
        and line.endswith("pip install pylibjpeg pylibjpeg-openjpeg")
        for line in lines
    ), out.stdout
    summary = [line for line in lines if line.startswith("DICOM decoders:")]
    assert summary and "(Lossless Only) MISSING (pip install pylibjpeg pylibjpeg-openjpeg)" in summary[0]
    error = [line for line in lines if line.startswith("ERROR")]
    assert (
        error
        and "missing-codec 1.2.840.10008.1.2.4.90 | pip install pylibjpeg pylibjpeg-openjpeg |" in error[0]
    )
    assert "MR_small_jp2klossless.dcm: no decoder installed" in error[0]


def test_decoder_check_lists_every_encoding() -> None:
    statuses = {s.uid: s for s in decoder_status()}
    assert statuses["1.2.840.10008.1.2.1"].available  # uncompressed needs nothing
    assert statuses["1.2.840.10008.1.2.4.90"].install == "pip install pylibjpeg pylibjpeg-openjpeg"
    assert install_hint("1.2.840.10008.1.2.4.57") == "pip install pylibjpeg pylibjpeg-libjpeg"
    assert all("pillow" not in s.plugins for s in statuses.values())
    report = format_decoder_report()
    assert "JPEG 2000 Image Compression (Lossless Only)" in report and "JPEG-LS Lossless" in report
    out = subprocess.run(
        [sys.executable, "-m", "data_processing", "decoders"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert out.returncode == 0 and "RLE Lossless" in out.stdout


@pytest.mark.parametrize("name", ["JPEG2000-embedded-sequence-delimiter.dcm", "JPEG-lossy.dcm"])
def test_corrupt_codestream(name: str) -> None:
    expect(E.CorruptPixelDataError, dicom_file(name), "corrupt")


def test_truncated_pixel_data(tmp_path) -> None:
    expect(E.TruncatedPixelDataError, dicom_file("MR_truncated.dcm"), "truncated", "8130 vs 8192")
    expect(E.TruncatedPixelDataError, dicom_file("emri_small_jpeg_2k_lossless_too_short.dcm"), "truncated")
    data = open(dicom_file("CT_small.dcm"), "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-5000])  # an interrupted copy
    expect(E.TruncatedPixelDataError, str(cut), "truncated")
    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00OW")])  # cut just before (7FE0,0010)
    expect(E.NoPixelDataError, str(header_only), "probably truncated")
    header_only.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00OW") + 100])  # cut inside the pixel data
    expect(E.TruncatedPixelDataError, str(header_only), "truncated")


def test_colour_images_unless_opted_in() -> None:
    expect(E.ColourImageError, dicom_file("SC_rgb.dcm"), "colour image (RGB", "--allow-colour")
    expect(E.ColourImageError, dicom_file("SC_ybr_full_uncompressed.dcm"), "YBR_FULL")
    result = render_dicom(dicom_file("SC_rgb.dcm"), RenderOptions(resolution=32, allow_colour=True))
    assert result.image.shape == (32, 32) and result.metadata["window_source"] == "colour"


def test_multi_frame_unless_opted_in() -> None:
    expect(E.MultiFrameError, dicom_file("emri_small.dcm"), "10 frames", "--allow-multiframe")
    result = render_dicom(dicom_file("emri_small.dcm"), RenderOptions(resolution=32, allow_multiframe=True))
    assert "frame 1 of 10" in result.metadata["warnings"][0]


def test_unsupported_bit_depths(tmp_path) -> None:
    expect(E.UnsupportedBitDepthError, dicom_file("liver.dcm"), "1-bit", "bitmap")
    expect(
        E.UnsupportedBitDepthError, make_dicom(tmp_path / "u32.dcm", ramp(8, 8, 0, 100, np.uint32)), "32-bit"
    )


def test_for_processing_unless_opted_in(tmp_path) -> None:
    path = make_dicom(
        tmp_path / "raw.dcm",
        ramp(8, 8, 0, 100),
        window=(50, 100),
        extra={"PresentationIntentType": "FOR PROCESSING"},
    )
    expect(E.ForProcessingError, path, "FOR PROCESSING", "--allow-for-processing")
    result = render_dicom(path, RenderOptions(resolution=8, allow_for_processing=True))
    assert any("FOR PROCESSING" in w for w in result.metadata["warnings"])


def test_invalid_windows(tmp_path) -> None:
    x = ramp(8, 8, 0, 100)
    expect(
        E.InvalidWindowError,
        make_dicom(tmp_path / "w0.dcm", x, window=(50, 0)),
        "Window Width (0028,1051) is 0",
    )
    expect(
        E.InvalidWindowError, make_dicom(tmp_path / "f.dcm", x, window=(50, 100), voi_function="FOO"), "'FOO'"
    )
    expect(E.InvalidWindowError, make_dicom(tmp_path / "c.dcm", x, extra={"WindowCenter": 50}), "only one of")
    expect(
        E.InvalidWindowError,
        make_dicom(tmp_path / "out.dcm", x, window=(5000, 100)),
        "outside the window",
        "0..100",
    )
    path = make_dicom(tmp_path / "text.dcm", x, window=(50, 999))
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\x28\x00\x51\x10DS") + 8  # the (0028,1051) Window Width value, explicit VR LE
    length = int.from_bytes(data[at - 2 : at], "little")
    data[at : at + length] = b"abc".ljust(length)  # a non-numeric DS value
    open(path, "wb").write(bytes(data))
    expect(E.InvalidWindowError, path, "(0028,1051) Window Width has the invalid value")


def test_invalid_modality_lut_and_presentation_lut(tmp_path) -> None:
    x = ramp(8, 8, 0, 100)
    expect(E.InvalidModalityLUTError, make_dicom(tmp_path / "s.dcm", x, rescale=(0, 1)), "Rescale Slope")
    expect(
        E.UnsupportedPresentationLUTError,
        make_dicom(tmp_path / "p.dcm", x, window=(50, 100), presentation_lut_shape="FOO"),
        "'FOO'",
    )


def test_constant_image(tmp_path) -> None:
    flat = np.full((8, 8), 7, np.uint16)
    expect(
        E.ConstantImageError, make_dicom(tmp_path / "a.dcm", flat, window=(50, 100)), "same stored value 7"
    )
    expect(
        E.ConstantImageError, make_dicom(tmp_path / "b.dcm", flat), "same stored value 7"
    )  # percentile path
    padded = ramp(8, 8, 0, 0)
    expect(E.ConstantImageError, make_dicom(tmp_path / "c.dcm", padded, padding=0), "every pixel is padding")


def test_lossy_source_is_a_warning_not_an_error() -> None:
    result = render_dicom(dicom_file("JPGExtended.dcm"), RenderOptions(resolution=32))
    assert result.metadata["lossy"] is True
    assert any("lossy-compressed source (JPEG Extended" in w for w in result.metadata["warnings"])


def test_exception_hierarchy_groups_the_problems() -> None:
    assert issubclass(E.TruncatedPixelDataError, E.CorruptPixelDataError)
    assert issubclass(E.MissingCodecError, E.DecodeError)
    assert issubclass(E.ColourImageError, E.UnsupportedImageError)
    assert issubclass(E.ConstantImageError, E.RenderingError)
    assert issubclass(E.DicomInputError, ValueError)
    codes = [
        cls.code for cls in vars(E).values() if isinstance(cls, type) and issubclass(cls, E.DicomInputError)
    ]
    assert len(codes) == len(set(codes))


# --------------------------------------------------------------------------------------------------
# Absurd header values: a rendering or a clear error, never an internal error or an exhausted machine


def test_absurd_image_sizes_are_refused_before_decoding(tmp_path) -> None:
    from pydicom.uid import RLELossless

    base = make_dicom(tmp_path / "base.dcm", ramp(16, 16, 0, 4095), bits_stored=12, window=(2048, 4096))
    ds = pydicom.dcmread(base)
    ds.compress(RLELossless)  # a decoder would allocate what the header claims
    for rows, columns, vr, error, phrase in (
        (
            65535,
            65535,
            "US",
            E.ImageTooLargeError,
            "65535 x 65535 pixels per frame (4295 megapixels, 8.0 GiB",
        ),
        (2**20, 16, "UL", E.InvalidTagValueError, "(0028,0010) Rows is 1048576, expected 1 to 65535"),
        (16, 2**20, "UL", E.InvalidTagValueError, "(0028,0011) Columns is 1048576, expected 1 to 65535"),
    ):
        del ds.Rows, ds.Columns
        ds.add_new(0x00280010, vr, rows)
        ds.add_new(0x00280011, vr, columns)
        path = str(tmp_path / f"{rows}x{columns}.dcm")
        ds.save_as(path)
        expect(error, path, phrase, resolution=16)


def test_absurd_rescale_and_window_values_give_clear_errors(tmp_path) -> None:
    x = ramp(8, 8, 0, 4095)
    expect(
        E.InvalidModalityLUTError,
        make_dicom(tmp_path / "r.dcm", x, bits_stored=12, rescale=(1e308, 1e308)),
        "beyond the floating-point range",
    )  # once an internal ZeroDivisionError
    expect(
        E.InvalidWindowError,
        make_dicom(tmp_path / "w.dcm", x, bits_stored=12, window=(2048, 1e308)),
        "maps every pixel to one grey level",
    )  # once a NaN image written as if fine
    narrow = render_dicom(
        make_dicom(tmp_path / "n.dcm", x, bits_stored=12, window=(2000, 1e-300), voi_function="LINEAR_EXACT"),
        RenderOptions(resolution=None),
    )  # a window narrower than float32 resolves: a threshold at the centre
    assert np.array_equal(narrow.display, (x > 2000).astype(np.float32))


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory) -> pydicom.Dataset:
    path = make_dicom(tmp_path_factory.mktemp("hdr") / "base.dcm", ramp(12, 10, 0, 4095), bits_stored=12)
    return pydicom.dcmread(path)


def _ds_number(value: float) -> str:
    return f"{value:.6g}"  # a valid DS string (at most 16 characters)


_magnitudes = st.sampled_from(
    [1e-320, 1e-300, 1e-40, 1e-7, 1e-3, 0.7, 1.0, 3.0, 1e3, 4095.5, 1e7, 1e38, 1e300, 1e308]
)
_numbers = st.tuples(_magnitudes, st.floats(-1.0, 1.0)).map(lambda t: t[0] * t[1] if t[1] else t[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    window=st.none() | st.tuples(_numbers, _numbers),
    function=st.sampled_from([None, "LINEAR", "LINEAR_EXACT", "SIGMOID"]),
    rescale=st.none() | st.tuples(_numbers, _numbers),
    mode=st.sampled_from(["auto", "percentile"]),
    resolution=st.sampled_from([None, 8]),
    monochrome1=st.booleans(),
)
def test_any_header_numbers_give_a_finite_image_or_a_dicom_input_error(
    base_dataset, window, function, rescale, mode, resolution, monochrome1
) -> None:
    import copy
    import warnings

    ds = copy.deepcopy(base_dataset)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = _ds_number(window[0]), _ds_number(window[1])
    if function is not None:
        ds.VOILUTFunction = function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(rescale[0]), _ds_number(rescale[1])
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow/invalid-value chatter either
        try:
            result = render_dicom(ds, RenderOptions(resolution=resolution, window=mode))
        except E.DicomInputError as exc:
            assert exc.code not in ("dicom-input", "rendering") and str(exc).startswith(base_dataset.filename)
            return
    assert np.all(np.isfinite(result.display)) and result.display.min() >= 0.0 and result.display.max() <= 1.0
