"""Phantom films -> DICOM data sets, in the encodings real radiography devices use.

A film (:class:`data_processing.phantom_anatomy.Film`) is a float32 display image in [0, 1] (0
black, bone bright). :func:`encode_film` stores it with a :class:`Device` profile:

* **stored values**: the image is mapped linearly onto the integers ``used`` of the Bits Stored range
  (``[0, 2**bits - 1]`` unsigned, ``[-2**(bits-1), 2**(bits-1) - 1]`` signed, two's complement in 16
  bits allocated), rising with brightness for MONOCHROME2 and falling for MONOCHROME1, so the
  MONOCHROME1 encoding of a film is the exact mirror of its MONOCHROME2 encoding;
* **Modality LUT**: Rescale Slope/Intercept when the profile has one (all signed profiles do);
* **VOI**: a LINEAR Window Center/Width in modality units, chosen so that the display range
  ``window`` of the film maps onto black..white (``c = (a + b)/2 + 0.5``, ``w = b - a + 1`` for the
  modality values ``a < b`` of the two display ends); profiles without a window leave the viewer (and
  our converter's percentile fallback) to choose;
* **SOP class**: CR Image Storage, or Digital X-Ray Image Storage - For Presentation with its
  Presentation LUT Shape (IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1);
* **transfer syntax**: Explicit or Implicit VR Little Endian, RLE Lossless or JPEG 2000 Lossless
  (pydicom's encoders; JPEG 2000 through pylibjpeg-openjpeg).

Everything in the data set is derived from the arguments: the same film, profile and
:class:`Identity` give byte-identical files (with the same pydicom and encoder versions).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

__all__ = ["CR_STORAGE", "DEVICES", "DX_STORAGE", "Device", "Identity", "encode_film", "dicom_bytes"]

CR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")  # Computed Radiography Image Storage
DX_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation
FIELD_HEIGHT_MM = 430.0  # a 35 x 43 cm cassette, portrait


@dataclass(frozen=True)
class Device:
    """How one (imaginary) device stores its films. ``used``: the part of the Bits Stored range the
    image occupies (fractions); ``rescale``: (slope, intercept) or None (no Modality LUT tags)."""

    name: str
    modality: str  # "CR" or "DX"
    photometric: str  # "MONOCHROME1" or "MONOCHROME2"
    bits_stored: int
    signed: bool
    rescale: tuple[float, float] | None
    window: bool
    transfer_syntax: UID
    rows: int
    cols: int
    used: tuple[float, float] = (0.04, 0.92)
    weight: float = 0.1  # how often a study is taken on this device

    @property
    def sop_class(self) -> UID:
        return CR_STORAGE if self.modality == "CR" else DX_STORAGE


#: The devices of the phantom hospital network: every photometric interpretation, bit depth (10, 12,
#: 14, 16; unsigned and signed), transfer syntax and a few sizes (portrait and landscape).
DEVICES: tuple[Device, ...] = (
    Device("CR-A", "CR", "MONOCHROME1", 10, False, None, True, ExplicitVRLittleEndian, 640, 512, weight=0.15),
    Device("CR-B", "CR", "MONOCHROME1", 12, False, (1.0, 0.0), True, JPEG2000Lossless, 600, 480, weight=0.10),
    Device("CR-C", "CR", "MONOCHROME1", 12, False, None, False, RLELossless, 576, 448, (0.1, 0.8), 0.08),
    Device(
        "CR-D",
        "CR",
        "MONOCHROME2",
        16,
        True,
        (1.0, 32768.0),
        True,
        ImplicitVRLittleEndian,
        512,
        416,
        weight=0.12,
    ),
    Device("CR-E", "CR", "MONOCHROME1", 14, True, (0.5, 4096.0), True, RLELossless, 480, 600, weight=0.07),
    Device("DX-A", "DX", "MONOCHROME2", 14, False, None, True, ExplicitVRLittleEndian, 704, 544, weight=0.14),
    Device("DX-B", "DX", "MONOCHROME1", 16, False, None, True, JPEG2000Lossless, 512, 416, (0.02, 0.7), 0.07),
    Device(
        "DX-C",
        "DX",
        "MONOCHROME2",
        12,
        True,
        (2.0, 4096.0),
        False,
        ExplicitVRLittleEndian,
        600,
        480,
        weight=0.09,
    ),
    Device("DX-D", "DX", "MONOCHROME2", 10, False, (1.0, -512.0), True, RLELossless, 640, 512, weight=0.13),
    Device(
        "DX-E", "DX", "MONOCHROME1", 12, True, (1.0, 2048.0), True, JPEG2000Lossless, 448, 560, weight=0.05
    ),
)


@dataclass(frozen=True)
class Identity:
    """Who and what a film is: patient, study, series and instance (all strings as DICOM stores them)."""

    patient_id: str
    patient_name: str
    patient_sex: str  # "F" / "M"
    birth_date: str  # YYYYMMDD
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    accession: str
    study_id: str
    series_number: int
    instance_number: int
    facing_right: bool  # anterior on the right of the image (Patient Orientation)


def _stored_range(device: Device) -> tuple[int, int]:
    """The integers the image occupies: (value of display 0, value of display 1) before the photometric flip."""
    low = -(2 ** (device.bits_stored - 1)) if device.signed else 0
    span = 2**device.bits_stored - 1
    return low + round(device.used[0] * span), low + round(device.used[1] * span)


def _stored(image: np.ndarray, device: Device) -> np.ndarray:
    """Display image [rows, cols] in [0, 1] -> stored integers (uint16 / int16), MONOCHROME1 mirrored."""
    lo, hi = _stored_range(device)
    values = np.rint(lo + np.clip(image, 0, 1).astype(np.float64) * (hi - lo)).astype(np.int32)
    if device.photometric == "MONOCHROME1":
        values = lo + hi - values  # exact mirror: display 0 (black) is the highest stored value
    return values.astype(np.int16 if device.signed else np.uint16)


def _ds_text(value: float) -> str:
    """A Decimal String of at most 16 characters (two decimals, trailing zeros dropped)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _window(device: Device, window: tuple[float, float]) -> tuple[str, str]:
    """Window Center/Width (LINEAR, modality units) that maps display ``window`` (lo, hi) onto 0..1."""
    lo, hi = _stored_range(device)
    ends = []
    for d in window:
        stored = lo + d * (hi - lo)
        if device.photometric == "MONOCHROME1":
            stored = lo + hi - stored
        slope, intercept = device.rescale or (1.0, 0.0)
        ends.append(slope * stored + intercept)
    a, b = sorted(ends)
    return _ds_text((a + b) / 2 + 0.5), _ds_text(b - a + 1)


def encode_film(
    image: np.ndarray, device: Device, identity: Identity, window: tuple[float, float] | None
) -> Dataset:
    """A complete DICOM data set (with file meta) holding ``image`` [rows, cols] as ``device`` stores it.

    ``window`` is the display range (lo, hi) in [0, 1] to record as Window Center/Width; it is ignored
    for devices without windows. ``image`` must have the device's size.
    """
    if image.shape != (device.rows, device.cols):
        raise ValueError(f"image is {image.shape}, device {device.name} stores {(device.rows, device.cols)}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = device.sop_class
    meta.MediaStorageSOPInstanceUID = identity.sop_uid
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if device.transfer_syntax == ImplicitVRLittleEndian else ExplicitVRLittleEndian
    )
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = device.sop_class
    ds.SOPInstanceUID = identity.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = identity.study_time
    ds.AccessionNumber = identity.accession
    ds.Modality = device.modality
    ds.Manufacturer = "Phantom"
    ds.InstitutionName = "Synthetic phantom cohort"
    ds.StationName = device.name
    ds.StudyDescription = "XR LUMBAR SPINE LATERAL"
    ds.SeriesDescription = "Lateral lumbar spine (synthetic phantom)"
    ds.ManufacturerModelName = "phantom " + device.name
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "LL"
    if device.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber = identity.series_number
    ds.InstanceNumber = identity.instance_number
    ds.PatientOrientation = ["A" if identity.facing_right else "P", "F"]
    ds.ImageComments = "Synthetic phantom: not a patient image"
    spacing = _ds_text(FIELD_HEIGHT_MM / max(device.rows, device.cols))
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = device.photometric
    ds.Rows, ds.Columns = device.rows, device.cols
    ds.BitsAllocated = 16
    ds.BitsStored = device.bits_stored
    ds.HighBit = device.bits_stored - 1
    ds.PixelRepresentation = int(device.signed)
    ds.BurnedInAnnotation = "NO"
    if device.rescale is not None:
        ds.RescaleIntercept = _ds_text(device.rescale[1])
        ds.RescaleSlope = _ds_text(device.rescale[0])
        ds.RescaleType = "US"
    if device.window and window is not None:
        ds.WindowCenter, ds.WindowWidth = _window(device, window)
    if device.modality == "DX":
        ds.PresentationLUTShape = "INVERSE" if device.photometric == "MONOCHROME1" else "IDENTITY"
    pixels = _stored(image, device)
    ds.PixelData = pixels.tobytes()
    if device.transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(device.transfer_syntax, pixels, generate_instance_uid=False)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The Part 10 file of ``ds`` (preamble, 'DICM', file meta, data set)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
