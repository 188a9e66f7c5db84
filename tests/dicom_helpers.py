"""Helpers for the DICOM tests: write small DICOM files with pydicom, find bundled test files, hash folders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
REPO_ROOT = Path(__file__).resolve().parents[1]


def dicom_file(name: str) -> str:
    """Path of a pydicom / pydicom-data test file (never downloads); skip the test when absent."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed (pydicom-data is a test dependency)")
    return str(path)


def cspine_cr(n: int) -> str:
    """pydicom's bundled real C-spine CR films CR1..CR3 (MONOCHROME1, 16 x 16)."""
    base = Path(dicom_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033"
    found = sorted((base / f"CR{n}").glob("*"))
    if not found:
        pytest.skip(f"pydicom's dicomdirtests CR{n} file is missing")
    return str(found[0])


def make_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | tuple[Sequence[float], Sequence[float]] | None = None,
    voi_function: str | None = None,
    rescale: tuple[float, float] | None = None,
    presentation_lut_shape: str | None = None,
    padding: int | tuple[int, int] | None = None,
    voi_lut: tuple[int, int, Sequence[int]] | None = None,
    raw_pixel_bytes: bytes | None = None,
    extra: dict[str, Any] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> str:
    """Write a single-frame (or [F, H, W] multi-frame, or [H, W, 3] RGB) DICOM file; return its path.

    ``pixels`` dtype gives Bits Allocated (uint8 -> 8, uint16/int16 -> 16) and Pixel Representation.
    ``voi_lut`` = (first mapped value, bits per entry, LUT data). ``extra`` sets more keywords.
    """
    path = str(path)
    pixels = np.asarray(pixels)
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3 and photometric not in ("MONOCHROME1", "MONOCHROME2")
    frames = pixels.shape[0] if (pixels.ndim == 3 and not colour) else 1
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = transfer_syntax
    fm.MediaStorageSOPClassUID = CR_SOP_CLASS
    fm.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = CR_SOP_CLASS
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "TEST"
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if presentation_lut_shape is not None:
        ds.PresentationLUTShape = presentation_lut_shape
    if padding is not None:
        vr = "SS" if ds.PixelRepresentation == 1 else "US"
        value, limit = (padding, None) if isinstance(padding, int) else padding
        ds.add_new(0x00280120, vr, value)  # Pixel Padding Value
        if limit is not None:
            ds.add_new(0x00280121, vr, limit)  # Pixel Padding Range Limit
    if voi_lut is not None:
        first, bits, data = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(data) % 65536, first, bits])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(v) for v in data])  # LUT Data
        item.LUTExplanation = "test VOI LUT"
        ds.VOILUTSequence = DicomSequence([item])
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = raw_pixel_bytes if raw_pixel_bytes is not None else np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def tree_hashes(folder: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (to prove inputs are untouched)."""
    result = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as fh:
                result[os.path.relpath(full, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return result


def ramp(height: int, width: int, lo: int, hi: int, dtype: Any = np.uint16) -> np.ndarray:
    """A deterministic ramp image [H, W] from lo to hi (inclusive), row-major."""
    values = np.linspace(lo, hi, height * width)
    return np.round(values).astype(dtype).reshape(height, width)


def crash_on_named_crash(task):
    """A conversion task function for the worker-crash test: kills its process for files named *crash*."""
    if "crash" in os.path.basename(task[0]):
        os._exit(3)
    from data_processing.convert import render_task

    return render_task(task)
